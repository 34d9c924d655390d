"""What a user would run instead of atrous: PyTorch's own ops, ONNX Runtime and OpenVINO,
built for one Problem on given inputs, as zero-argument callables for timing.

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

#: ONNX opset of the one-node models (Resize's four coordinate modes need opset >= 11).
OPSET = 17
#: IR version of the models: 8 is read by every onnxruntime since 1.10.
IR_VERSION = 8


class Unavailable(RuntimeError):
    """A baseline that cannot run on this problem here; the message says why."""


# -------------------------------------------------------------------------------- torch


def torch_op(problem: Any, inputs: Mapping[str, Any]) -> Callable[[], Any]:
    """PyTorch's own op on ``inputs`` (NumPy arrays, or tensors already on a device).

    Raises:
        Unavailable: torch is not installed, or has no equivalent of the problem.
    """
    try:
        import torch
        import torch.nn.functional as F
    except ImportError as exc:
        raise Unavailable(f"PyTorch is not installed ({exc})") from exc
    if problem.op == "upsample_bilinear" and problem.mode not in ("half_pixel",
                                                                  "align_corners"):
        raise Unavailable(f"PyTorch has no {problem.mode} bilinear mode")

    def tensor(a: Any, image: bool = False) -> Any:
        if a is None:
            return None
        t = torch.as_tensor(a)  # NumPy arrays are shared, not copied
        # An NHWC array viewed as NCHW is exactly a channels_last tensor.
        return t.permute(0, 3, 1, 2) if image and problem.layout == "NHWC" else t

    x = tensor(inputs["x"], image=True)
    if problem.op == "global_avg_pool":
        return lambda: x.mean((2, 3), keepdim=problem.keepdims)
    if problem.op == "dilated_conv2d":
        w, b = tensor(inputs["weight"]), tensor(inputs["bias"])
        if problem.layout == "NHWC":
            w = w.contiguous(memory_format=torch.channels_last)
        pad = problem.padding
        if pad[0] != pad[1] or pad[2] != pad[3]:  # asymmetric "same": torch pads symmetrically
            x = F.pad(x, (pad[2], pad[3], pad[0], pad[1]))
            pad = (0, 0, 0, 0)
        act = torch.relu if problem.activation == "relu" else (lambda t: t)
        return lambda: act(F.conv2d(x, w, b, problem.stride, (pad[0], pad[2]),
                                    problem.dilation, problem.groups))
    scale = (problem.scale_h, problem.scale_w) if problem.scale_h else None
    return lambda: F.interpolate(x, size=None if scale else (problem.oh, problem.ow),
                                 scale_factor=scale, mode="bilinear",
                                 align_corners=problem.mode == "align_corners")


# -------------------------------------------------------------------------- onnxruntime

_ONNX_DTYPES = {"float32": "FLOAT", "float64": "DOUBLE", "float16": "FLOAT16"}


def onnx_model(problem: Any, inputs: Mapping[str, Any]) -> Any:
    """The one-node ONNX model of ``problem`` (NCHW), weights from ``inputs`` as
    initializers. Raises Unavailable without the ``onnx`` package or for NHWC data."""
    try:
        import numpy as np
        from onnx import TensorProto, helper, numpy_helper
    except ImportError as exc:
        raise Unavailable(f"onnx is not installed (pip install 'atrous[bench]'): {exc}") from exc
    if problem.layout != "NCHW":
        raise Unavailable("ONNX's GlobalAveragePool, Conv and Resize take NCHW data only")
    if problem.dtype not in _ONNX_DTYPES:
        raise Unavailable(f"no ONNX Runtime CPU kernels for {problem.dtype}")
    elem = getattr(TensorProto, _ONNX_DTYPES[problem.dtype])
    dtype = problem.dtype
    out_shape = list(problem.out_shape)
    nodes, inits = [], []
    if problem.op == "global_avg_pool":
        out_shape = [problem.n, problem.c, 1, 1]  # ONNX keeps the reduced axes
        nodes.append(helper.make_node("GlobalAveragePool", ["x"], ["y"]))
    elif problem.op == "dilated_conv2d":
        inits.append(numpy_helper.from_array(np.asarray(inputs["weight"], dtype=dtype), "w"))
        names = ["x", "w"]
        if inputs.get("bias") is not None:
            inits.append(numpy_helper.from_array(np.asarray(inputs["bias"], dtype=dtype), "b"))
            names.append("b")
        top, bottom, left, right = problem.padding
        conv_out = "c" if problem.activation == "relu" else "y"
        nodes.append(helper.make_node(
            "Conv", names, [conv_out], kernel_shape=[problem.kh, problem.kw],
            strides=list(problem.stride), dilations=list(problem.dilation),
            pads=[top, left, bottom, right], group=problem.groups))
        if problem.activation == "relu":
            nodes.append(helper.make_node("Relu", ["c"], ["y"]))
    else:
        if problem.scale_h is not None:
            scales = np.array([1, 1, problem.scale_h, problem.scale_w], dtype=np.float32)
            inits.append(numpy_helper.from_array(scales, "scales"))
            resize_in = ["x", "", "scales"]
        else:
            sizes = np.array([problem.n, problem.c, problem.oh, problem.ow], dtype=np.int64)
            inits.append(numpy_helper.from_array(sizes, "sizes"))
            resize_in = ["x", "", "", "sizes"]
        nodes.append(helper.make_node("Resize", resize_in, ["y"], mode="linear",
                                      coordinate_transformation_mode=problem.mode))
    graph = helper.make_graph(
        nodes, f"atrous-{problem.op}",
        [helper.make_tensor_value_info("x", elem, list(problem.in_shape))],
        [helper.make_tensor_value_info("y", elem, out_shape)], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="atrous")
    model.ir_version = IR_VERSION
    return model


def onnx_session(problem: Any, inputs: Mapping[str, Any], threads: int | None = None) -> Any:
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


def onnx_op(problem: Any, inputs: Mapping[str, Any],
            threads: int | None = None) -> Callable[[], Any]:
    """ONNX Runtime running ``problem`` on ``inputs["x"]`` (a NumPy array, NCHW); raises
    Unavailable as :func:`onnx_session` does."""
    session = onnx_session(problem, inputs, threads)
    feed = {"x": inputs["x"]}
    return lambda: session.run(None, feed)


# ----------------------------------------------------------------------------- openvino

_OV_DTYPES = {"float32": "f32", "float64": "f64", "float16": "f16"}


def openvino_model(problem: Any, inputs: Mapping[str, Any]) -> Any:
    """The one-node OpenVINO model (``openvino.Model``) of ``problem`` in its layout,
    weights from ``inputs`` as constants.

    Raises:
        Unavailable: openvino is not installed, or the dtype has no CPU kernels there.
    """
    try:
        import numpy as np
        import openvino as ov
        import openvino.opset13 as ops
    except ImportError as exc:
        raise Unavailable(f"openvino is not installed (pip install 'atrous[bench]'): {exc}"
                          ) from exc
    if problem.dtype not in _OV_DTYPES:
        raise Unavailable(f"no OpenVINO CPU kernels for {problem.dtype}")
    dtype, nhwc = problem.dtype, problem.layout == "NHWC"
    x = ops.parameter(list(problem.in_shape), ov.Type(np.dtype(dtype)), name="x")
    spatial = [1, 2] if nhwc else [2, 3]
    if problem.op == "global_avg_pool":
        y = ops.reduce_mean(x, np.array(spatial, np.int64), keep_dims=problem.keepdims)
    elif problem.op == "dilated_conv2d":
        y = _openvino_conv(ops, np, problem, x, inputs)
    else:
        if problem.scale_h is not None:  # the user's scale sets the coordinate step
            target = np.array([problem.scale_h, problem.scale_w], np.float32)
            how = "scales"
        else:
            target, how = np.array([problem.oh, problem.ow], np.int64), "sizes"
        y = ops.interpolate(x, target, "linear_onnx", how,
                            coordinate_transformation_mode=problem.mode,
                            axes=np.array(spatial, np.int64))
    return ov.Model([y], [x], f"atrous-{problem.op}")


def _openvino_conv(ops: Any, np: Any, problem: Any, x: Any, inputs: Mapping[str, Any]) -> Any:
    """Convolution (GroupConvolution for groups > 1) + bias + ReLU, NCHW inside."""
    dtype, nhwc = problem.dtype, problem.layout == "NHWC"
    if nhwc:
        x = ops.transpose(x, np.array([0, 3, 1, 2], np.int64))
    w = np.asarray(inputs["weight"], dtype=dtype)
    top, bottom, left, right = problem.padding
    geometry = (list(problem.stride), [top, left], [bottom, right], list(problem.dilation))
    if problem.groups == 1:
        y = ops.convolution(x, ops.constant(w), *geometry)
    else:
        g = problem.groups
        grouped = w.reshape(g, problem.cout // g, *w.shape[1:])
        y = ops.group_convolution(x, ops.constant(grouped), *geometry)
    if inputs.get("bias") is not None:
        b = np.asarray(inputs["bias"], dtype=dtype).reshape(1, problem.cout, 1, 1)
        y = ops.add(y, ops.constant(b))
    if problem.activation == "relu":
        y = ops.relu(y)
    return ops.transpose(y, np.array([0, 2, 3, 1], np.int64)) if nhwc else y


def openvino_compiled(problem: Any, inputs: Mapping[str, Any], threads: int | None = None
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
              "INFERENCE_PRECISION_HINT": _OV_DTYPES[problem.dtype]}
    try:
        return ov.Core().compile_model(model, "CPU", config)
    except Exception as exc:  # openvino raises its own exception types
        raise Unavailable(f"openvino cannot run it: {str(exc).splitlines()[0][:200]}") from exc


def openvino_call(compiled: Any, x: Any) -> Callable[[], Any]:
    """One user call of a compiled model: a new input copied in, the output copied out."""
    request = compiled.create_infer_request()
    return lambda: request.infer({0: x})[0]


def openvino_op(problem: Any, inputs: Mapping[str, Any],
                threads: int | None = None) -> Callable[[], Any]:
    """OpenVINO running ``problem`` on ``inputs["x"]`` (a NumPy array in the problem's
    layout); raises Unavailable as :func:`openvino_compiled` does."""
    return openvino_call(openvino_compiled(problem, inputs, threads), inputs["x"])
