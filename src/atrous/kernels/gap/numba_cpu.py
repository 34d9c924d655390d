"""Numba CPU kernels for global_avg_pool, and their launcher.

NCHW is a segmented row reduction: the input is N*C rows of H*W contiguous values and a
parallel task sums ROWS rows. NHWC is a column sum: the input is N images of H*W pixel rows
of C contiguous channels, and a task adds whole pixel rows into a C-long accumulator, so the
loads stream through memory and the adds are vectorised over channels. In both layouts
SPLIT tasks may share the pixels of a row / an image (for batch-1 or few-channel shapes that
would otherwise leave threads idle); their float64 partial sums are added afterwards in a
fixed order, so a result depends only on the config, never on scheduling.

Both kernels add a chunk (a row's run cut into equal chunks of at most CHUNK values;
CHUNK_PIXELS pixel rows) in the input dtype and then flush it into a float64 total, so a
float32 sum's rounding error does not grow with H*W while the hot loop stays in float32
vectors.

Every kernel is a module-level ``njit(cache=True)`` function taking its config values as
runtime arguments (they are loop bounds, so nothing is lost by not baking them in), so a
new process loads machine code from Numba's on-disk cache instead of compiling (about 2 s
otherwise). The kernels take the 4-D arrays, reshape them, allocate and finish the split
partials themselves; ``threads == 1`` runs a serial twin that never enters the thread pool.

What measurements of this code taught (x86-64 with AVX-512, LLVM via Numba 0.68; a 2-core
Zen 4 VM, inputs rotated past the LLC):

* A plain ``s += x[r, j]`` with ``reassoc`` is vectorised by LLVM with several vector
  accumulators when ``j`` is unsigned (signed indices get Numba's negative-index
  wraparound, a select that blocks it) or indexes a slice from 0; hand-written lane
  accumulators (``a0 += v[0]``, ...) are not (they stay scalar, or become gathers with
  ``reassoc``), and were 4x slower on cache-resident rows. A slice costs two atomic
  reference-count updates, so the rows are indexed, not sliced.
* NHWC channel slices narrower than a pixel row (reading BLOCK_C channels at a stride of C)
  were 2-3x slower than whole rows split by pixels, even at 1024 of 2048 channels.
* From DRAM both layouts read at the machine's bandwidth, as fast as a bare flat sum of
  the input; what had kept NCHW at 0.85-0.98x PyTorch was overhead: per-row slices, a
  1089-value row summed as 1024 + 65 (now equal chunks: one), and Python work around the
  kernel (reshapes, a workspace, a NumPy epilogue, thread-count calls), which costs 15-35
  us of a 0.25-1 ms call because the interpreter's data is cold after the kernel swept the
  caches. A 64-byte alignment peel per row did not pay (within noise).
* NHWC at batch 1 wants a few pixel runs per thread (SPLIT 2-4: 0.24 ms) rather than 16
  (0.27 ms); Numba gives each thread an equal contiguous share of the tasks anyway.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numba import njit, prange

from atrous.kernels.gap.spec import GapProblem
from atrous.kernels.threads_cpu import config_threads, with_threads

# No nnan/ninf: NaN and Inf must propagate exactly as in the reference.
FASTMATH = {"reassoc", "contract"}
#: Most values added in the input dtype before a flush into float64 (a bound on rounding
#: error). A row is cut into equal chunks: 1089 values are one chunk, not 1024 + 65.
CHUNK = 2048
#: Pixel rows (NHWC) added in the input dtype before a flush into float64.
CHUNK_PIXELS = 64


@njit(fastmath=FASTMATH, cache=True)
def _row_sum(x, r, lo, hi):  # pragma: no cover
    """sum(x[r, lo:hi]) in float64: equal chunks of at most CHUNK values (a multiple of 64
    long, but the last) each added in x's dtype. Unsigned column indices: no wraparound
    select and no slice (each slice costs two atomic reference-count updates)."""
    n = hi - lo
    step = -(-n // max(1, -(-n // CHUNK)))
    step = np.uint64(max(64, -(-step // 64) * 64))
    start, end = np.uint64(lo), np.uint64(hi)
    total = 0.0
    while start < end:
        stop = min(start + step, end)
        acc = x.dtype.type(0)
        for j in range(start, stop):
            acc += x[r, j]
        total += acc
        start = stop
    return total


@njit(fastmath=FASTMATH, cache=True)
def _rows_task(x, out, ws, rows, split, t):  # pragma: no cover
    """Task ``t`` of the NCHW kernel: run ``t % split`` of rows block ``t // split``."""
    nrows, length = x.shape
    per = (length + split - 1) // split
    s = t % split
    blk = t // split
    lo = min(s * per, length)
    hi = min(lo + per, length)
    for r in range(blk * rows, min(blk * rows + rows, nrows)):
        total = _row_sum(x, r, lo, hi)
        if split == 1:
            out[r] = total / length
        else:
            ws[s, r] = total


