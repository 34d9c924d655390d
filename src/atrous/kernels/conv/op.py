"""dilated_conv2d as an :class:`~atrous.core.op.Op`: its declared arguments, and the
hooks that tie its spec, reference, backends (with the CPU weight packing), verify cases,
suite entries and baselines to the jobs."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import ModuleType
from typing import Any, ClassVar

import numpy as np

from atrous.core.args import from_nchw
from atrous.core.op import Arg, Op, Shape, SuiteContext
from atrous.core.space import Config, Space
from atrous.kernels import baseline_models as bm
from atrous.kernels.conv import reference as reference_module
from atrous.kernels.conv import spec
from atrous.kernels.conv.spec import ConvProblem


class DilatedConv2d(Op[ConvProblem]):
    """2-D convolution with dilation, groups, bias and a fused ReLU (see
    :func:`atrous.dilated_conv2d`)."""

    name = spec.OP
    #: the spec module (built-in ops only; the GPU compile check reads its triton_space)
    spec: ClassVar[ModuleType] = spec
    arguments = (
        Arg("x", array=True, doc="the input, (N, Cin, H, W) or (N, H, W, Cin)"),
        Arg("weight", array=True, doc="(Cout, Cin/groups, kh, kw)"),
        Arg("bias", array=True, optional=True, doc="(Cout,) or None"),
        Arg("stride", default=1, doc="int or pair"),
        Arg("padding", default=0, doc='int, pair, "same" or "valid"'),
        Arg("dilation", default=1, doc="int or pair"),
        Arg("groups", default=1, doc="channel groups"),
        Arg("activation", default=None, doc='None or "relu"'),
        Arg("layout", default="NCHW", doc='"NCHW" or "NHWC"'),
        Arg("allow_tf32", default=False, doc="TF32 products on the GPU"),
    )
    backends: ClassVar[Mapping[str, str]] = {"numba": "atrous.kernels.conv.numba_cpu",
                "triton": "atrous.kernels.conv.triton_gpu"}

    def make_problem(self, shapes: Mapping[str, Shape | None], dtypes: Mapping[str, str | None],
                     **options: Any) -> ConvProblem:
        return spec.make_problem(shapes["x"], shapes["weight"], shapes.get("bias"),
                                 dtypes["x"], weight_dtype=dtypes.get("weight"),
                                 bias_dtype=dtypes.get("bias"), **options)

    def reference(self, problem: ConvProblem, x: np.ndarray, weight: np.ndarray,
                  bias: np.ndarray | None = None) -> np.ndarray:
        return reference_module.reference(problem, x, weight, bias)

    def space(self, problem: ConvProblem, backend: str) -> Space:
        return spec.space(problem, backend)

    def default_config(self, problem: ConvProblem, backend: str) -> Config:
        return spec.default_config(problem, backend)

    def complete_config(self, problem: ConvProblem, backend: str, given: Config) -> Config:
        return spec.complete_config(problem, backend, given)

    def seed_configs(self, problem: ConvProblem, backend: str) -> list[Config]:
        return spec.seed_configs(problem, backend)

    def prepare(self, problem: ConvProblem, backend: str, config: Config, arrays: list[Any]
                ) -> list[Any]:
        """On the CPU: the weights packed once (and Winograd filters made), as
        :func:`atrous.prepare_conv` does for a user's repeated calls."""
        if backend != "numba":
            return arrays
        return self.backend("numba").prepare(problem, config, arrays)

    def executed_flops(self, problem: ConvProblem, config: Config | None, backend: str) -> int:
        return spec.executed_flops(problem, config, backend)

    def source_modules(self, backend: str) -> tuple[str, ...]:
        return (self.backends[backend], spec.__name__)

    def cases(self, layout: str, dtype: str) -> list[ConvProblem]:
        """Convolutions with dilation, stride, groups, depthwise, 'same', bias and ReLU."""
        def make(n, cin, h, w, cout, k, **kw):
            weight = (cout, cin // kw.get("groups", 1), k, k)
            bias = (cout,) if kw.pop("bias", True) else None
            return spec.make_problem(from_nchw(n, cin, h, w, layout), weight, bias, dtype,
                                     layout=layout, **kw)

        return [
            make(1, 5, 9, 11, 7, 3, padding="same", dilation=2, activation="relu"),
            make(2, 4, 7, 6, 6, 3, padding=3, dilation=3, bias=False),
            make(1, 3, 5, 5, 9, 3, padding=12, dilation=12),  # dilation larger than the image
            make(1, 6, 8, 9, 4, 3, stride=2, padding=(1, 2), groups=2, activation="relu"),
            make(1, 8, 6, 7, 8, 3, padding=1, groups=8),  # depthwise
            make(2, 9, 5, 4, 10, 1),  # the 1x1 branch
            make(1, 33, 7, 5, 40, 3, padding=6, dilation=6),  # channels that fill no block
        ]

    def suite_entries(self, ctx: SuiteContext) -> list[tuple[str, ConvProblem]]:
        """ASPP's 1x1 branch and one dilated 3x3 per rate."""
        f, n, cin, cout = ctx.feature, ctx.batch, ctx.in_channels, ctx.out_channels
        tag = f"{f}x{f} b{n}"
        x = from_nchw(n, cin, f, f, ctx.layout)
        entries = [(f"conv1x1 {cin}->{cout} {tag}", spec.make_problem(
            x, (cout, cin, 1, 1), None, ctx.dtype, layout=ctx.layout))]
        for r in ctx.rates:
            entries.append((f"conv3x3 d{r} {cin}->{cout} {tag}", spec.make_problem(
                x, (cout, cin, 3, 3), None, ctx.dtype, padding="same", dilation=r,
                layout=ctx.layout)))
        return entries

    def torch_baseline(self, problem: ConvProblem, inputs: Mapping[str, Any]
                       ) -> Callable[[], Any]:
        """``F.conv2d`` (+ ReLU), channels_last weights for NHWC data."""
        torch, F = bm.torch_modules()
        x = bm.torch_image(problem, inputs["x"])
        w = torch.as_tensor(inputs["weight"])
        b = None if inputs.get("bias") is None else torch.as_tensor(inputs["bias"])
        if problem.layout == "NHWC":
            w = w.contiguous(memory_format=torch.channels_last)
        pad = problem.padding
        if pad[0] != pad[1] or pad[2] != pad[3]:  # asymmetric "same": torch pads symmetrically
            x = F.pad(x, (pad[2], pad[3], pad[0], pad[1]))
            pad = (0, 0, 0, 0)
        act = torch.relu if problem.activation == "relu" else (lambda t: t)
        return lambda: act(F.conv2d(x, w, b, problem.stride, (pad[0], pad[2]),
                                    problem.dilation, problem.groups))

    def onnx_model(self, problem: ConvProblem, inputs: Mapping[str, Any]) -> Any:
        """``Conv`` (+ ``Relu``), weights and bias as initializers."""
        helper, numpy_helper, _ = bm.onnx_modules(problem)
        dtype = problem.dtype
        inits = [numpy_helper.from_array(np.asarray(inputs["weight"], dtype=dtype), "w")]
        names = ["x", "w"]
        if inputs.get("bias") is not None:
            inits.append(numpy_helper.from_array(np.asarray(inputs["bias"], dtype=dtype), "b"))
            names.append("b")
        top, bottom, left, right = problem.padding
        conv_out = "c" if problem.activation == "relu" else "y"
        nodes = [helper.make_node(
            "Conv", names, [conv_out], kernel_shape=[problem.kh, problem.kw],
            strides=list(problem.stride), dilations=list(problem.dilation),
            pads=[top, left, bottom, right], group=problem.groups)]
        if problem.activation == "relu":
            nodes.append(helper.make_node("Relu", ["c"], ["y"]))
        return bm.onnx_graph_model(problem, nodes, inits, problem.out_shape)

    def openvino_model(self, problem: ConvProblem, inputs: Mapping[str, Any]) -> Any:
        """``Convolution`` (``GroupConvolution`` for groups > 1) with its dilations and pads,
        the bias ``Add`` and ``Relu``; an NHWC model transposes around them (OpenVINO's CPU
        plugin folds that into its own blocked layout)."""
        ov, ops = bm.openvino_modules(problem)
        x = bm.openvino_input(problem)
        dtype, nhwc = problem.dtype, problem.layout == "NHWC"
        y = ops.transpose(x, np.array([0, 3, 1, 2], np.int64)) if nhwc else x
        w = np.asarray(inputs["weight"], dtype=dtype)
        top, bottom, left, right = problem.padding
        geometry = (list(problem.stride), [top, left], [bottom, right], list(problem.dilation))
        if problem.groups == 1:
            y = ops.convolution(y, ops.constant(w), *geometry)
        else:
            g = problem.groups
            grouped = w.reshape(g, problem.cout // g, *w.shape[1:])
            y = ops.group_convolution(y, ops.constant(grouped), *geometry)
        if inputs.get("bias") is not None:
            b = np.asarray(inputs["bias"], dtype=dtype).reshape(1, problem.cout, 1, 1)
            y = ops.add(y, ops.constant(b))
        if problem.activation == "relu":
            y = ops.relu(y)
        if nhwc:
            y = ops.transpose(y, np.array([0, 2, 3, 1], np.int64))
        return ov.Model([y], [x], f"atrous-{problem.op}")


OP = DilatedConv2d()
