"""upsample_bilinear: arguments -> UpsampleProblem, source coordinates, costs, spaces, defaults."""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

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

OP = "upsample_bilinear"
MODES = ("half_pixel", "align_corners", "asymmetric", "pytorch_half_pixel")


@dataclass(frozen=True)
class UpsampleProblem:
    """Bilinear resampling of H x W to OH x OW. ``scale_h``/``scale_w`` are the user's scale
    factors when given (they set the coordinate step in half_pixel-like modes), else None."""

    n: int
    c: int
    h: int
    w: int
    oh: int
    ow: int
    mode: str
    scale_h: float | None
    scale_w: float | None
    dtype: str
    layout: str

    op = OP

    def __post_init__(self) -> None:
        # Cheap (a few us): a Problem built by hand or from data is as valid as make_problem's.
        check_sizes("UpsampleProblem", ("n", "c", "h", "w", "oh", "ow"),
                    (self.n, self.c, self.h, self.w, self.oh, self.ow))
        check_fields("UpsampleProblem", self.dtype, self.layout)
        if self.mode not in MODES:
            raise ValueError(f"UpsampleProblem.mode must be one of {MODES}, got {self.mode!r}")
        if (self.scale_h is not None or self.scale_w is not None) and not all(
                type(s) is float and 0.0 < s < math.inf for s in (self.scale_h, self.scale_w)):
            raise ValueError(f"UpsampleProblem scales must be both None or both positive"
                             f" finite floats, got {(self.scale_h, self.scale_w)!r}")
        if self.n * self.c * max(self.h * self.w, self.oh * self.ow) > MAX_ELEMENTS:
            check_elements("x", self.in_shape)
            check_elements("output", self.out_shape)

    @property
    def in_shape(self) -> tuple[int, ...]:
        return (self.n, self.c, self.h, self.w) if self.layout == "NCHW" else (
            self.n, self.h, self.w, self.c)

    @property
    def input_shapes(self) -> dict[str, tuple[int, ...] | None]:
        return {"x": self.in_shape}

    @property
    def out_shape(self) -> tuple[int, ...]:
        return (self.n, self.c, self.oh, self.ow) if self.layout == "NCHW" else (
            self.n, self.oh, self.ow, self.c)

    @property
    def flops(self) -> int:
        """Three multiply-adds per output element (two along W, one along H), times 2."""
        return 6 * self.n * self.c * self.oh * self.ow

    @property
    def bytes(self) -> int:
        """Fewest bytes moved: the input read once, the output written once."""
        elems = self.n * self.c * (self.h * self.w + self.oh * self.ow)
        return elems * ITEMSIZE[self.dtype]

    @property
    def key(self) -> str:
        """The tuning key: everything that can change the best config."""
        scales = "" if self.scale_h is None else f":s{self.scale_h:g}x{self.scale_w:g}"
        return (f"{OP}:{self.layout}:{self.dtype}:n{self.n}c{self.c}h{self.h}w{self.w}"
                f":o{self.oh}x{self.ow}:{self.mode}{scales}")

    def source(self, axis: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(i0, i1, lam) for every output index along ``axis`` (0 = rows, 1 = columns):
        output o reads (1 - lam[o]) * v[i0[o]] + lam[o] * v[i1[o]]."""
        if axis == 0:
            return source_indices(self.h, self.oh, self.scale_h, self.mode)
        return source_indices(self.w, self.ow, self.scale_w, self.mode)


def source_indices(size_in: int, size_out: int, scale: float | None,
                   mode: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Vectorised source coordinates of one axis (the formulas of :mod:`.reference`); int64,
    int64, float64."""
    o = np.arange(size_out, dtype=np.float64)
    ratio = 1.0 / scale if scale is not None else size_in / size_out
    if mode == "align_corners":
        x = o * ((size_in - 1) / (size_out - 1)) if size_out > 1 else np.zeros_like(o)
    elif mode == "asymmetric":
        x = o * ratio
    elif mode == "pytorch_half_pixel" and size_out == 1:
        x = np.zeros_like(o)
    else:  # half_pixel, pytorch_half_pixel
        x = np.maximum(ratio * (o + 0.5) - 0.5, 0.0)
    i0 = np.minimum(np.floor(x), size_in - 1).astype(np.int64)
    lam = np.clip(x - i0, 0.0, 1.0)
    i1 = np.minimum(i0 + 1, size_in - 1)
    return i0, i1, lam


def _resolve_mode(align_corners: object, coordinate_mode: object) -> str:
    if align_corners is not None and not isinstance(align_corners, bool):
        raise TypeError(f"align_corners must be None, True or False, got {align_corners!r}")
    if coordinate_mode is not None and coordinate_mode not in MODES:
        raise ValueError(f"coordinate_mode must be one of {MODES}, got {coordinate_mode!r}")
    if coordinate_mode is None:
        return "align_corners" if align_corners else "half_pixel"
    if align_corners is not None and align_corners != (coordinate_mode == "align_corners"):
        raise ValueError(f"align_corners={align_corners} contradicts"
                         f" coordinate_mode={coordinate_mode!r}")
    return coordinate_mode


def _pair(name: str, value: object, kind: type) -> tuple:
    items = (value, value) if not isinstance(value, Sequence) or isinstance(value, str) else value
    if len(items) != 2 or not all(isinstance(v, kind) and not isinstance(v, bool) for v in items):
        raise TypeError(f"{name} must be a {kind.__name__} or a pair of them, got {value!r}")
    return tuple(items)


def make_problem(shape: tuple[int, ...], dtype: str, size: object = None, *,
                 scale_factor: object = None, align_corners: object = None,
                 coordinate_mode: object = None, layout: str = "NCHW") -> UpsampleProblem:
    """Validate the arguments of ``upsample_bilinear`` and return its Problem.

    Args:
        shape: the input's shape, in ``layout`` order.
        dtype: the input's dtype name.
        size: output (OH, OW) or one int for both; exclusive with ``scale_factor``.
        scale_factor: positive number or pair; output size is floor(I * s).
        align_corners: PyTorch's spelling (True = "align_corners", False = "half_pixel").
        coordinate_mode: ONNX's name: half_pixel, align_corners, asymmetric,
            pytorch_half_pixel. Must agree with ``align_corners`` when both are given.
        layout: "NCHW" or "NHWC".
    """
    layout = check_layout(layout)
    check_dtype("x", dtype)
    shape = check_shape("x", shape, 4, layout)
    n, c, h, w = to_nchw(shape, layout)
    mode = _resolve_mode(align_corners, coordinate_mode)
    if (size is None) == (scale_factor is None):
        raise ValueError(f"give exactly one of size and scale_factor, got size={size!r},"
                         f" scale_factor={scale_factor!r}")
    scales: tuple[float | None, float | None] = (None, None)
    if size is not None:
        oh, ow = _pair("size", size, numbers.Integral)
        oh, ow = int(oh), int(ow)  # NumPy integers too
        if oh < 1 or ow < 1:
            raise ValueError(f"size must be positive, got {size!r}")
    else:
        try:
            sh, sw = (float(s) for s in _pair("scale_factor", scale_factor, numbers.Real))
        except OverflowError:  # an int past float's range
            raise ValueError(f"scale_factor must be positive and finite, got"
                             f" {scale_factor!r}") from None
        if not (sh > 0 and sw > 0 and math.isfinite(sh) and math.isfinite(sw)):
            raise ValueError(f"scale_factor must be positive and finite, got {scale_factor!r}")
        oh, ow = math.floor(h * sh), math.floor(w * sw)
        if oh < 1 or ow < 1:
            raise ValueError(f"scale_factor={scale_factor!r} on input {h}x{w} gives an empty"
                             f" output {oh}x{ow}")
        scales = (sh, sw)
    if max(oh, ow) > MAX_ELEMENTS or n * c * oh * ow > MAX_ELEMENTS:
        what = f"size={size!r}" if size is not None else f"scale_factor={scale_factor!r}"
        raise ValueError(f"{what} on input {shape} gives an output of {n * c * oh * ow}"
                         f" elements; at most 2**{MAX_ELEMENTS.bit_length() - 1} are supported")
    return UpsampleProblem(n, c, h, w, oh, ow, mode, scales[0], scales[1], dtype, layout)



def numba_space(problem: UpsampleProblem) -> Space:
    """Numba: the P * OH output rows (P = N*C planes for NCHW, N for NHWC) are cut into
    ``threads * SPLIT`` equal runs, one task each; a task blends each input row it needs
    along W once. Numba's default schedule gives each thread one contiguous share of the
    tasks, so SPLIT > 1 only helps a work-stealing threading layer (TBB), at the price of
    re-blending up to two rows at each extra task edge. Nothing here causes a recompile;
    ``threads == 1`` runs a serial kernel outside the thread pool."""
    return Space({"SPLIT": (1, 4), "threads": thread_choices(cores())})


def triton_space(problem: UpsampleProblem, target: str | None = None,
                 resources: bool = True) -> Space:
    """Triton: each program writes BLOCK_R output rows (counted across the N*C planes) x
    BLOCK_W columns (NCHW), or BLOCK_P output pixels (flattened over rows) x BLOCK_C
    channels (NHWC); 8 warps only for tiles of at least 1024 values. ``target`` and
    ``resources`` are accepted like the convolution's: no config here comes near a
    shared-memory limit (the compile check asserts it), so they change nothing.

    Tiles of 128 * num_warps to 8192 values (the compile check: 128 x 128 NHWC tiles spill
    kilobytes a thread even on 8 warps)."""
    sizes = ("BLOCK_R * BLOCK_W" if problem.layout == "NCHW" else "BLOCK_P * BLOCK_C")
    rules = (f"{sizes} >= 128 * num_warps", f"{sizes} <= 8192")
    if problem.layout == "NCHW":
        return Space({"BLOCK_R": (8, 16, 32, 64, 128), "BLOCK_W": (16, 32, 64, 128, 256),
                      "num_warps": (2, 4, 8)}, rules)
    return Space({"BLOCK_P": (16, 32, 64, 128, 256), "BLOCK_C": (8, 16, 32, 64, 128),
                  "num_warps": (2, 4, 8)}, rules)


def space(problem: UpsampleProblem, backend: str) -> Space:
    """The tunable configs of ``backend`` for ``problem`` (the reference has one, empty)."""
    return {"numba": numba_space, "triton": triton_space}.get(backend, lambda p: Space({}))(problem)


def default_config(problem: UpsampleProblem, backend: str) -> Config:
    """A heuristic config that is good without tuning."""
    if backend == "numba":  # one even share of the rows a core (the write is the cost)
        return {"SPLIT": 1, "threads": cores()}
    if backend == "triton":  # tuned by hand for an H100 (132 SMs): aim for >= 2 waves
        if problem.layout == "NCHW":
            # Wide rows: 64 x 32 tiles (2048 values, 128-byte row pieces in float32). 16 x 128
            # spilled in float16 on sm_80 with 4 warps and on sm_90 with 8 (compile check).
            return {"BLOCK_R": 64 if problem.ow >= 96 else 16, "BLOCK_W": 32, "num_warps": 4}
        pixels = problem.n * problem.oh * problem.ow
        wide = problem.c >= 128 and pixels * problem.c >= 264 * 32 * 128
        # The compile check (triton 3.9, sm_80 / sm_90): 4096-value tiles spill on 4 warps
        # (255 registers), and 128 x 128 ones spill kilobytes even on 8.
        block_p = 128 if pixels >= 264 * 128 and not wide else 32
        block_c = 128 if wide else 32
        return {"BLOCK_P": block_p, "BLOCK_C": block_c,
                "num_warps": 8 if block_p * block_c >= 4096 else 4}
    return {}
