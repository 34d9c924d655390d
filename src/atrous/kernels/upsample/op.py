"""upsample_bilinear as an :class:`~atrous.core.op.Op`: its declared arguments, and the
hooks that tie its spec, reference, backends, verify cases, suite entries and baselines
to the jobs."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import ModuleType
from typing import Any, ClassVar

import numpy as np

from atrous.core.args import from_nchw
from atrous.core.op import Arg, Op, Shape, SuiteContext, Unavailable
from atrous.core.space import Config, Space
from atrous.kernels import baseline_models as bm
from atrous.kernels.upsample import reference as reference_module
from atrous.kernels.upsample import spec
from atrous.kernels.upsample.spec import UpsampleProblem


class UpsampleBilinear(Op[UpsampleProblem]):
    """Bilinear resampling of H and W (see :func:`atrous.upsample_bilinear`)."""

    name = spec.OP
    #: the spec module (built-in ops only; the GPU compile check reads its triton_space)
    spec: ClassVar[ModuleType] = spec
    arguments = (
        Arg("x", array=True, doc="the input, (N, C, H, W) or (N, H, W, C)"),
        Arg("size", default=None, keyword_only=False, doc="output (OH, OW) or one int"),
        Arg("scale_factor", default=None, doc="number or pair"),
        Arg("align_corners", default=None, doc="PyTorch's flag"),
        Arg("coordinate_mode", default=None, doc="ONNX's coordinate transformation mode"),
        Arg("layout", default="NCHW", doc='"NCHW" or "NHWC"'),
    )
    backends: ClassVar[Mapping[str, str]] = {"numba": "atrous.kernels.upsample.numba_cpu",
                "triton": "atrous.kernels.upsample.triton_gpu"}

    def make_problem(self, shapes: Mapping[str, Shape | None], dtypes: Mapping[str, str | None],
                     **options: Any) -> UpsampleProblem:
        size = options.pop("size", None)
        return spec.make_problem(shapes["x"], dtypes["x"], size, **options)

    def reference(self, problem: UpsampleProblem, x: np.ndarray) -> np.ndarray:
        return reference_module.reference(problem, x)

    def space(self, problem: UpsampleProblem, backend: str) -> Space:
        return spec.space(problem, backend)

    def default_config(self, problem: UpsampleProblem, backend: str) -> Config:
        return spec.default_config(problem, backend)

    def source_modules(self, backend: str) -> tuple[str, ...]:
        return (self.backends[backend], spec.__name__)

    def cases(self, layout: str, dtype: str) -> list[UpsampleProblem]:
        """Every coordinate mode; sizes, integer and fractional scales; up and down; 1x1 in."""
        def make(n, c, h, w, size=None, **kw):
            return spec.make_problem(from_nchw(n, c, h, w, layout), dtype, size, layout=layout,
                                     **kw)

        return [
            make(1, 3, 1, 1, (5, 7)),  # the pooling branch
            make(2, 3, 5, 7, (17, 13), coordinate_mode="align_corners"),
            make(1, 4, 6, 5, scale_factor=2.5, coordinate_mode="asymmetric"),
            make(1, 2, 9, 7, (1, 4), coordinate_mode="pytorch_half_pixel"),
            make(1, 5, 11, 9, scale_factor=(0.5, 0.7)),  # downscaling
            make(1, 21, 9, 9, scale_factor=8, align_corners=False),
            make(1, 2, 4, 4, (1, 1), align_corners=True),
        ]

    def suite_entries(self, ctx: SuiteContext) -> list[tuple[str, UpsampleProblem]]:
        """The pooling branch's upsample from 1x1, and the logits' upsample to the image."""
        f, n = ctx.feature, ctx.batch
        pooled = from_nchw(n, ctx.out_channels, 1, 1, ctx.layout)
        logits = from_nchw(n, ctx.classes, f, f, ctx.layout)
        return [
            (f"upsample {ctx.out_channels}x1x1->{f}x{f} b{n}",
             spec.make_problem(pooled, ctx.dtype, (f, f), layout=ctx.layout)),
            (f"upsample {ctx.classes}x{f}x{f} b{n}->{ctx.image}x{ctx.image}",
             spec.make_problem(logits, ctx.dtype, (ctx.image, ctx.image), layout=ctx.layout)),
        ]

    def torch_baseline(self, problem: UpsampleProblem, inputs: Mapping[str, Any]
                       ) -> Callable[[], Any]:
        """``F.interpolate(mode="bilinear")`` (half_pixel and align_corners only)."""
        _, F = bm.torch_modules()
        if problem.mode not in ("half_pixel", "align_corners"):
            raise Unavailable(f"PyTorch has no {problem.mode} bilinear mode")
        x = bm.torch_image(problem, inputs["x"])
        scale = (problem.scale_h, problem.scale_w) if problem.scale_h else None
        return lambda: F.interpolate(x, size=None if scale else (problem.oh, problem.ow),
                                     scale_factor=scale, mode="bilinear",
                                     align_corners=problem.mode == "align_corners")

    def onnx_model(self, problem: UpsampleProblem, inputs: Mapping[str, Any]) -> Any:
        """``Resize`` in linear mode with the same coordinate mode."""
        helper, numpy_helper, _ = bm.onnx_modules(problem)
        if problem.scale_h is not None:
            scales = np.array([1, 1, problem.scale_h, problem.scale_w], dtype=np.float32)
            inits = [numpy_helper.from_array(scales, "scales")]
            resize_in = ["x", "", "scales"]
        else:
            sizes = np.array([problem.n, problem.c, problem.oh, problem.ow], dtype=np.int64)
            inits = [numpy_helper.from_array(sizes, "sizes")]
            resize_in = ["x", "", "", "sizes"]
        node = helper.make_node("Resize", resize_in, ["y"], mode="linear",
                                coordinate_transformation_mode=problem.mode)
        return bm.onnx_graph_model(problem, [node], inits, problem.out_shape)

    def openvino_model(self, problem: UpsampleProblem, inputs: Mapping[str, Any]) -> Any:
        """``Interpolate`` in ``linear_onnx`` mode with the same coordinate mode."""
        ov, ops = bm.openvino_modules(problem)
        x = bm.openvino_input(problem)
        spatial = [1, 2] if problem.layout == "NHWC" else [2, 3]
        if problem.scale_h is not None:  # the user's scale sets the coordinate step
            target = np.array([problem.scale_h, problem.scale_w], np.float32)
            how = "scales"
        else:
            target, how = np.array([problem.oh, problem.ow], np.int64), "sizes"
        y = ops.interpolate(x, target, "linear_onnx", how,
                            coordinate_transformation_mode=problem.mode,
                            axes=np.array(spatial, np.int64))
        return ov.Model([y], [x], f"atrous-{problem.op}")


OP = UpsampleBilinear()
