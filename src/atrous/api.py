"""The public functions: validate arguments into a Problem, then dispatch to a backend; and
:func:`explain` / :func:`use_tuning`, which show and steer the tuned config a call runs."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from atrous import dispatch
from atrous.autotune.lookup import tuning_path, use_tuning
from atrous.core.arrays import Kind, kind_of
from atrous.core.op import Problem
from atrous.core.registry import OPS, op

__all__ = ["Explanation", "call_op", "dilated_conv2d", "explain", "global_avg_pool",
           "prepare_call", "upsample_bilinear", "use_tuning"]

Array = Any  # numpy.ndarray or torch.Tensor


def global_avg_pool(x: Array, *, layout: str = "NCHW", keepdims: bool = False,
                    backend: str = "auto", config: Mapping[str, Any] | None = None,
                    out: Array | None = None) -> Array:
    """Mean of ``x`` over its spatial dimensions.

    Args:
        x: (N, C, H, W) for layout "NCHW" or (N, H, W, C) for "NHWC"; NumPy array or tensor.
        layout: "NCHW" or "NHWC".
        keepdims: return (N, C, 1, 1) / (N, 1, 1, C) instead of (N, C).
        backend: "auto" (Numba on the CPU, Triton on CUDA), "numba", "triton" or "numpy".
        config: a kernel config from the backend's Space, overriding the tuned choice.
        out: a contiguous buffer of the output's shape and dtype to write into.

    Returns:
        The pooled array, of the input's kind (array or tensor), device and dtype.
    """
    problem, inputs, kind = prepare_call("global_avg_pool", {"x": x},
                                         {"layout": layout, "keepdims": keepdims})
    return dispatch.run(problem, inputs, kind, backend=backend, config=config, out=out)


def dilated_conv2d(x: Array, weight: Array, bias: Array | None = None, *, stride: Any = 1,
                   padding: Any = 0, dilation: Any = 1, groups: int = 1,
                   activation: str | None = None, layout: str = "NCHW",
                   allow_tf32: bool = False, backend: str = "auto",
                   config: Mapping[str, Any] | None = None, out: Array | None = None) -> Array:
    """2-D convolution with dilation, groups, bias and an optional fused ReLU.

    Args:
        x: (N, Cin, H, W) for "NCHW" or (N, H, W, Cin) for "NHWC".
        weight: (Cout, Cin/groups, kh, kw) in every layout (a Keras HWIO kernel is
            ``w.transpose(3, 2, 0, 1)``).
        bias: (Cout,) or None.
        stride: int or (sh, sw), >= 1.
        padding: int or (ph, pw) >= 0, "same" (stride 1) or "valid".
        dilation: int or (dh, dw), >= 1.
        groups: number of channel groups; ``groups == Cin`` is depthwise.
        activation: None or "relu", applied after the bias.
        layout: "NCHW" or "NHWC" for ``x`` and the output.
        allow_tf32: let float32 products use TF32 on the GPU; off by default.
        backend, config, out: as in :func:`global_avg_pool`.

    Returns:
        The convolution output in ``layout``, of the input's kind, device and dtype.

    On the CPU the weights' packing (and Winograd filters, from the second call with the
    same weights) is kept in the weight cache (``atrous.set_weight_cache_limit``,
    ``atrous.clear_weight_cache``) until the weights change, so repeated calls cost what a
    :func:`atrous.prepare_conv` call does.
    """
    problem, inputs, kind = prepare_call(
        "dilated_conv2d", {"x": x, "weight": weight, "bias": bias},
        {"stride": stride, "padding": padding, "dilation": dilation, "groups": groups,
         "activation": activation, "layout": layout, "allow_tf32": allow_tf32})
    name = dispatch.resolve_backend(backend, kind, problem.dtype)
    if name == "numba":  # packed (and transformed) once per weights, from the weight cache
        from atrous.plain_conv import for_plain_call  # imports Numba

        dispatch.check_call(problem, inputs, kind, out)  # on the caller's weight, not its packing
        inputs["weight"], chosen = for_plain_call(problem, weight, config)
        return dispatch.launch(problem, inputs, kind, name, chosen, out)
    return dispatch.run(problem, inputs, kind, backend=name, config=config, out=out)


def upsample_bilinear(x: Array, size: Any = None, *, scale_factor: Any = None,
                      align_corners: bool | None = None, coordinate_mode: str | None = None,
                      layout: str = "NCHW", backend: str = "auto",
                      config: Mapping[str, Any] | None = None, out: Array | None = None) -> Array:
    """Bilinear resampling of the spatial dimensions (up or down, no antialiasing).

    Args:
        x: (N, C, H, W) for "NCHW" or (N, H, W, C) for "NHWC".
        size: output (OH, OW), or one int for both; exclusive with ``scale_factor``.
        scale_factor: number or pair; the output size is floor(input size * scale).
        align_corners: PyTorch's flag: True is "align_corners", False is "half_pixel".
        coordinate_mode: "half_pixel" (default; PyTorch align_corners=False, TF2 resize),
            "align_corners", "asymmetric" (TF1 resize_bilinear) or "pytorch_half_pixel".
        layout, backend, config, out: as in :func:`global_avg_pool`.

    Returns:
        The resampled array, of the input's kind, device and dtype.
    """
    problem, inputs, kind = prepare_call(
        "upsample_bilinear", {"x": x},
        {"size": size, "scale_factor": scale_factor, "align_corners": align_corners,
         "coordinate_mode": coordinate_mode, "layout": layout})
    return dispatch.run(problem, inputs, kind, backend=backend, config=config, out=out)


Prepared = tuple[Problem, dict[str, Any], Kind]  # (Problem, inputs by name, where they live)


def prepare_call(op_name: str, arrays: dict[str, Any], options: Mapping[str, Any]) -> Prepared:
    """The Problem of a call of the registered op ``op_name`` on ``arrays`` (by its declared
    input names) with ``options``, the inputs, and where they live (NumPy, CPU or CUDA
    tensors): the first step of every public call, built on the op's declaration."""
    kind = kind_of(**arrays)
    return op(op_name).problem_from_arrays(arrays, options), arrays, kind


