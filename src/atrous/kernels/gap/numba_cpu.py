"""Numba CPU kernels for global_avg_pool, and their launcher.

NCHW is a segmented row reduction: the input is N*C rows of H*W contiguous values and a
parallel task sums ROWS rows. NHWC is a column sum: the input is N images of H*W pixel rows
of C contiguous channels, and a task adds whole pixel rows into a C-long accumulator, so the
loads stream through memory and the adds are vectorised over channels. In both layouts
SPLIT tasks may share the pixels of a row / an image (for batch-1 or few-channel shapes that
would otherwise leave threads idle); their float64 partial sums are added afterwards in a
fixed order, so a result depends only on the config, never on scheduling.

Both kernels add a chunk (CHUNK values, CHUNK_PIXELS pixel rows) in the input dtype and then
flush it into a float64 total, so a float32 sum's rounding error does not grow with H*W
while the hot loop stays in float32 vectors.

What measurements of this code taught (x86-64 with AVX-512, LLVM via Numba 0.68):

* A plain ``s += seg[i]`` over a slice that starts at 0, with ``reassoc``, is vectorised by
  LLVM with several vector accumulators; hand-written lane accumulators (``a0 += v[0]``,
  ...) are not (they stay scalar, or become gathers with ``reassoc``), and were 4x slower
  on cache-resident rows. Indexing ``row[start + i]`` also blocks vectorisation: Numba's
  negative-index wraparound turns the address into a select.
* NHWC channel slices narrower than a pixel row (reading BLOCK_C channels at a stride of C)
  were 2-3x slower than whole rows split by pixels, even at 1024 of 2048 channels.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numba
import numpy as np
from numba import njit, prange

from atrous.kernels.gap.spec import GapProblem

# No nnan/ninf: NaN and Inf must propagate exactly as in the reference.
FASTMATH = {"reassoc", "contract"}
#: Values added in the input dtype before a flush into float64 (a bound on rounding error).
CHUNK = 1024
#: Pixel rows (NHWC) added in the input dtype before a flush into float64.
CHUNK_PIXELS = 64

_ROWS_KERNELS: dict[int, Callable[..., None]] = {}
_PIXELS_KERNELS: dict[int, Callable[..., None]] = {}


def build_rows_kernel(rows: int) -> Callable[..., None]:
    """The NCHW kernel for ROWS rows a task, cached in-process.

    The returned function is ``kernel(x, out, ws, split, zero)``: x (R, L) rows and out (R,).
    With ``split == 1`` it writes the row means to ``out``; otherwise ``ws`` (split, R)
    float64 receives the sum of the s-th of ``split`` equal runs of each row. ``zero`` is a
    0 of x's dtype, the type of the chunk accumulator.
    """
    if rows in _ROWS_KERNELS:
        return _ROWS_KERNELS[rows]
    chunk = CHUNK

    @njit(parallel=True, fastmath=FASTMATH)
    def gap_rows(x, out, ws, split, zero):  # pragma: no cover
        nrows, length = x.shape
        per = (length + split - 1) // split
        nblk = (nrows + rows - 1) // rows
        for t in prange(nblk * split):
            s = t % split
            blk = t // split
            lo = min(s * per, length)
            hi = min(lo + per, length)
            for r in range(blk * rows, min(blk * rows + rows, nrows)):
                row = x[r, lo:hi]
                total = 0.0
                for start in range(0, hi - lo, chunk):
                    # A slice starting at 0: its loads are provably contiguous.
                    seg = row[start:start + chunk]
                    acc = zero
                    for i in range(seg.shape[0]):
                        acc += seg[i]
                    total += acc
                if split == 1:
                    out[r] = total / length
                else:
                    ws[s, r] = total

    _ROWS_KERNELS[rows] = gap_rows
    return gap_rows


def build_pixels_kernel(chunk_pixels: int) -> Callable[..., None]:
    """The NHWC kernel, cached in-process (keyed by its pixel chunk).

    The returned function is ``kernel(x, out, ws, split)``: x (N, L, C) and out (N, C).
    With ``split == 1`` it writes the means to ``out``; otherwise ``ws`` (split, N, C)
    float64 receives the sum over the s-th of ``split`` equal runs of pixels.
    """
    if chunk_pixels in _PIXELS_KERNELS:
        return _PIXELS_KERNELS[chunk_pixels]

    @njit(parallel=True, fastmath=FASTMATH)
    def gap_pixels(x, out, ws, split):  # pragma: no cover
        n_img, length, chans = x.shape
        per = (length + split - 1) // split
        for t in prange(n_img * split):
            s = t % split
            n = t // split
            lo = min(s * per, length)
            hi = min(lo + per, length)
            total = np.zeros(chans, np.float64)
            part = np.empty(chans, x.dtype)
            for start in range(lo, hi, chunk_pixels):
                for c in range(chans):
                    part[c] = 0
                for p in range(start, min(start + chunk_pixels, hi)):
                    xs = x[n, p]
                    for c in range(chans):  # contiguous: vectorised over channels
                        part[c] += xs[c]
                for c in range(chans):
                    total[c] += part[c]
            if split == 1:
                for c in range(chans):
                    out[n, c] = total[c] / length
            else:
                for c in range(chans):
                    ws[s, n, c] = total[c]

    _PIXELS_KERNELS[chunk_pixels] = gap_pixels
    return gap_pixels


def launch(problem: GapProblem, config: dict[str, Any], out: np.ndarray, x: np.ndarray) -> None:
    """Write the mean of ``x`` over H and W into ``out``.

    Args:
        problem: the validated GapProblem.
        config: a full config of ``numba_space(problem)``: ROWS (NCHW only), SPLIT, threads.
        out: C-contiguous output of ``problem.out_shape`` (keepdims only changes its shape).
        x: C-contiguous input of ``problem.in_shape`` in ``problem.layout``.
    """
    p = problem
    length = p.h * p.w
    # More runs than pixels would leave some empty; harmless, but pointless.
    split = max(1, min(int(config["SPLIT"]), length))
    out2 = out.reshape(p.n * p.c) if p.layout == "NCHW" else out.reshape(p.n, p.c)
    # The float64 partials of a split; a dummy of the right rank when there is none.
    ws = np.empty((split, *out2.shape) if split > 1 else (1,) * (out2.ndim + 1), np.float64)
    previous = numba.get_num_threads()
    numba.set_num_threads(max(1, min(int(config["threads"]), numba.config.NUMBA_NUM_THREADS)))
    try:
        if p.layout == "NCHW":
            kernel = build_rows_kernel(int(config["ROWS"]))
            kernel(x.reshape(p.n * p.c, length), out2, ws, split, x.dtype.type(0))
        else:
            kernel = build_pixels_kernel(CHUNK_PIXELS)
            kernel(x.reshape(p.n, length, p.c), out2, ws, split)
    finally:
        numba.set_num_threads(previous)
    if split > 1:  # partials added in split order, then divided in float64 as the reference
        np.divide(ws.sum(axis=0), length, out=out2, casting="unsafe")
