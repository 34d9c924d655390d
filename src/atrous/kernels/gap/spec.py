"""global_avg_pool: arguments -> GapProblem, costs, tuning key, config spaces and defaults."""

from __future__ import annotations

import os
from dataclasses import dataclass

from atrous.autotune.space import Config, Space
from atrous.kernels.args import (
    ITEMSIZE,
    check_dtype,
    check_layout,
    check_shape,
    thread_choices,
    to_nchw,
)

OP = "global_avg_pool"


@dataclass(frozen=True)
class GapProblem:
    """A global average pooling over H and W of a 4-D input."""

    n: int
    c: int
    h: int
    w: int
    dtype: str
    layout: str
    keepdims: bool

    op = OP

    @property
    def in_shape(self) -> tuple[int, ...]:
        return (self.n, self.c, self.h, self.w) if self.layout == "NCHW" else (
            self.n, self.h, self.w, self.c)

    @property
    def input_shapes(self) -> dict[str, tuple[int, ...] | None]:
        return {"x": self.in_shape}

    @property
    def out_shape(self) -> tuple[int, ...]:
        if not self.keepdims:
            return (self.n, self.c)
        return (self.n, self.c, 1, 1) if self.layout == "NCHW" else (self.n, 1, 1, self.c)

    @property
    def flops(self) -> int:
        """One add per input element (the final scaling is negligible)."""
        return self.n * self.c * self.h * self.w

    @property
    def bytes(self) -> int:
        """Fewest bytes moved: the input read once, the output written once."""
        return (self.n * self.c * self.h * self.w + self.n * self.c) * ITEMSIZE[self.dtype]

    @property
    def key(self) -> str:
        """The tuning key: everything that can change the best config."""
        return (f"{OP}:{self.layout}:{self.dtype}:n{self.n}c{self.c}h{self.h}w{self.w}"
                f":keep{int(self.keepdims)}")


def make_problem(shape: tuple[int, ...], dtype: str, *, layout: str = "NCHW",
                 keepdims: bool = False) -> GapProblem:
    """Validate the arguments of ``global_avg_pool`` and return its Problem.

    Args:
        shape: the input's shape, in ``layout`` order.
        dtype: the input's dtype name ("float32", ...).
        layout: "NCHW" or "NHWC".
        keepdims: keep H and W as size-1 dimensions.
    """
    layout = check_layout(layout)
    check_dtype("x", dtype)
    shape = check_shape("x", shape, 4, layout)
    if not isinstance(keepdims, bool):
        raise TypeError(f"keepdims must be a bool, got {keepdims!r}")
    n, c, h, w = to_nchw(shape, layout)
    return GapProblem(n, c, h, w, dtype, layout, keepdims)


def numba_space(problem: GapProblem) -> Space:
    """Numba: NCHW reduces rows of H*W with LANES independent accumulators, ROWS rows a task;
    NHWC sums H*W channel vectors, BLOCK_C channels a task."""
    threads = thread_choices(os.cpu_count() or 1)
    if problem.layout == "NCHW":
        return Space({"LANES": (4, 8, 16), "ROWS": (1, 16), "threads": threads})
    return Space({"BLOCK_C": (16, 64, 256), "threads": threads})


def triton_space(problem: GapProblem) -> Space:
    """Triton: NCHW reduces BLOCK_R rows per program in chunks of BLOCK_HW; NHWC reduces a
    BLOCK_C channel slice over H*W in chunks of BLOCK_HW rows."""
    if problem.layout == "NCHW":
        return Space({"BLOCK_R": (1, 4, 16), "BLOCK_HW": (64, 256, 1024), "num_warps": (2, 4, 8)},
                     ("BLOCK_R * BLOCK_HW <= 8192",))
    return Space({"BLOCK_C": (32, 64, 128), "BLOCK_HW": (8, 32), "num_warps": (2, 4, 8)})


def space(problem: GapProblem, backend: str) -> Space:
    """The tunable configs of ``backend`` for ``problem`` (the reference has one, empty)."""
    return {"numba": numba_space, "triton": triton_space}.get(backend, lambda p: Space({}))(problem)


def default_config(problem: GapProblem, backend: str) -> Config:
    """A heuristic config that is good without tuning."""
    cores = os.cpu_count() or 1
    if backend == "numba":
        if problem.layout == "NCHW":
            return {"LANES": 8 if problem.h * problem.w >= 64 else 4,
                    "ROWS": 16 if problem.n * problem.c >= 16 * cores else 1, "threads": cores}
        return {"BLOCK_C": 64 if problem.c >= 64 * cores else 16, "threads": cores}
    if backend == "triton":
        if problem.layout == "NCHW":
            return {"BLOCK_R": 4, "BLOCK_HW": 1024 if problem.h * problem.w > 512 else 256,
                    "num_warps": 4}
        return {"BLOCK_C": 64, "BLOCK_HW": 32, "num_warps": 4}
    return {}
