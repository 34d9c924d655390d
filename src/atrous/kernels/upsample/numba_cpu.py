"""Numba CPU kernels for upsample_bilinear, and their launcher.

The source coordinates of every output row and column come from
``UpsampleProblem.source``; the launcher turns them into tables (below) once per problem
and dtype and keeps them, so a repeated call does no NumPy work. The kernels only gather
and blend. Each axis is blended exactly as the reference does it,
``(1 - lam) * v0 + lam * v1``, along W first and then along H, so NaN and Inf propagate the
same way (``0 * NaN`` is NaN, and ``0 * Inf`` too).

Both layouts are planes of rows: NCHW has N*C planes of OH rows of OW values, NHWC has N
planes of OH rows of OW*C values (K = 1 or C values a pixel). The P*OH output rows, counted
plane after plane, are cut into ``threads * SPLIT`` equal runs, one parallel task each; a
task may cross into the next plane. A task blends the input rows it needs along W into a
two-row buffer, reusing a blended row while consecutive output rows read it, and writes
each output row as a contiguous, vectorised blend of the two buffer rows. So an 8x upsample
blends each input row about once, and the bulk of the work is the write.

The W blend walks *runs*: maximal spans of output columns that read the same two input
columns (k0, k1). A run loads its two source values (NCHW) or pixels (NHWC) once and
blends them with the contiguous weights of its columns, with no per-column index loads.

Every kernel is a module-level ``njit(cache=True)`` function whose config values are
runtime arguments, so a new process loads machine code from Numba's on-disk cache instead
of compiling (about 2 s per layout and dtype otherwise). The kernels take the 4-D arrays
and view them as planes themselves, and ``threads == 1`` runs a serial twin that never
enters the thread pool, so the launcher does little Python work per call.

What measurements of this code taught (2-core AMD EPYC / Zen 4 VM, Numba 0.68, inputs and
outputs rotated past the LLC; a bare parallel fill of the output writes 27-29 GB/s there):

* The W blend was the hidden cost, not the write: gathering ``src[c0[j]]`` column by
  column is scalar code (Numba's negative-index wraparound and LLVM's cost model keep it
  from vectorising) at ~0.7 ns a column, against ~0.06 ns a column for the H blend that
  writes the output; on 65x65 -> 520x520 a kernel with the W blend removed ran 1.9x
  faster. Runs with unsigned indices (no wraparound select, no per-run slice and its two
  atomic reference-count updates) cut 33x33 -> 513x513 NCHW from 1.38 to 0.93 ms and
  65x65 -> 520x520 from 1.45 to 1.0 ms; the logits kernels now run at 71-82% of the fill's
  speed, the 1x1 pooling-branch ones at 81-99%.
* Work split evenly across threads beats many small tasks: Numba's default schedule hands
  each thread one contiguous share of the iterations, so with 9 tasks on 2 threads one
  thread did 5, and every task edge re-blends up to two input rows. SPLIT > 1 measured
  the same as 1 here; one thread was 1.3-1.9x slower on every DeepLabV3 shape.
* Non-temporal stores (``vmovntps`` through an LLVM intrinsic, rows peeled to 64-byte
  alignment) wrote 16.8 GB/s against 26 GB/s for plain stores: not used. Unsigned indices
  instead of slices for the output rows changed nothing once the writes go to DRAM.
* Per-call Python work dominated the 1x1 -> 33x33 pooling-branch upsample (~50 us): the
  source coordinates and weight casts (~19 us) are now built once per problem and dtype,
  and the thread count is only set when it differs. What is left of the gap to PyTorch on
  NHWC there is the benchmark's: PyTorch allocates its output each call and gets the same
  cache-hot block back, while ``out`` buffers are rotated cold; given rotated ``out=``
  buffers too, PyTorch's own kernel took 1.4-1.9x longer (0.071 vs 0.052 ms at batch 1).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numba import njit, prange

from atrous.kernels.threads_cpu import config_threads, with_threads
from atrous.kernels.upsample.spec import UpsampleProblem

# No nnan/ninf: NaN and Inf must propagate exactly as in the reference.
FASTMATH = {"contract"}
#: Problems whose tables are kept (all are dropped past this many, then rebuilt on use).
TABLES_KEPT = 256


@njit(fastmath=FASTMATH, cache=True)
def _blend_along_w(src, dst, starts, k0, k1, cw0, cw1, chans):  # pragma: no cover
    """dst = one input row (W*K values) blended along W into OW*K values, run by run:
    output column j of run q is ``cw0[j] * src[k0[q]] + cw1[j] * src[k1[q]]`` (K = chans
    values a column).

    Indices are unsigned: Numba then emits no negative-index wraparound, so the loops over
    a run's columns (NCHW) and a pixel's channels (NHWC) vectorise without slicing (a slice
    costs two atomic reference-count updates, per run or per pixel)."""
    k = np.uint64(chans)
    if chans == 1:
        for q in range(k0.shape[0]):
            v0, v1 = src[np.uint64(k0[q])], src[np.uint64(k1[q])]
            for j in range(np.uint64(starts[q]), np.uint64(starts[q + 1])):
                dst[j] = cw0[j] * v0 + cw1[j] * v1
    else:
        for q in range(k0.shape[0]):
            b0, b1 = np.uint64(k0[q]) * k, np.uint64(k1[q]) * k
            for j in range(np.uint64(starts[q]), np.uint64(starts[q + 1])):
                u, v, o = cw0[j], cw1[j], j * k
                for c in range(k):  # contiguous channels: vectorised
                    dst[o + c] = u * src[b0 + c] + v * src[b1 + c]


@njit(fastmath=FASTMATH, cache=True)
def _task(x, out, r0, r1, rw0, rw1, starts, k0, k1, cw0, cw1, chans, t,
          tasks):  # pragma: no cover
    """Write output rows [t * R / tasks, (t + 1) * R / tasks) of the R = P * OH rows."""
    planes, oh, width = out.shape
    total = planes * oh
    g, g_end = t * total // tasks, (t + 1) * total // tasks
    buf = np.empty((2, width), out.dtype)
    while g < g_end:
        plane = g // oh
        y_lo = g - plane * oh
        y_hi = min(oh, y_lo + g_end - g)
        g += y_hi - y_lo
        src = x[plane]
        # Slot ``top`` holds blended input row ``ka``, slot ``1 - top`` holds row ``kb``.
        top, ka, kb = 0, -1, -1
        for oy in range(y_lo, y_hi):
            i0, i1 = r0[oy], r1[oy]
            if i0 != ka:
                if i0 == kb:  # moved down one row: the lower row becomes the upper one
                    top, ka, kb = 1 - top, kb, -1
                else:
                    _blend_along_w(src[i0], buf[top], starts, k0, k1, cw0, cw1, chans)
                    ka = i0
            if i1 != i0 and i1 != kb:
                _blend_along_w(src[i1], buf[1 - top], starts, k0, k1, cw0, cw1, chans)
                kb = i1
            upper = buf[top]
            lower = buf[1 - top] if i1 != i0 else buf[top]
            a, b = rw0[oy], rw1[oy]
            dst = out[plane, oy]
            for j in range(width):  # contiguous over OW (NCHW) or OW*C (NHWC)
                dst[j] = a * upper[j] + b * lower[j]


@njit(cache=True)
def _planes(x, out, nhwc):  # pragma: no cover
    """x and out as planes of rows (P, H, W*K) and (P, OH, OW*K), and K."""
    n, a, b, c = x.shape
    if nhwc:  # (N, H, W, C): N planes of rows of W*C values
        return x.reshape(n, a, b * c), out.reshape(n, out.shape[1], out.shape[2] * c), c
    return x.reshape(n * a, b, c), out.reshape(n * a, out.shape[2], out.shape[3]), 1


@njit(parallel=True, fastmath=FASTMATH, cache=True)
def upsample_parallel(x, out, nhwc, tasks, r0, r1, rw0, rw1, starts, k0, k1, cw0,
                      cw1):  # pragma: no cover
    """x and out 4-D in NCHW (``nhwc`` False) or NHWC: ``tasks`` equal runs of output
    rows, in parallel; the rest are the tables of :func:`tables`."""
    xp, op, chans = _planes(x, out, nhwc)
    for t in prange(tasks):
        _task(xp, op, r0, r1, rw0, rw1, starts, k0, k1, cw0, cw1, chans, t, tasks)


@njit(fastmath=FASTMATH, cache=True)
def upsample_serial(x, out, nhwc, tasks, r0, r1, rw0, rw1, starts, k0, k1, cw0,
                    cw1):  # pragma: no cover
    """:func:`upsample_parallel` on the calling thread alone."""
    xp, op, chans = _planes(x, out, nhwc)
    for t in range(tasks):
        _task(xp, op, r0, r1, rw0, rw1, starts, k0, k1, cw0, cw1, chans, t, tasks)


def runs_of(i0: np.ndarray, i1: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(starts, k0, k1): the maximal spans of output indices reading the same two inputs.

    Span q covers outputs ``starts[q]:starts[q + 1]``, which read inputs ``k0[q]`` and
    ``k1[q]``.
    """
    new = np.ones(i0.shape[0], dtype=bool)
    new[1:] = (i0[1:] != i0[:-1]) | (i1[1:] != i1[:-1])
    first = np.flatnonzero(new)
    starts = np.append(first, i0.shape[0]).astype(np.int64)
    return starts, i0[first].astype(np.int64), i1[first].astype(np.int64)


