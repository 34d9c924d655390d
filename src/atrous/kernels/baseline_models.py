"""Helpers the ops' baseline adapters share: the one-node ONNX graph wrapper, the dtype
names of ONNX and OpenVINO, and importing the optional libraries with a clear
:class:`~atrous.core.op.Unavailable` when they are missing."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from atrous.core.op import Problem, Unavailable

#: ONNX opset of the one-node models (Resize's four coordinate modes need opset >= 11).
OPSET = 17
#: IR version of the models: 8 is read by every onnxruntime since 1.10.
IR_VERSION = 8
ONNX_DTYPES = {"float32": "FLOAT", "float64": "DOUBLE", "float16": "FLOAT16"}
OPENVINO_DTYPES = {"float32": "f32", "float64": "f64", "float16": "f16"}


def torch_modules() -> tuple[Any, Any]:
    """``(torch, torch.nn.functional)``, or Unavailable when torch is not installed."""
    try:
        import torch
        import torch.nn.functional as F
    except ImportError as exc:
        raise Unavailable(f"PyTorch is not installed ({exc})") from exc
    return torch, F


def torch_image(problem: Problem, a: Any) -> Any:
    """``a`` (a NumPy array, shared not copied, or a tensor) as an NCHW-shaped tensor: an
    NHWC array viewed as NCHW is exactly a channels_last tensor, torch's native NHWC."""
    import torch

    t = torch.as_tensor(a)
    return t.permute(0, 3, 1, 2) if problem.layout == "NHWC" else t


def onnx_modules(problem: Problem) -> tuple[Any, Any, Any]:
    """``(helper, numpy_helper, element type)`` for a one-node model of ``problem``, or
    Unavailable without the ``onnx`` package, for NHWC data or a dtype without CPU kernels."""
    try:
        from onnx import TensorProto, helper, numpy_helper
    except ImportError as exc:
        raise Unavailable(f"onnx is not installed (pip install 'atrous[bench]'): {exc}") from exc
    if problem.layout != "NCHW":
        raise Unavailable("ONNX's GlobalAveragePool, Conv and Resize take NCHW data only")
    if problem.dtype not in ONNX_DTYPES:
        raise Unavailable(f"no ONNX Runtime CPU kernels for {problem.dtype}")
    return helper, numpy_helper, getattr(TensorProto, ONNX_DTYPES[problem.dtype])


def onnx_graph_model(problem: Problem, nodes: Sequence[Any], initializers: Sequence[Any],
                     out_shape: Sequence[int]) -> Any:
    """The model of ``nodes`` reading input "x" (``problem.in_shape``) and writing "y"."""
    helper, _, elem = onnx_modules(problem)
    graph = helper.make_graph(
        list(nodes), f"atrous-{problem.op}",
        [helper.make_tensor_value_info("x", elem, list(problem.in_shape))],
        [helper.make_tensor_value_info("y", elem, list(out_shape))], initializer=initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="atrous")
    model.ir_version = IR_VERSION
    return model


def openvino_modules(problem: Problem) -> tuple[Any, Any]:
    """``(openvino, openvino.opset13)``, or Unavailable when openvino is missing or the dtype
    has no CPU kernels there."""
    try:
        import openvino as ov
        import openvino.opset13 as ops
    except ImportError as exc:
        raise Unavailable(f"openvino is not installed (pip install 'atrous[bench]'): {exc}"
                          ) from exc
    if problem.dtype not in OPENVINO_DTYPES:
        raise Unavailable(f"no OpenVINO CPU kernels for {problem.dtype}")
    return ov, ops


def openvino_input(problem: Problem) -> Any:
    """The model's input parameter "x", of ``problem.in_shape`` and dtype."""
    import numpy as np

    ov, ops = openvino_modules(problem)
    return ops.parameter(list(problem.in_shape), ov.Type(np.dtype(problem.dtype)), name="x")
