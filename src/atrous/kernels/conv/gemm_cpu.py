"""The "gemm" variant of the CPU convolution: one BLAS product per valid tap, in place.

For stride 1 and one group, tap (ky, kx) of a convolution is a matrix product of the input
pixels it reads, (M, Cin), with its (Cin, Cout) weights, added into the output pixels whose
input is inside the image (``ConvProblem.valid_taps``: a rectangle per tap). So each tap is
one GEMM over exactly its valid rectangle; padding costs nothing. The input of a tap is a
block of whole image rows (a view: NHWC rows are contiguous, NCHW channel planes are rows of
a (Cin, H*W) matrix that BLAS reads with a leading dimension) or, for a column window, a
copy of that window made once per distinct window and reused by every tap reading it.

NCHW runs natively: ``out[n]`` is (Cout, H*W) and each product is ``W_tap @ X_window``, so
neither the input nor the output is transposed. A tap that covers the whole output from a
contiguous slab (the centre tap of a "same" convolution) writes straight into the output;
the others go through one scratch buffer and a strided add. The products run in NumPy's
BLAS (OpenBLAS in the x86-64 wheels) with its own threads, held to the config's
``threads``.

Blocked (the config's ``GEMM_BANDS`` row bands per image x ``GEMM_SPLIT`` output channel
blocks, either above 1): each block of the output is one task of the task engine
(``workers_cpu``) with single-threaded BLAS, all taps added into it while it is in cache,
then its bias and ReLU. More, smaller products: what a machine with many cores or small
caches may want; one core's BLAS on a few hundred rows is efficient.
"""

from __future__ import annotations

from functools import partial

import numpy as np

from atrous.kernels.conv.schedule_cpu import Blocking
from atrous.kernels.conv.spec import ConvProblem
from atrous.kernels.workers_cpu import blas_threads, even_ranges, scratch, task_runner


def _covers_output(p: ConvProblem, tap: tuple[int, int, int, int, int, int]) -> bool:
    """True when ``tap`` reads a contiguous slab for every output pixel."""
    _, kx, oy0, oy1, ox0, ox1 = tap
    return (oy0, oy1, ox0, ox1) == (0, p.oh, 0, p.ow) and p.ow == p.w and \
        kx * p.dilation[1] - p.padding[2] == 0


def run(problem: ConvProblem, wp: np.ndarray, bias: np.ndarray | None, x: np.ndarray,
        out: np.ndarray, blocking: Blocking | None = None) -> None:
    """Write ``conv(x) + bias`` (and ReLU) into ``out``, both C-contiguous in the layout.

    Args:
        problem: a ConvProblem that ``spec.gemm_supported`` accepts.
        wp: packed weights (kh, kw, Cout, Cin), C-contiguous.
        bias: (Cout,) or None.
        x, out: input and output in ``problem.layout``.
        blocking: the cutting of the work (the config's keys; None: the defaults).
    """
    blocking = blocking or Blocking()
    if blocking.bands > 1 or blocking.splits > 1:
        _blocked(problem, wp, bias, x, out, blocking)
        return
    with blas_threads(blocking.threads):
        _whole(problem, wp, x, out, blocking.merge)
    epilogue(problem, bias, out)


def _whole(problem: ConvProblem, wp: np.ndarray, x: np.ndarray, out: np.ndarray,
           merge: bool) -> None:
    """The unblocked products: per image, each tap's whole valid rectangle at once."""
    p = problem
    nchw = p.layout == "NCHW"
    taps = p.valid_taps
    first = next((t for t in taps if _covers_output(p, t)), None)
    if first is not None:  # it writes the output, so it must run before any tap adds
        taps = [first] + [t for t in taps if t is not first]
    scratch = np.empty(p.cout * p.oh * p.ow, out.dtype)
    # NHWC: a tap reading whole images (a 1x1 conv, the centre of a "same" one) is one
    # product over the batch's (N*H*W, Cin) matrix; measured 17-20 % faster than N products.
    batched = merge and first is not None and not nchw and p.oh == p.h and \
        first[0] * p.dilation[0] - p.padding[0] == 0
    if batched:
        np.matmul(x.reshape(-1, p.cin), wp[first[0], first[1]].T, out=out.reshape(-1, p.cout))
    for i in range(p.n):
        xi, oi = x[i], out[i]
        windows: dict[tuple[int, int], np.ndarray] = {}
        if first is None:
            oi[...] = 0
        for tap in taps:
            if batched and tap is first:
                continue
            ky, kx, oy0, oy1, ox0, ox1 = tap
            nr, nw = oy1 - oy0, ox1 - ox0
            iy0 = oy0 + ky * p.dilation[0] - p.padding[0]
            ix0 = ox0 + kx * p.dilation[1] - p.padding[2]
            if nw == p.w:  # whole input rows: a view
                src = xi
            else:  # a column window, copied once and shared by the taps that read it
                if (ix0, nw) not in windows:
                    cols = xi[:, :, ix0:ix0 + nw] if nchw else xi[:, ix0:ix0 + nw]
                    windows[ix0, nw] = np.ascontiguousarray(cols)
                src = windows[ix0, nw]
            m = nr * nw
            direct = tap is first
            if nchw:
                a = src[:, iy0:iy0 + nr].reshape(p.cin, m)
                prod = oi.reshape(p.cout, m) if direct else scratch[:p.cout * m].reshape(p.cout, m)
                np.matmul(wp[ky, kx], a, out=prod)
                if not direct:
                    oi[:, oy0:oy1, ox0:ox1] += prod.reshape(p.cout, nr, nw)
            else:
                a = src[iy0:iy0 + nr].reshape(m, p.cin)
                prod = oi.reshape(m, p.cout) if direct else scratch[:m * p.cout].reshape(m, p.cout)
                np.matmul(a, wp[ky, kx].T, out=prod)
                if not direct:
                    oi[oy0:oy1, ox0:ox1] += prod.reshape(nr, nw, p.cout)


