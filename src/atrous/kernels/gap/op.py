"""global_avg_pool as an :class:`~atrous.core.op.Op`: its declared arguments, and the
hooks that tie its spec, reference, backends, verify cases, suite entries and baselines
to the jobs."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import ModuleType
from typing import Any, ClassVar

import numpy as np

from atrous.core.args import from_nchw
from atrous.core.op import Arg, Op, Shape, SuiteContext
from atrous.core.space import Config, Space
from atrous.kernels import baseline_models as bm
from atrous.kernels.gap import reference as reference_module
from atrous.kernels.gap import spec
from atrous.kernels.gap.spec import GapProblem


class GlobalAvgPool(Op[GapProblem]):
    """Mean over H and W of a 4-D input (see :func:`atrous.global_avg_pool`)."""

    name = spec.OP
    #: the spec module (built-in ops only; the GPU compile check reads its triton_space)
    spec: ClassVar[ModuleType] = spec
    arguments = (
        Arg("x", array=True, doc="the input, (N, C, H, W) or (N, H, W, C)"),
        Arg("layout", default="NCHW", doc='"NCHW" or "NHWC"'),
        Arg("keepdims", default=False, doc="keep H and W as size-1 dimensions"),
    )
    backends: ClassVar[Mapping[str, str]] = {"numba": "atrous.kernels.gap.numba_cpu",
                "triton": "atrous.kernels.gap.triton_gpu"}

    def make_problem(self, shapes: Mapping[str, Shape | None], dtypes: Mapping[str, str | None],
                     **options: Any) -> GapProblem:
        return spec.make_problem(shapes["x"], dtypes["x"], **options)

    def reference(self, problem: GapProblem, x: np.ndarray) -> np.ndarray:
        return reference_module.reference(problem, x)

    def space(self, problem: GapProblem, backend: str) -> Space:
        return spec.space(problem, backend)

    def default_config(self, problem: GapProblem, backend: str) -> Config:
        return spec.default_config(problem, backend)

    def source_modules(self, backend: str) -> tuple[str, ...]:
        return (self.backends[backend], spec.__name__)

    def cases(self, layout: str, dtype: str) -> list[GapProblem]:
        """GAP over single pixels, odd maps and channel counts that fill no block."""
        shapes = [(1, 1, 1, 1), (2, 3, 7, 5), (1, 37, 33, 33), (3, 70, 2, 9)]
        return [spec.make_problem(from_nchw(*s, layout), dtype, layout=layout, keepdims=k)
                for s, k in zip(shapes, (False, True, False, True), strict=True)]

    def suite_entries(self, ctx: SuiteContext) -> list[tuple[str, GapProblem]]:
        """The pooling branch's input."""
        f, n = ctx.feature, ctx.batch
        x = from_nchw(n, ctx.in_channels, f, f, ctx.layout)
        return [(f"gap {ctx.in_channels}x{f}x{f} b{n}",
                 spec.make_problem(x, ctx.dtype, layout=ctx.layout))]

    def torch_baseline(self, problem: GapProblem, inputs: Mapping[str, Any]
                       ) -> Callable[[], Any]:
        """``x.mean((2, 3))`` (in torch's matching memory format)."""
        bm.torch_modules()
        x = bm.torch_image(problem, inputs["x"])
        return lambda: x.mean((2, 3), keepdim=problem.keepdims)

    def onnx_model(self, problem: GapProblem, inputs: Mapping[str, Any]) -> Any:
        """``GlobalAveragePool`` (ONNX keeps the reduced axes)."""
        helper, _, _ = bm.onnx_modules(problem)
        node = helper.make_node("GlobalAveragePool", ["x"], ["y"])
        return bm.onnx_graph_model(problem, [node], [], [problem.n, problem.c, 1, 1])

    def openvino_model(self, problem: GapProblem, inputs: Mapping[str, Any]) -> Any:
        """``ReduceMean`` over H and W, in the problem's layout."""
        ov, ops = bm.openvino_modules(problem)
        x = bm.openvino_input(problem)
        spatial = [1, 2] if problem.layout == "NHWC" else [2, 3]
        y = ops.reduce_mean(x, np.array(spatial, np.int64), keep_dims=problem.keepdims)
        return ov.Model([y], [x], f"atrous-{problem.op}")


OP = GlobalAvgPool()
