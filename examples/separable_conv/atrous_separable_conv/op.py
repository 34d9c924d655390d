"""separable_conv2d as an atrous op: the one object atrous needs to call, verify, tune,
bench and report it. Registered by ``atrous.register_op(OP)`` or, once this package is
installed, by the ``atrous.ops`` entry point its pyproject.toml declares."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import numpy as np

from atrous.core.op import Arg, Op, Shape, SuiteContext, Unavailable
from atrous.core.space import Config, Space
from atrous_separable_conv import spec
from atrous_separable_conv.spec import SepConvProblem


class SeparableConv2d(Op):
    """DeepLabV3+'s depthwise-separable atrous convolution: a depthwise k x k dilated
    convolution, then a 1x1 pointwise one with an optional bias and ReLU."""

    name = spec.OP
    arguments = (
        Arg("x", array=True, doc="the input, (N, C, H, W) or (N, H, W, C)"),
        Arg("dw_weight", array=True, doc="depthwise weight (C, 1, k, k)"),
        Arg("pw_weight", array=True, doc="pointwise weight (Cout, C, 1, 1)"),
        Arg("bias", array=True, optional=True, doc="(Cout,) or None"),
        Arg("stride", default=1, doc="int or pair"),
        Arg("padding", default="same", doc='int, pair, "same" or "valid"'),
        Arg("dilation", default=1, doc="the atrous rate: int or pair"),
        Arg("activation", default=None, doc='None or "relu"'),
        Arg("layout", default="NCHW", doc='"NCHW" or "NHWC"'),
    )
    backends: ClassVar[Mapping[str, str]] = {"numba": "atrous_separable_conv.numba_cpu",
                "triton": "atrous_separable_conv.triton_gpu"}

    def make_problem(self, shapes: Mapping[str, Shape | None], dtypes: Mapping[str, str | None],
                     **options: Any) -> SepConvProblem:
        given = {name: d for name, d in dtypes.items() if d is not None}
        if len(set(given.values())) > 1:
            shown = ", ".join(f"{name}={d}" for name, d in given.items())
            raise TypeError(f"separable_conv2d needs one dtype for all arrays, got {shown}")
        return spec.make_problem(shapes["x"], shapes["dw_weight"], shapes["pw_weight"],
                                 shapes.get("bias"), dtypes["x"], **options)

    def reference(self, problem: SepConvProblem, x: np.ndarray, dw_weight: np.ndarray,
                  pw_weight: np.ndarray, bias: np.ndarray | None = None) -> np.ndarray:
        from atrous_separable_conv.reference import reference

        return reference(problem, x, dw_weight, pw_weight, bias)

    def space(self, problem: SepConvProblem, backend: str) -> Space:
        return spec.space(problem, backend)

    def default_config(self, problem: SepConvProblem, backend: str) -> Config:
        return spec.default_config(problem, backend)

    def prepare(self, problem: SepConvProblem, backend: str, config: Config,
                arrays: list[Any]) -> list[Any]:
        """Numba: the depthwise weight packed once for repeated calls (tuning, bench)."""
        if backend != "numba":
            return arrays
        from atrous_separable_conv.numba_cpu import prepare

        return prepare(problem, arrays)

    def executed_flops(self, problem: SepConvProblem, config: Config | None,
                       backend: str) -> int:
        """Both backends skip the depthwise taps that fall in the zero padding."""
        return problem.executed_flops if backend in self.backends else problem.flops

    def source_modules(self, backend: str) -> tuple[str, ...]:
        """The backend's kernels, and the spec whose taps and Space they follow."""
        return (self.backends[backend], spec.__name__, __name__)

    def cases(self, layout: str, dtype: str) -> list[SepConvProblem]:
        """Dilation, a dilation larger than the image, stride 2 with asymmetric padding, no
        bias, a single pixel, and channel counts that fill no tile."""
        def make(n, c, h, w, cout, bias=True, **kw):
            x = (n, c, h, w) if layout == "NCHW" else (n, h, w, c)
            return spec.make_problem(x, (c, 1, 3, 3), (cout, c, 1, 1),
                                     (cout,) if bias else None, dtype, layout=layout, **kw)

        return [make(1, 5, 9, 11, 7, dilation=2, activation="relu"),
                make(2, 4, 7, 6, 6, bias=False, padding=3, dilation=3),
                make(1, 3, 5, 5, 9, padding=12, dilation=12),
                make(1, 6, 8, 9, 4, stride=2, padding=(1, 2)),
                make(1, 2, 1, 1, 3, dilation=6, activation="relu"),
                make(1, 33, 7, 5, 17, dilation=6)]

    def suite_entries(self, ctx: SuiteContext) -> list[tuple[str, SepConvProblem]]:
        """DeepLabV3+ with separable convolutions (its Xception-65 variant): one per atrous
        rate of the ASPP (in -> out channels on the feature map), and the decoder's first
        3x3 (out + 48 low-level channels -> out, at a quarter of the image size)."""
        n, f, cin, cout = ctx.batch, ctx.feature, ctx.in_channels, ctx.out_channels

        def make(c, size, rate):
            x = (n, c, size, size) if ctx.layout == "NCHW" else (n, size, size, c)
            return spec.make_problem(x, (c, 1, 3, 3), (cout, c, 1, 1), (cout,), ctx.dtype,
                                     dilation=rate, activation="relu", layout=ctx.layout)

        entries = [(f"sepconv d{r} {cin}->{cout} {f}x{f} b{n}", make(cin, f, r))
                   for r in ctx.rates]
        quarter = -(-ctx.image // 4)
        entries.append((f"decoder sepconv {cout + 48}->{cout} {quarter}x{quarter} b{n}",
                        make(cout + 48, quarter, 1)))
        return entries

    def torch_baseline(self, problem: SepConvProblem, inputs: Mapping[str, Any]
                       ) -> Callable[[], Any]:
        """Two ``F.conv2d`` calls (depthwise with ``groups=C``, then 1x1) and ReLU, on
        channels_last tensors for NHWC data (torch's native NHWC: no copy)."""
        try:
            import torch
            import torch.nn.functional as F
        except ImportError as exc:
            raise Unavailable(f"PyTorch is not installed ({exc})") from exc
        p = problem
        x = torch.as_tensor(inputs["x"])
        x = x.permute(0, 3, 1, 2) if p.layout == "NHWC" else x
        wd, wp = torch.as_tensor(inputs["dw_weight"]), torch.as_tensor(inputs["pw_weight"])
        if p.layout == "NHWC":
            wp = wp.contiguous(memory_format=torch.channels_last)
        b = None if inputs.get("bias") is None else torch.as_tensor(inputs["bias"])
        pt, pb, pl, pr = p.padding
        pad = (pt, pl)
        if pt != pb or pl != pr:  # torch pads symmetrically: pad the asymmetric rest first
            x, pad = F.pad(x, (pl, pr, pt, pb)), (0, 0)
        act = torch.relu if p.activation == "relu" else (lambda t: t)
        return lambda: act(F.conv2d(F.conv2d(x, wd, None, p.stride, pad, p.dilation, p.c),
                                    wp, b))

    def onnx_model(self, problem: SepConvProblem, inputs: Mapping[str, Any]) -> Any:
        """Two ``Conv`` nodes (the depthwise one with ``group=C``) and ``Relu``, the
        weights as initializers; NCHW float32/float64 only (ONNX's Conv layout)."""
        try:
            from onnx import TensorProto, helper, numpy_helper
        except ImportError as exc:
            raise Unavailable(f"onnx is not installed: {exc}") from exc
        p = problem
        if p.layout != "NCHW":
            raise Unavailable("ONNX's Conv takes NCHW data only")
        elem = {"float32": TensorProto.FLOAT, "float64": TensorProto.DOUBLE}.get(p.dtype)
        if elem is None:
            raise Unavailable(f"no ONNX Runtime CPU kernels for {p.dtype}")

        def init(name: str, a: Any) -> Any:
            return numpy_helper.from_array(np.asarray(a, dtype=p.dtype), name)

        pt, pb, pl, pr = p.padding
        weights = [init("dw", inputs["dw_weight"]), init("pw", inputs["pw_weight"])]
        pointwise_inputs = ["depth", "pw"]
        if inputs.get("bias") is not None:
            weights.append(init("b", inputs["bias"]))
            pointwise_inputs.append("b")
        relu = p.activation == "relu"
        nodes = [helper.make_node("Conv", ["x", "dw"], ["depth"], group=p.c,
                                  dilations=list(p.dilation), strides=list(p.stride),
                                  pads=[pt, pl, pb, pr], kernel_shape=[p.k, p.k]),
                 helper.make_node("Conv", pointwise_inputs, ["z" if relu else "y"])]
        if relu:
            nodes.append(helper.make_node("Relu", ["z"], ["y"]))
        graph = helper.make_graph(
            nodes, f"atrous-{p.op}", [helper.make_tensor_value_info("x", elem, list(p.in_shape))],
            [helper.make_tensor_value_info("y", elem, list(p.out_shape))], initializer=weights)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)],
                                  producer_name="atrous_separable_conv")
        model.ir_version = 8  # read by every onnxruntime since 1.10
        return model


#: The op instance that ``atrous.register_op`` and the ``atrous.ops`` entry point name.
OP = SeparableConv2d()