def mergeable(p: ConvProblem) -> bool:
    """Whether ``GEMM_MERGE`` changes anything: NHWC batches with a tap reading whole
    images (a 1x1 conv, the centre of a "same" one)."""
    return p.layout == "NHWC" and p.n > 1 and p.oh == p.h and p.ow == p.w and any(
        _covers_output(p, t) and t[0] * p.dilation[0] - p.padding[0] == 0
        for t in p.valid_taps)


def _blocked(p: ConvProblem, wp: np.ndarray, bias: np.ndarray | None, x: np.ndarray,
             out: np.ndarray, blocking: Blocking) -> None:
    """One task per (image, row band, channel block): every tap's product into the block."""
    blocks = [(i, rows, cols) for i in range(p.n) for rows in even_ranges(p.oh, blocking.bands)
              for cols in even_ranges(p.cout, blocking.splits)]
    with task_runner(blocking.threads) as run_tasks:
        run_tasks([partial(_block, p, wp, bias, x, out, *b) for b in blocks])


def _block(p: ConvProblem, wp: np.ndarray, bias: np.ndarray | None, x: np.ndarray,
           out: np.ndarray, i: int, rows: tuple[int, int], cols: tuple[int, int],
           worker: int) -> None:
    """Output rows ``rows`` and channels ``cols`` of image ``i``, bias and ReLU included."""
    nchw = p.layout == "NCHW"
    (r0, r1), (c0, c1) = rows, cols
    cb = c1 - c0
    xi, oi = x[i], out[i]
    block = oi[c0:c1, r0:r1] if nchw else oi[r0:r1, :, c0:c1]
    block[...] = 0
    # input rows any tap of this band reads: a column window copies only those
    lo = max(0, r0 - p.padding[0])
    hi = min(p.h, r1 - 1 + (p.kh - 1) * p.dilation[0] - p.padding[0] + 1)
    windows: dict[tuple[int, int], np.ndarray] = {}
    for ky, kx, oy0, oy1, ox0, ox1 in p.valid_taps:
        a0, a1 = max(oy0, r0), min(oy1, r1)
        if a0 >= a1:
            continue
        nr, nw = a1 - a0, ox1 - ox0
        m = nr * nw
        iy0 = a0 + ky * p.dilation[0] - p.padding[0]
        ix0 = ox0 + kx * p.dilation[1] - p.padding[2]
        if nw == p.w:  # whole input rows: a view
            src, y = xi, iy0
        else:
            if (ix0, nw) not in windows:
                cols_in = xi[:, lo:hi, ix0:ix0 + nw] if nchw else xi[lo:hi, ix0:ix0 + nw]
                windows[ix0, nw] = np.ascontiguousarray(cols_in)
            src, y = windows[ix0, nw], iy0 - lo
        w = wp[ky, kx, c0:c1]
        prod = scratch("gemm-block", (m * cb,), out.dtype)
        if nchw:
            a = src[:, y:y + nr].reshape(p.cin, m)
            np.matmul(w, a, out=prod.reshape(cb, m))
            oi[c0:c1, a0:a1, ox0:ox1] += prod.reshape(cb, nr, nw)
        else:
            a = src[y:y + nr].reshape(m, p.cin)
            np.matmul(a, w.T, out=prod.reshape(m, cb))
            oi[a0:a1, ox0:ox1, c0:c1] += prod.reshape(nr, nw, cb)
    if bias is not None:
        block += bias[c0:c1].reshape(-1, 1, 1) if nchw else bias[c0:c1]
    if p.activation == "relu":
        np.maximum(block, 0, out=block)


def epilogue(p: ConvProblem, bias: np.ndarray | None, out: np.ndarray) -> None:
    """``out += bias`` per channel, then ReLU if asked (np.maximum keeps NaN, as torch)."""
    if bias is not None:
        out += bias.reshape(-1, 1, 1) if p.layout == "NCHW" else bias
    if p.activation == "relu":
        np.maximum(out, 0, out=out)