@njit(cache=True)
def _finish_split(ws, out, length):  # pragma: no cover
    """out = (sum of the partials ``ws`` (split, M) over split, in order) / length, in
    float64 then cast: the same additions, in the same order, as ``ws.sum(axis=0)``."""
    for m in range(ws.shape[1]):
        total = ws[0, m]
        for s in range(1, ws.shape[0]):
            total += ws[s, m]
        out[m] = total / length


@njit(parallel=True, fastmath=FASTMATH, cache=True)
def gap_rows_parallel(x, out, rows, split):  # pragma: no cover
    """NCHW, x (N, C, H, W) and out (N, C[, 1, 1]): the N*C rows of H*W values, ROWS rows
    a task. With ``split > 1`` each row's ``split`` equal runs are separate tasks whose
    float64 partials are added afterwards, in order."""
    xr = x.reshape(x.shape[0] * x.shape[1], x.shape[2] * x.shape[3])
    o = out.reshape(out.size)
    ws = np.empty((split, xr.shape[0]) if split > 1 else (1, 1), np.float64)
    for t in prange(((xr.shape[0] + rows - 1) // rows) * split):
        _rows_task(xr, o, ws, rows, split, t)
    if split > 1:
        _finish_split(ws, o, xr.shape[1])


@njit(fastmath=FASTMATH, cache=True)
def gap_rows_serial(x, out, rows, split):  # pragma: no cover
    """:func:`gap_rows_parallel` on the calling thread alone."""
    xr = x.reshape(x.shape[0] * x.shape[1], x.shape[2] * x.shape[3])
    o = out.reshape(out.size)
    ws = np.empty((split, xr.shape[0]) if split > 1 else (1, 1), np.float64)
    for t in range(((xr.shape[0] + rows - 1) // rows) * split):
        _rows_task(xr, o, ws, rows, split, t)
    if split > 1:
        _finish_split(ws, o, xr.shape[1])


@njit(fastmath=FASTMATH, cache=True)
def _pixels_task(x, out, ws, split, t):  # pragma: no cover
    """Task ``t`` of the NHWC kernel: run ``t % split`` of the pixels of image ``t // split``."""
    length, chans = x.shape[1], x.shape[2]
    per = (length + split - 1) // split
    s = t % split
    n = t // split
    lo = min(s * per, length)
    hi = min(lo + per, length)
    total = np.zeros(chans, np.float64)
    part = np.empty(chans, x.dtype)
    for start in range(lo, hi, CHUNK_PIXELS):
        for c in range(chans):
            part[c] = 0
        for p in range(start, min(start + CHUNK_PIXELS, hi)):
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
            ws[s, n * chans + c] = total[c]


@njit(parallel=True, fastmath=FASTMATH, cache=True)
def gap_pixels_parallel(x, out, split):  # pragma: no cover
    """NHWC, x (N, H, W, C) and out (N, [1, 1, ]C): N images of H*W pixel rows. With
    ``split > 1`` each image's ``split`` equal runs of pixels are separate tasks whose
    float64 partials are added afterwards, in order."""
    xr = x.reshape(x.shape[0], x.shape[1] * x.shape[2], x.shape[3])
    o = out.reshape(x.shape[0], x.shape[3])
    ws = np.empty((split, o.size) if split > 1 else (1, 1), np.float64)
    for t in prange(xr.shape[0] * split):
        _pixels_task(xr, o, ws, split, t)
    if split > 1:
        _finish_split(ws, o.reshape(o.size), xr.shape[1])


@njit(fastmath=FASTMATH, cache=True)
def gap_pixels_serial(x, out, split):  # pragma: no cover
    """:func:`gap_pixels_parallel` on the calling thread alone."""
    xr = x.reshape(x.shape[0], x.shape[1] * x.shape[2], x.shape[3])
    o = out.reshape(x.shape[0], x.shape[3])
    ws = np.empty((split, o.size) if split > 1 else (1, 1), np.float64)
    for t in range(xr.shape[0] * split):
        _pixels_task(xr, o, ws, split, t)
    if split > 1:
        _finish_split(ws, o.reshape(o.size), xr.shape[1])


def launch(problem: GapProblem, config: dict[str, Any], out: np.ndarray, x: np.ndarray) -> None:
    """Write the mean of ``x`` over H and W into ``out``.

    Args:
        problem: the validated GapProblem.
        config: a full config of ``numba_space(problem)``: ROWS (NCHW only), SPLIT, threads.
        out: C-contiguous output of ``problem.out_shape`` (keepdims only changes its shape).
        x: C-contiguous input of ``problem.in_shape`` in ``problem.layout``.
    """
    # More runs than pixels would leave some empty; harmless, but pointless.
    split = max(1, min(int(config["SPLIT"]), problem.h * problem.w))
    threads = config_threads(config)
    if problem.layout == "NCHW":
        args: tuple = (x, out, int(config["ROWS"]), split)
        kernel = gap_rows_serial if threads == 1 else gap_rows_parallel
    else:
        args = (x, out, split)
        kernel = gap_pixels_serial if threads == 1 else gap_pixels_parallel
    if threads == 1:
        kernel(*args)
    else:
        with_threads(threads, kernel, args)

