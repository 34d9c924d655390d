"""What `atrous bench` times on one problem: every implementation's call, built on one set
of inputs, grouped by the library whose threads run it (a *family*: each family is timed in
its own worker process, see ``atrous.jobs.isolation``).

- "atrous": the tuned config and the heuristic default through the backend's launcher on
  prepared inputs (the tuner's timed call), and for convolutions the two calls a user
  writes: the plain call ``atrous.dilated_conv2d(x, w, ...)`` and the prepared one
  ``atrous.prepare_conv(w, ...)(x)``.
- "torch", "onnxruntime", "openvino": the baselines of ``atrous.jobs.baselines``.
- "numpy": the float64 NumPy reference.

Every call that returns its output (the user-level atrous calls and the baselines) is
checked once against the float64 reference at the project's tolerance before it is timed:
a wrong result is a row with a note, never a time.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from atrous.autotune.timing import Plan, Sampler
from atrous.core.op import Problem
from atrous.core.registry import op
from atrous.jobs.baselines import (
    Unavailable,
    onnx_session,
    openvino_call,
    openvino_compiled,
    torch_op,
)

#: Worker families, in the order a bench run times them (and its rows list them).
FAMILIES = ("atrous", "torch", "onnxruntime", "openvino", "numpy")
#: Output channels of a convolution's reference check (its cost is a sliver of the call's).
CHECK_CHANNELS = 8


@dataclass
class Candidate:
    """One implementation to time on a problem: ``make`` builds its call on one set of
    inputs (cycled through for cold-cache timing); ``skip`` says why it cannot run.

    ``user_call``: the call returns its output, which is checked against the reference
    before timing. ``config``/``config_source``: what an atrous call runs.
    """

    implementation: str
    backend: str
    family: str
    make: Callable[[Mapping[str, Any]], Callable[[], Any]] | None = None
    config: dict[str, Any] = field(default_factory=dict)
    config_source: str = ""
    sampler: Sampler | None = None
    plan: Plan | None = None
    skip: str = ""
    same_as: str = ""  # time nothing: copy the timing of this implementation
    user_call: bool = False
    torch_inputs: bool = False  # takes the backend's kind of inputs (tensors on a GPU)


def api_options(problem: Problem) -> dict[str, Any]:
    """``dilated_conv2d``'s keyword arguments for a ConvProblem (``padding`` as a pair, or
    "same" for an asymmetric "same" padding). Raises Unavailable for other padding."""
    top, bottom, left, right = problem.padding
    if (top, left) == (bottom, right):
        padding: Any = (top, left)
    elif problem.stride == (1, 1) and all(
            (a, b) == (d * (k - 1) // 2, d * (k - 1) - d * (k - 1) // 2)
            for a, b, d, k in ((top, bottom, problem.dilation[0], problem.kh),
                               (left, right, problem.dilation[1], problem.kw))):
        padding = "same"
    else:
        raise Unavailable(f"padding {problem.padding} is neither symmetric nor 'same'")
    return {"stride": problem.stride, "padding": padding, "dilation": problem.dilation,
            "groups": problem.groups, "activation": problem.activation,
            "layout": problem.layout, "allow_tf32": problem.allow_tf32}


def _copy(a: Any) -> Any:
    return None if a is None else (a.copy() if isinstance(a, np.ndarray) else a.clone())


def plain_call(problem: Problem) -> Callable[[Mapping[str, Any]], Callable[[], Any]]:
    """``atrous.dilated_conv2d(x, w, b, ...)`` as a user writes it, on weights of its own
    (a new array: no cache may have seen it), output allocated by each call."""
    import atrous

    options = api_options(problem)

    def make(inputs: Mapping[str, Any]) -> Callable[[], Any]:
        x, w, b = inputs["x"], _copy(inputs["weight"]), _copy(inputs["bias"])
        return lambda: atrous.dilated_conv2d(x, w, b, **options)

    return make


def prepared_call(problem: Problem) -> Callable[[Mapping[str, Any]], Callable[[], Any]]:
    """``atrous.prepare_conv(w, b, ...)`` once, then ``conv(x)`` per call."""
    import atrous

    options = api_options(problem)

    def make(inputs: Mapping[str, Any]) -> Callable[[], Any]:
        conv, x = atrous.prepare_conv(inputs["weight"], inputs["bias"], **options), inputs["x"]
        return lambda: conv(x)

    return make


def user_config(problem: Problem, inputs: Mapping[str, Any]) -> tuple[dict[str, Any], str]:
    """The config (and its source) the public call runs, as ``atrous.explain`` says."""
    import atrous

    e = atrous.explain(problem.op, *(inputs[n] for n in op(problem.op).inputs),
                       **api_options(problem))
    return dict(e.config), e.source


def _onnx_maker(problem: Problem) -> Callable[[Mapping[str, Any]], Callable[[], Any]]:
    """ONNX Runtime calls on several input sets sharing one session (building a session
    per rotated input set would cost more than the benchmark)."""
    sessions: list[Any] = []

    def make(inputs: Mapping[str, Any]) -> Callable[[], Any]:
        if not sessions:
            sessions.append(onnx_session(problem, inputs))
        session, feed = sessions[0], {"x": inputs["x"]}
        return lambda: session.run(None, feed)[0]

    return make


def _openvino_maker(problem: Problem) -> Callable[[Mapping[str, Any]], Callable[[], Any]]:
    """OpenVINO infer requests on several input sets sharing one compiled model."""
    compiled: list[Any] = []

    def make(inputs: Mapping[str, Any]) -> Callable[[], Any]:
        if not compiled:
            compiled.append(openvino_compiled(problem, inputs))
        return openvino_call(compiled[0], inputs["x"])

    return make


def candidates(problem: Problem, settings: Any, family: str, *, tuned: Any = None,
               atrous_sampler: Sampler | None = None,
               cpu_sampler: Sampler | None = None) -> list[Candidate]:
    """The implementations of ``family`` to time on ``problem``, the unavailable ones with
    a reason.

    Args:
        settings: the bench's ``Settings``.
        tuned: the lookup's Choice for this machine (family "atrous" only).
        atrous_sampler: the tuner's sampler for the backend (CUDA events on a GPU).
        cpu_sampler: the wall-clock sampler, under the same cache policy, for CPU work.
    """
    backend, gpu = settings.backend, settings.device.startswith("cuda")
    name = f"atrous-{backend}"
    if family == "atrous":
        default = op(problem.op).default_config(problem, backend)
        out = [Candidate(name, backend, family, config=dict(tuned.config),
                         config_source=tuned.source, sampler=atrous_sampler),
               Candidate(f"{name}-default", backend, family, config=default,
                         config_source="default", sampler=atrous_sampler,
                         same_as=name if dict(tuned.config) == default else "")]
        if problem.op == "dilated_conv2d":
            try:
                prepared, plain = prepared_call(problem), plain_call(problem)
                skip = ""
            except Unavailable as exc:
                prepared = plain = None
                skip = str(exc)
            out += [Candidate(f"{name}-prepared", backend, family, make=prepared, skip=skip,
                              sampler=atrous_sampler, user_call=True, torch_inputs=True),
                    Candidate(f"{name}-plain", backend, family, make=plain, skip=skip,
                              sampler=atrous_sampler, user_call=True, torch_inputs=True)]
        return out
    if family == "torch" and settings.torch:
        return [Candidate("torch", "torch", family, make=lambda inp: torch_op(problem, inp),
                          sampler=atrous_sampler if gpu else cpu_sampler, user_call=True,
                          torch_inputs=True)]
    if family in ("onnxruntime", "openvino") and getattr(settings, family.replace(
            "onnxruntime", "onnx")):
        if gpu:
            return [Candidate(family, family, family,
                              skip=f"{family} is timed on the CPU only")]
        maker = _onnx_maker if family == "onnxruntime" else _openvino_maker
        return [Candidate(family, family, family, make=maker(problem), sampler=cpu_sampler,
                          user_call=True)]
    if family == "numpy" and settings.numpy:
        from atrous.jobs.bench_measure import REFERENCE_PLAN

        ordered, reference = op(problem.op).inputs, op(problem.op).reference
        return [Candidate("numpy-reference", "numpy", family, sampler=cpu_sampler,
                          plan=REFERENCE_PLAN, make=lambda inp: (
                              lambda: reference(problem, *(inp[n] for n in ordered))))]
    return []


# ------------------------------------------------------------------- the reference check


def _as_layout(out: Any, problem: Problem) -> np.ndarray:
    """A call's output as a float64 array in the problem's layout and shape (torch gives
    NHWC data as a channels_last NCHW view; ONNX keeps GAP's reduced axes)."""
    if hasattr(out, "detach"):
        if out.dim() == 4 and problem.layout == "NHWC":
            out = out.permute(0, 2, 3, 1)
        out = out.detach().to("cpu").double().numpy()
    got = np.asarray(out, dtype=np.float64)
    shape = tuple(problem.out_shape)
    if got.shape != shape and got.size == int(np.prod(shape)):
        got = got.reshape(shape)
    return got


def check_output(problem: Problem, inputs: Mapping[str, Any], out: Any) -> str:
    """"" when ``out`` (one call's output on ``inputs``) matches the float64 reference at
    the dtype's tolerance, else why not. A convolution is checked on its first
    :data:`CHECK_CHANNELS` output channels (the reference of all 256 would cost seconds)."""
    from atrous.core.tolerance import TOLERANCE, compare

    opdef = op(problem.op)
    host = {k: None if v is None else _host64(v) for k, v in inputs.items()}
    got = _as_layout(out, problem)
    sub, channels = problem, None
    if problem.op == "dilated_conv2d" and problem.groups == 1 and \
            problem.cout > CHECK_CHANNELS:
        channels = CHECK_CHANNELS
        sub = dataclasses.replace(problem, cout=channels)
        host["weight"] = host["weight"][:channels]
        host["bias"] = None if host["bias"] is None else host["bias"][:channels]
        got = got[:, :channels] if problem.layout == "NCHW" else got[..., :channels]
    ref = opdef.reference(sub, *(host[n] for n in opdef.inputs))
    tolerance = "tf32" if getattr(problem, "allow_tf32", False) and \
        problem.dtype == "float32" else problem.dtype
    if tolerance not in TOLERANCE:
        return ""
    result = compare(got, ref, tolerance)
    return "" if result.ok else f"wrong result against the float64 reference: {result}"


def _host64(a: Any) -> np.ndarray:
    if isinstance(a, np.ndarray):
        return a.astype(np.float64)
    return a.detach().to("cpu").double().numpy()
