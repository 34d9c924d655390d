"""What a user would run instead of atrous: PyTorch's own ops, ONNX Runtime and OpenVINO,
built for one Problem on given inputs, as zero-argument callables for timing. Each op
builds its own models (the baseline hooks of :class:`atrous.core.op.Op`); this module runs
them the way a user would.

- PyTorch: ``mean`` over H and W, ``F.conv2d`` (+ ReLU), ``F.interpolate(mode="bilinear")``.
  NHWC data goes to torch as a channels_last tensor (PyTorch's native NHWC, no copy), NCHW
  data as a contiguous one, so each layout is timed in torch's matching memory format.
- ONNX Runtime: a one-node model per problem (``GlobalAveragePool``, ``Conv`` [+ ``Relu``],
  ``Resize`` with the same coordinate mode), weights as initializers as in a deployed model,
  on the CPU execution provider with every core.
- OpenVINO: a one-node model per problem, as a deployment would build it (``ReduceMean``
  over H and W; ``Convolution`` with its dilations and pads, the bias ``Add`` and ``Relu``;
  ``Interpolate`` in ``linear_onnx`` mode with the same coordinate mode), in the problem's
  own layout (an NHWC model transposes around the convolution, which OpenVINO's CPU plugin
  folds into its own blocked layout), compiled for the CPU in float32 (it would otherwise
  run bfloat16 on CPUs that have it) with every core, and called as a user calls it: an
  infer request on a NumPy input, the output read back (both copies are part of the time).

A baseline that cannot run raises :class:`Unavailable` with the reason, which benchmark
rows carry as their note (torch, onnxruntime or openvino not installed, a mode or layout the library
lacks, a dtype its kernels do not cover).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

from atrous.core.op import Problem, Unavailable
from atrous.core.registry import op
from atrous.kernels.baseline_models import IR_VERSION, OPENVINO_DTYPES, OPSET

__all__ = ["IR_VERSION", "OPSET", "Unavailable", "onnx_model", "onnx_op", "onnx_session",
           "openvino_call", "openvino_compiled", "openvino_model", "openvino_op", "torch_op"]


def torch_op(problem: Problem, inputs: Mapping[str, Any]) -> Callable[[], Any]:
    """PyTorch's own op on ``inputs`` (NumPy arrays, or tensors already on a device): the
    op's :meth:`~atrous.core.op.Op.torch_baseline`.

    Raises:
        Unavailable: torch is not installed, or has no equivalent of the problem.
    """
    return op(problem.op).torch_baseline(problem, inputs)


def onnx_model(problem: Problem, inputs: Mapping[str, Any]) -> Any:
    """The one-node ONNX model of ``problem`` (NCHW), weights from ``inputs`` as
    initializers (the op's :meth:`~atrous.core.op.Op.onnx_model`). Raises Unavailable
    without the ``onnx`` package, for NHWC data or an op without a model."""
    return op(problem.op).onnx_model(problem, inputs)


def onnx_session(problem: Problem, inputs: Mapping[str, Any], threads: int | None = None) -> Any:
    """An ONNX Runtime session of :func:`onnx_model` on the CPU with ``threads`` threads
    (default: every core).

    Raises:
        Unavailable: onnx/onnxruntime missing, NHWC data, or a session onnxruntime refuses
            to build (e.g. a dtype without a CPU kernel).
    """
    model = onnx_model(problem, inputs)
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise Unavailable("onnxruntime is not installed (pip install 'atrous[bench]')") from exc
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or os.cpu_count() or 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only: a refused session is reported as a note
    # Idle pool threads would otherwise spin after each run, stealing the cores the next
    # implementation is timed on (ONNX Runtime's own docs advise this for shared machines).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        session = ort.InferenceSession(model.SerializeToString(), options,
                                       providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types
        raise Unavailable(f"onnxruntime cannot run it: {str(exc).splitlines()[0][:200]}") from exc
    return session


def onnx_op(problem: Problem, inputs: Mapping[str, Any],
            threads: int | None = None) -> Callable[[], Any]:
    """ONNX Runtime running ``problem`` on ``inputs["x"]`` (a NumPy array, NCHW); raises
    Unavailable as :func:`onnx_session` does."""
    session = onnx_session(problem, inputs, threads)
    feed = {"x": inputs["x"]}
    return lambda: session.run(None, feed)


# ----------------------------------------------------------------------------- openvino


def openvino_model(problem: Problem, inputs: Mapping[str, Any]) -> Any:
    """The one-node OpenVINO model (``openvino.Model``) of ``problem`` in its layout,
    weights from ``inputs`` as constants (the op's :meth:`~atrous.core.op.Op.openvino_model`).

    Raises:
        Unavailable: openvino is not installed, or the dtype has no CPU kernels there.
    """
    return op(problem.op).openvino_model(problem, inputs)


def openvino_compiled(problem: Problem, inputs: Mapping[str, Any], threads: int | None = None
                      ) -> Any:
    """:func:`openvino_model` compiled for the CPU with ``threads`` threads (default: every
    core), at the problem's own precision, latency-oriented (one request at a time).

    Raises:
        Unavailable: as :func:`openvino_model`, or a model the CPU plugin refuses.
    """
    model = openvino_model(problem, inputs)
    import openvino as ov

    config = {"INFERENCE_NUM_THREADS": threads or os.cpu_count() or 1,
              "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1,
              "INFERENCE_PRECISION_HINT": OPENVINO_DTYPES[problem.dtype]}
    try:
        return ov.Core().compile_model(model, "CPU", config)
    except Exception as exc:  # openvino raises its own exception types
        raise Unavailable(f"openvino cannot run it: {str(exc).splitlines()[0][:200]}") from exc


def openvino_call(compiled: Any, x: Any) -> Callable[[], Any]:
    """One user call of a compiled model: a new input copied in, the output copied out."""
    request = compiled.create_infer_request()
    return lambda: request.infer({0: x})[0]


def openvino_op(problem: Problem, inputs: Mapping[str, Any],
                threads: int | None = None) -> Callable[[], Any]:
    """OpenVINO running ``problem`` on ``inputs["x"]`` (a NumPy array in the problem's
    layout); raises Unavailable as :func:`openvino_compiled` does."""
    return openvino_call(openvino_compiled(problem, inputs, threads), inputs["x"])
