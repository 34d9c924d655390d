"""global_avg_pool: arguments -> GapProblem, costs, tuning key, config spaces and defaults."""

from __future__ import annotations

from dataclasses import dataclass

from atrous.core.args import (
    ITEMSIZE,
    MAX_ELEMENTS,
    check_dtype,
    check_elements,
    check_fields,
    check_layout,
    check_shape,
    check_sizes,
    cores,
    thread_choices,
    to_nchw,
)
from atrous.core.space import Config, Space

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

    def __post_init__(self) -> None:
        # Cheap (a few us): a Problem built by hand or from data is as valid as make_problem's.
        check_sizes("GapProblem", ("n", "c", "h", "w"), (self.n, self.c, self.h, self.w))
        check_fields("GapProblem", self.dtype, self.layout)
        if type(self.keepdims) is not bool:
            raise ValueError(f"GapProblem.keepdims must be a bool, got {self.keepdims!r}")
        if self.n * self.c * self.h * self.w > MAX_ELEMENTS:
            check_elements("x", self.in_shape)

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
    """Numba: NCHW reduces rows of H*W, ROWS rows a task; NHWC adds whole pixel rows of C
    channels. SPLIT tasks share each row (NCHW) or image (NHWC), for shapes with too few
    rows or images to fill the threads. Config values are runtime arguments: none causes a
    recompile, and ``threads == 1`` runs a serial kernel outside the thread pool. A split
    NCHW task takes one row (pieces of several rows at a stride measured 2-3x slower)."""
    threads = thread_choices(cores())
    if problem.layout == "NCHW":
        return Space({"ROWS": (1, 4, 16), "SPLIT": (1, 4), "threads": threads},
                     ("SPLIT == 1 or ROWS == 1",))
    return Space({"SPLIT": (1, 2, 4, 16), "threads": threads})


def triton_space(problem: GapProblem, target: str | None = None,
                 resources: bool = True) -> Space:
    """Triton: NCHW reduces BLOCK_R rows per program in chunks of BLOCK_HW; NHWC reduces a
    BLOCK_C channel slice over H*W in chunks of BLOCK_HW pixels, with SPLIT programs sharing
    the pixels of a slice (float32 partials, added in order by a second kernel).
    ``target`` and ``resources`` are accepted like the convolution's: no config here comes
    near a shared-memory limit (the compile check asserts it), so they change nothing.

    Blocks of 4-256 values per thread's share: at least 4 values a thread (``128 *
    num_warps``) and at most 8192 a program (beyond, the tile's registers spill)."""
    if problem.layout == "NCHW":
        return Space({"BLOCK_R": (1, 2, 4, 8, 16), "BLOCK_HW": (128, 256, 512, 1024, 2048),
                      "num_warps": (2, 4, 8)},
                     ("BLOCK_R * BLOCK_HW <= 8192", "BLOCK_R * BLOCK_HW >= 128 * num_warps"))
    return Space({"BLOCK_C": (32, 64, 128, 256), "BLOCK_HW": (8, 16, 32, 64),
                  "SPLIT": (1, 2, 4, 8), "num_warps": (2, 4, 8)},
                 ("BLOCK_C * BLOCK_HW >= 128 * num_warps", "BLOCK_C * BLOCK_HW <= 8192"))


def space(problem: GapProblem, backend: str) -> Space:
    """The tunable configs of ``backend`` for ``problem`` (the reference has one, empty)."""
    return {"numba": numba_space, "triton": triton_space}.get(backend, lambda p: Space({}))(problem)


def default_config(problem: GapProblem, backend: str) -> Config:
    """A heuristic config that is good without tuning."""
    n_cores = cores()
    if backend == "numba":
        hw, tasks = problem.h * problem.w, 4 * n_cores  # a few tasks a thread balance them
        if problem.layout == "NCHW":
            rows = problem.n * problem.c
            if rows < tasks and hw >= 4096:  # few long rows: split them
                return {"ROWS": 1, "SPLIT": 4, "threads": n_cores}
            return {"ROWS": 16 if rows >= 16 * tasks else 4 if rows >= 4 * tasks else 1,
                    "SPLIT": 1, "threads": n_cores}
        # Two image runs a thread: Numba hands each thread an equal, contiguous share.
        split = next((s for s in (1, 2, 4) if problem.n * s >= 2 * n_cores), 16)
        return {"SPLIT": split if hw >= 64 * split else 1, "threads": n_cores}
    if backend == "triton":  # tuned by hand for an H100 (132 SMs)
        hw = problem.h * problem.w
        if problem.layout == "NCHW":
            return {"BLOCK_R": 4, "BLOCK_HW": 1024 if hw > 2048 else 256, "num_warps": 8}
        # Batch-1 shapes have too few channel slices for 132 SMs: split their pixels.
        few = problem.n * -(-problem.c // 32) < 264 and hw >= 256
        return {"BLOCK_C": 32, "BLOCK_HW": 32, "SPLIT": 8 if few else 1, "num_warps": 2}
    return {}