_TABLES: dict[tuple[UpsampleProblem, np.dtype], tuple[np.ndarray, ...]] = {}


def tables(problem: UpsampleProblem, dtype: np.dtype) -> tuple[np.ndarray, ...]:
    """The kernels' read-only tables of ``problem`` in ``dtype``, built once per process.

    Returns ``(r0, r1, rw0, rw1, starts, k0, k1, cw0, cw1)``: the two source rows of every
    output row and their weights ``1 - lam`` and ``lam``; the runs of output columns
    (:func:`runs_of`) and the two weights of every output column.
    """
    key = (problem, dtype)
    found = _TABLES.get(key)
    if found is None:
        r0, r1, rlam = problem.source(0)
        c0, c1, clam = problem.source(1)
        found = (r0, r1, (1.0 - rlam).astype(dtype), rlam.astype(dtype), *runs_of(c0, c1),
                 (1.0 - clam).astype(dtype), clam.astype(dtype))
        for a in found:
            a.flags.writeable = False
        if len(_TABLES) >= TABLES_KEPT:
            _TABLES.clear()
        _TABLES[key] = found
    return found


def launch(problem: UpsampleProblem, config: dict[str, Any], out: np.ndarray,
           x: np.ndarray) -> None:
    """Write the bilinear resampling of ``x`` into ``out``.

    Args:
        problem: the validated UpsampleProblem.
        config: a full config of ``numba_space(problem)`` (SPLIT, threads).
        out: C-contiguous output of ``problem.out_shape`` in ``problem.layout``.
        x: C-contiguous input of ``problem.in_shape`` in ``problem.layout``.
    """
    threads = config_threads(config)
    args = (x, out, problem.layout == "NHWC", threads * int(config["SPLIT"]),
            *tables(problem, x.dtype))
    if threads == 1:
        upsample_serial(*args)
    else:
        with_threads(threads, upsample_parallel, args)

