"""Numba CPU kernels for upsample_bilinear, and their launcher.

The source coordinates of every output row and column, ``(i0, i1, lam)``, come from
``UpsampleProblem.source`` once per call; the kernels only gather and blend. Each axis is
blended exactly as the reference does it, ``(1 - lam) * v0 + lam * v1``, along W first and
then along H, so NaN and Inf propagate the same way (``0 * NaN`` is NaN).

Both layouts are planes of rows: NCHW has N*C planes of OH rows of OW values, NHWC has N
planes of OH rows of OW*C values. A parallel task writes ROWS output rows of one plane. It
blends the input rows it needs along W into a two-row buffer (the gathers: one value per
output column in NCHW, one C-contiguous, vectorised pixel in NHWC), reusing a blended row
while consecutive output rows read it, and writes each output row as a contiguous,
vectorised blend of the two buffer rows. So an 8x upsample blends each input row about
once per task instead of twice per output row, and the bulk of the work is the write.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numba
import numpy as np
from numba import njit, prange

from atrous.kernels.upsample.spec import UpsampleProblem

# No nnan/ninf: NaN and Inf must propagate exactly as in the reference.
FASTMATH = {"contract"}

_KERNELS: dict[tuple[str, int], Callable[..., None]] = {}


@njit(fastmath=FASTMATH, inline="always")
def _blend_columns(src, dst, c0, c1, w0, w1):  # pragma: no cover
    """NCHW: dst[j] = w0[j] * src[c0[j]] + w1[j] * src[c1[j]], one input row along W."""
    for j in range(dst.shape[0]):
        dst[j] = w0[j] * src[c0[j]] + w1[j] * src[c1[j]]


@njit(fastmath=FASTMATH, inline="always")
def _blend_pixels(src, dst, c0, c1, w0, w1):  # pragma: no cover
    """NHWC: the same for rows of pixels, src (W*C,) and dst (OW*C,): whole C-vectors."""
    chans = dst.shape[0] // c0.shape[0]
    for j in range(c0.shape[0]):
        p0 = src[c0[j] * chans:c0[j] * chans + chans]
        p1 = src[c1[j] * chans:c1[j] * chans + chans]
        d = dst[j * chans:j * chans + chans]
        u, v = w0[j], w1[j]
        for c in range(chans):
            d[c] = u * p0[c] + v * p1[c]


def _build(rows: int, blend: Callable[..., None]) -> Callable[..., None]:
    """Jit the kernel with ROWS (a closure constant) and the layout's row blend baked in."""
    @njit(parallel=True, fastmath=FASTMATH)
    def upsample(x, out, r0, r1, rw0, rw1, c0, c1, cw0, cw1):  # pragma: no cover
        planes, oh, width = out.shape
        nrb = (oh + rows - 1) // rows
        for t in prange(planes * nrb):
            plane = t // nrb
            y_lo = (t - plane * nrb) * rows
            src = x[plane]
            buf = np.empty((2, width), out.dtype)
            # Slot ``top`` holds blended input row ``ka``, slot ``1 - top`` holds row ``kb``.
            top, ka, kb = 0, -1, -1
            for oy in range(y_lo, min(y_lo + rows, oh)):
                i0, i1 = r0[oy], r1[oy]
                if i0 != ka:
                    if i0 == kb:  # moved down one row: the lower row becomes the upper one
                        top, ka, kb = 1 - top, kb, -1
                    else:
                        blend(src[i0], buf[top], c0, c1, cw0, cw1)
                        ka = i0
                if i1 != i0 and i1 != kb:
                    blend(src[i1], buf[1 - top], c0, c1, cw0, cw1)
                    kb = i1
                upper = buf[top]
                lower = buf[1 - top] if i1 != i0 else buf[top]
                a, b = rw0[oy], rw1[oy]
                dst = out[plane, oy]
                for j in range(width):  # contiguous over OW (NCHW) or OW*C (NHWC)
                    dst[j] = a * upper[j] + b * lower[j]

    return upsample


def build_kernel(layout: str, rows: int) -> Callable[..., None]:
    """The kernel for one (layout, ROWS), cached in-process.

    The returned function is ``kernel(x, out, r0, r1, rw0, rw1, c0, c1, cw0, cw1)`` with x
    (P, H, W*K) and out (P, OH, OW*K): P planes of rows, where a plane is one (n, c) and
    K = 1 for NCHW, one image and K = C for NHWC. r*/c* are the int64 source rows/columns
    and the weights ``1 - lam`` and ``lam`` of every output row/column, in x's dtype.
    """
    key = (layout, rows)
    if key not in _KERNELS:
        _KERNELS[key] = _build(rows, _blend_columns if layout == "NCHW" else _blend_pixels)
    return _KERNELS[key]


def _axis(problem: UpsampleProblem, axis: int,
          dtype: np.dtype) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    i0, i1, lam = problem.source(axis)
    return i0, i1, (1.0 - lam).astype(dtype), lam.astype(dtype)


def launch(problem: UpsampleProblem, config: dict[str, Any], out: np.ndarray,
           x: np.ndarray) -> None:
    """Write the bilinear resampling of ``x`` into ``out``.

    Args:
        problem: the validated UpsampleProblem.
        config: a full config of ``numba_space(problem)`` (ROWS, threads).
        out: C-contiguous output of ``problem.out_shape`` in ``problem.layout``.
        x: C-contiguous input of ``problem.in_shape`` in ``problem.layout``.
    """
    p = problem
    kernel = build_kernel(p.layout, int(config["ROWS"]))
    rows = _axis(p, 0, x.dtype)
    cols = _axis(p, 1, x.dtype)
    if p.layout == "NCHW":
        x, out = x.reshape(p.n * p.c, p.h, p.w), out.reshape(p.n * p.c, p.oh, p.ow)
    else:
        x, out = x.reshape(p.n, p.h, p.w * p.c), out.reshape(p.n, p.oh, p.ow * p.c)
    previous = numba.get_num_threads()
    numba.set_num_threads(max(1, min(int(config["threads"]), numba.config.NUMBA_NUM_THREADS)))
    try:
        kernel(x, out, *rows, *cols)
    finally:
        numba.set_num_threads(previous)
