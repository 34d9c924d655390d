"""The Winograd variant's filter transform: every transformed filter a tiling needs, from
the packed 3x3 taps, in one pass over them as tasks on every core.

A filter pair (fy, fx) of a tiling (``winograd_cpu.Axis.filters``) is the (Cin, Cout)
matrix ``sum_{ky,kx} fy[ky] fx[kx] taps[ky, kx]``. There are 9 to 64 of them at ASPP's
shapes, 1-7x the weights' bytes, so the transform is memory-bound: a BLAS product with
K = 9 followed by transposes took 4-6x longer than this kernel, which keeps a block of
channels' 9 taps in cache while it writes every filter's rows from them.
"""

from __future__ import annotations

from functools import partial

import numpy as np
from numba import njit

from atrous.kernels.workers_cpu import even_ranges, task_runner

#: Channels per task of the filter transform: its (9, block, A) tile stays in L2.
FILTER_BLOCK = 32


@njit(nogil=True, cache=True)
def _mix(taps, mix, out, c0, c1, transpose):  # pragma: no cover - jitted
    """``out[k, c] = sum_t mix[k, t] taps[t, c]`` for the channels c in [c0, c1) of
    ``out``'s second axis, every one of the 9 tap terms included (a NaN weight stays NaN).

    ``taps`` is (9, A, B). Without ``transpose``, out is (K, A, B) and c indexes A; with
    it, out is (K, B, A), c indexes B, and the block's (9, A, block) slab is first turned
    into (9, block, A) in a scratch tile, so the writes stay contiguous. Per channel the 9
    source rows stay in L1 while all K filters are written from them.
    """
    a = taps.shape[1]
    nc = c1 - c0
    width = out.shape[2]
    tile = np.empty((9, nc, width), taps.dtype)
    for t in range(9):
        if transpose:
            for i in range(a):
                for c in range(nc):
                    tile[t, c, i] = taps[t, i, c0 + c]
        else:
            tile[t] = taps[t, c0:c1]
    for c in range(nc):
        s0, s1, s2 = tile[0, c], tile[1, c], tile[2, c]
        s3, s4, s5 = tile[3, c], tile[4, c], tile[5, c]
        s6, s7, s8 = tile[6, c], tile[7, c], tile[8, c]
        for k in range(mix.shape[0]):
            m0, m1, m2, m3, m4 = mix[k, 0], mix[k, 1], mix[k, 2], mix[k, 3], mix[k, 4]
            m5, m6, m7, m8 = mix[k, 5], mix[k, 6], mix[k, 7], mix[k, 8]
            o = out[k, c0 + c]
            for i in range(width):
                o[i] = (m0 * s0[i] + m1 * s1[i] + m2 * s2[i] + m3 * s3[i] + m4 * s4[i]
                        + m5 * s5[i] + m6 * s6[i] + m7 * s7[i] + m8 * s8[i])


def mixed(taps: np.ndarray, keys: list[tuple[tuple[float, ...], tuple[float, ...]]],
           transpose: bool) -> np.ndarray:
    """The filters ``sum fy[ky] fx[kx] taps[ky, kx]`` of every (fy, fx) in ``keys``, as one
    (K, A, B) array from (3, 3, A, B) taps, or (K, B, A) with ``transpose``: blocks of
    channels as tasks on every core (memory-bound: the filters are 1-7x the weights)."""
    taps9 = np.ascontiguousarray(taps.reshape(9, *taps.shape[2:]))
    mix = np.array([np.outer(fy, fx).ravel() for fy, fx in keys], taps.dtype)
    a, b = taps9.shape[1:]
    out = np.empty((len(keys), b, a) if transpose else (len(keys), a, b), taps.dtype)
    blocks = even_ranges(out.shape[1], max(1, -(-out.shape[1] // FILTER_BLOCK)))

    def block(rows: tuple[int, int], worker: int) -> None:
        _mix(taps9, mix, out, rows[0], rows[1], transpose)

    with task_runner() as run_tasks:
        run_tasks([partial(block, rows) for rows in blocks])
    return out