def call_op(op_name: str, *args: Any, backend: str = "auto",
            config: Mapping[str, Any] | None = None, out: Array | None = None,
            **kwargs: Any) -> Array:
    """Call any registered op, built in or added by :func:`atrous.register_op` (or an
    ``atrous.ops`` entry point), with the arguments it declares.

    Args:
        op_name: the op's registered name.
        args, kwargs: its declared arguments (arrays first, by position or name).
        backend, config, out: as in :func:`global_avg_pool`.

    Returns:
        The output, of the main input's kind, device and dtype.

    Example:
        >>> y = atrous.call_op("separable_conv2d", x, dw, pw, dilation=6)
    """
    builtin = _BUILTIN_FUNCTIONS.get(op_name)
    if builtin is not None:  # the built-ins' own path (the conv's weight cache)
        return builtin(*args, backend=backend, config=config, out=out, **kwargs)
    arrays, options = op(op_name).bind(args, kwargs)
    problem, inputs, kind = prepare_call(op_name, arrays, options)
    return dispatch.run(problem, inputs, kind, backend=backend, config=config, out=out)


_BUILTIN_FUNCTIONS: dict[str, Callable[..., Array]] = {
    "global_avg_pool": global_avg_pool, "dilated_conv2d": dilated_conv2d,
    "upsample_bilinear": upsample_bilinear}


@dataclass(frozen=True)
class Explanation:
    """Which kernel config a call would run, and why (see :func:`explain`)."""

    op: str
    backend: str
    key: str
    source: str  # "given", "exact", "nearest", "family" or "default"
    config: dict[str, Any]
    detail: str
    tuning_file: str | None

    def __str__(self) -> str:
        return (f"{self.op} on {self.backend}: {self.source} config {self.config}\n"
                f"  why: {self.detail}\n  problem: {self.key}\n"
                f"  tuning file: {self.tuning_file or 'off'}")


def explain(op_name: str | Callable[..., Any], *args: Any, backend: str = "auto",
            config: Mapping[str, Any] | None = None, out: Array | None = None,
            **kwargs: Any) -> Explanation:
    """Say which config ``atrous.<op>(*args, **kwargs)`` would run and where it comes from
    (the tuning database's exact entry, the nearest tuned shape, the machine family, or the
    heuristic default), without running or timing anything.

    Args:
        op_name: a registered op's name ("global_avg_pool", "dilated_conv2d",
            "upsample_bilinear", or one added by ``atrous.register_op``), or the function.
        args, kwargs: the call's arguments (arrays or tensors, as for the op itself).
        backend, config: as for the op; ``out`` is accepted and ignored.

    Example:
        >>> print(atrous.explain("dilated_conv2d", x, w, padding="same", dilation=12))
    """
    name = op_name if isinstance(op_name, str) else getattr(op_name, "__name__", "")
    if name not in OPS:
        raise ValueError(f"explain: unknown op {op_name!r}; known: {sorted(OPS)}")
    arrays, options = OPS[name].bind(args, kwargs)
    problem, inputs, kind = prepare_call(name, arrays, options)
    chosen = dispatch.resolve_backend(backend, kind, problem.dtype)
    main = inputs[OPS[name].inputs[0]]
    choice = dispatch.choose(problem, chosen, config, dispatch.device_of(main))
    path = tuning_path()
    return Explanation(name, chosen, problem.key, choice.source, dict(choice.config),
                       choice.detail, None if path is None else str(path))
