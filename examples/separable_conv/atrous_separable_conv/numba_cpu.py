"""The Numba CPU kernel of separable_conv2d, generated from a config, and its launcher.

One parallel work item is one output row ``(n, oy)`` in NHWC. It first computes the
depthwise result of that row into a private (OW, C) buffer, tap by tap over the valid
rectangle of each tap only (``SepConvProblem.valid_taps``), vectorised over the contiguous
channels. Then the pointwise 1x1 convolution is a small GEMM (OW x C) @ (C x Cout), done in
register tiles of BLOCK_OW pixels x BLOCK_CO output channels: each tile element is a dot
product over C of a depthwise row and a pointwise weight row (both contiguous), with the
bias and the ReLU applied as the tile is stored. The depthwise row never leaves the cache,
which is the point of fusing the two convolutions.

The config is baked into generated source (atrous' kernel codegen writes it to the kernel
cache so Numba compiles it once per machine):

* BLOCK_OW, BLOCK_CO: the register tile (compile-time constants, so the tile's loads,
  multiply-adds and stores are unrolled into straight-line code);
* ORDER: "co_outer" walks output-channel blocks outside pixel tiles (a block's weight rows
  stay in L1 while the pixels stream past), "ox_outer" the other way round;
* threads: Numba's thread count for the call (not baked in: no recompile).

NCHW inputs are transposed to NHWC and the output back (two copies, cheap next to the
GEMM).

The config's PW picks how the pointwise step runs: "tile" is the fused kernel above;
"blas" runs the depthwise rows of the whole batch first (the same generated
``depthwise_row``, in parallel) and then the pointwise convolution as one BLAS product per
image, written straight in the output's layout, with bias and ReLU in place after. It
moves the depthwise result through memory once but gets BLAS's packed GEMM, which wins
when C and Cout are large.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numba
import numpy as np

from atrous.kernels import codegen
from atrous_separable_conv.spec import SepConvProblem

# No nnan/ninf: NaN and Inf must propagate exactly as in the reference.
FASTMATH = ("arcp", "contract", "reassoc")


def _tile_source(bo: int, bc: int) -> str:
    """Source of the ``bo`` x ``bc`` register tile ``tile(drow, wp, bias, orow, ox, nx, co,
    nc, kn, relu)``: ``orow[ox+j, co+c] = act(bias[co+c] + drow[ox+j] . wp[co+c])``.

    Only the first ``nx`` pixels and ``nc`` channels are stored; the other tile elements
    re-read the last valid row, so a ragged edge runs the same full-speed tile. The rows
    are slices from 0 (``[:kn]``), as in the built-in convolution's tile: indexing a whole
    row with the signed ``k`` left Numba's negative-index check in the loop (37 against
    27 GFLOP/s, best of 5, one thread, on the 2048->256 33x33 ASPP shape).
    """
    tile = [(j, c) for j in range(bo) for c in range(bc)]
    lines = ["@njit(cache=True, fastmath=FASTMATH)",
             "def tile(drow, wp, bias, orow, ox, nx, co, nc, kn, relu):"]
    lines += [f"    d{j} = drow[ox + min({j}, nx - 1), :kn]" for j in range(bo)]
    lines += [f"    w{c} = wp[co + min({c}, nc - 1), :kn]" for c in range(bc)]
    # Accumulators start at the bias, so they have the arrays' dtype (float32 stays float32).
    lines += [f"    a{j}_{c} = bias[co + min({c}, nc - 1)]" for j, c in tile]
    lines.append("    for k in range(kn):")
    lines += [f"        dv{j} = d{j}[k]" for j in range(bo)]
    lines += [f"        wv{c} = w{c}[k]" for c in range(bc)]
    lines += [f"        a{j}_{c} += dv{j} * wv{c}" for j, c in tile]
    for j, c in tile:
        cond = " and ".join(([f"{j} < nx"] if j else []) + ([f"{c} < nc"] if c else []))
        body = [f"if relu and a{j}_{c} < 0:", f"    a{j}_{c} = 0",  # NaN < 0 is False
                f"orow[ox + {j}, co + {c}] = a{j}_{c}"]
        indent = "        " if cond else "    "
        if cond:
            lines.append(f"    if {cond}:")
        lines += [indent + b for b in body]
    return "\n".join(lines) + "\n"


_LOOPS = {
    "co_outer": ("for co in range(0, cout, BC):", "    for ox in range(0, ow, BO):"),
    "ox_outer": ("for ox in range(0, ow, BO):", "    for co in range(0, cout, BC):"),
}

#: The kernel around the tile; BO, BC and the pointwise loop nest are substituted.
_KERNEL_SOURCE = '''
@njit(cache=True, fastmath=FASTMATH)
def depthwise_row(x, wd, taps, n, oy, drow, sh, sw, dh, dw, pt, pl):
    """drow[ox, c] = sum over the valid taps of x[n, iy, ix, c] * wd[ky, kx, c]."""
    chans = x.shape[3]
    for ox in range(drow.shape[0]):
        for ch in range(chans):
            drow[ox, ch] = 0
    for t in range(taps.shape[0]):
        if oy < taps[t, 2] or oy >= taps[t, 3]:
            continue
        ky, kx = taps[t, 0], taps[t, 1]
        xrow = x[n, oy * sh + ky * dh - pt]
        wv = wd[ky, kx]
        for ox in range(taps[t, 4], taps[t, 5]):
            xs = xrow[ox * sw + kx * dw - pl]
            dr = drow[ox]
            for ch in range(chans):  # contiguous channels: vectorised
                dr[ch] += xs[ch] * wv[ch]


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def depthwise(x, wd, taps, d, sh, sw, dh, dw, pt, pl):
    """d[n, oy] = the depthwise row of every output row (the "blas" variant's step one)."""
    n_img, oh = d.shape[0], d.shape[1]
    for r in prange(n_img * oh):
        n = r // oh
        oy = r - n * oh
        depthwise_row(x, wd, taps, n, oy, d[n, oy], sh, sw, dh, dw, pt, pl)


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def kernel(x, wd, wp, bias, taps, out, sh, sw, dh, dw, pt, pl, relu):
    n_img, oh, ow, cout = out.shape[0], out.shape[1], out.shape[2], out.shape[3]
    chans = x.shape[3]
    for r in prange(n_img * oh):
        n = r // oh
        oy = r - n * oh
        drow = np.empty((ow, chans), x.dtype)
        depthwise_row(x, wd, taps, n, oy, drow, sh, sw, dh, dw, pt, pl)
        orow = out[n, oy]
        LOOP_OUTER
        LOOP_INNER
                tile(drow, wp, bias, orow, ox, min(BO, ow - ox), co, min(BC, cout - co),
                     chans, relu)
'''


def kernel_source(block_ow: int, block_co: int, order: str) -> str:
    """The complete module source of the kernel for one (BLOCK_OW, BLOCK_CO, ORDER)."""
    if order not in _LOOPS:
        raise ValueError(f"ORDER must be one of {sorted(_LOOPS)}, got {order!r}")
    outer, inner = _LOOPS[order]
    body = (_KERNEL_SOURCE.replace("LOOP_OUTER", outer)
            .replace("        LOOP_INNER", "        " + inner))
    head = ("import numpy as np\nfrom numba import njit, prange\n\n"
            f"FASTMATH = set({list(FASTMATH)!r})\nBO = {block_ow}\nBC = {block_co}\n\n\n")
    return head + _tile_source(block_ow, block_co) + "\n" + body


def build_module(block_ow: int, block_co: int, order: str) -> ModuleType:
    """The generated module of one tile config (``kernel`` and ``depthwise``), compiled
    lazily, function by function, once per process (and cached on disk)."""
    return codegen.load(f"sepconv_{block_ow}x{block_co}_{order}",
                        kernel_source(block_ow, block_co, order))


def build_kernel(block_ow: int, block_co: int, order: str) -> Callable[..., None]:
    """The generated kernel for one config, compiled once per process (and cached on disk).

    The returned function is ``kernel(x, wd, wp, bias, taps, out, sh, sw, dh, dw, pt, pl,
    relu)`` with x (N, H, W, C), wd (k, k, C), wp (Cout, C), bias (Cout,), taps (T, 6) int64
    rows ``(ky, kx, oy_lo, oy_hi, ox_lo, ox_hi)`` and out (N, OH, OW, Cout).
    """
    return build_module(block_ow, block_co, order).kernel


@dataclass(frozen=True)
class PackedDepthwise:
    """A depthwise weight packed for the kernel: ``wd`` (k, k, C) contiguous, and whether
    every value is finite (the padding taps can then be skipped)."""

    wd: np.ndarray
    finite: bool


def pack(dw_weight: np.ndarray) -> PackedDepthwise:
    """Pack a (C, 1, k, k) depthwise weight (a copy: later edits of the array do not leak)."""
    return PackedDepthwise(np.ascontiguousarray(dw_weight[:, 0].transpose(1, 2, 0)),
                           bool(np.isfinite(dw_weight).all()))


def prepare(problem: SepConvProblem, arrays: list[Any]) -> list[Any]:
    """``[x, dw_weight, pw_weight, bias]`` with the depthwise weight packed once, for callers
    that run one problem many times (the tuner, ``atrous bench``)."""
    x, dw_weight, pw_weight, bias = arrays
    packed = dw_weight if isinstance(dw_weight, PackedDepthwise) else pack(dw_weight)
    return [x, packed, pw_weight, bias]


@functools.lru_cache(maxsize=256)
def _taps(problem: SepConvProblem) -> np.ndarray:
    """The problem's valid taps as the kernel's (T, 6) int64 table (built once)."""
    return np.array(problem.valid_taps, np.int64).reshape(-1, 6)


def _set_threads(threads: int) -> int:
    """Set Numba's thread count; return the previous one."""
    previous = numba.get_num_threads()
    if previous != threads:
        numba.set_num_threads(threads)
    return previous


def launch(problem: SepConvProblem, config: Mapping[str, Any], out: np.ndarray, x: np.ndarray,
           dw_weight: np.ndarray | PackedDepthwise, pw_weight: np.ndarray,
           bias: np.ndarray | None) -> None:
    """Write the separable convolution of ``x`` into ``out``.

    Args:
        problem: the validated SepConvProblem.
        config: a full config of the Numba space: PW, BLOCK_OW, BLOCK_CO, ORDER, threads.
        out: C-contiguous output of ``problem.out_shape`` in ``problem.layout``.
        x: C-contiguous input in ``problem.layout``.
        dw_weight: (C, 1, k, k), or its :func:`pack`; pw_weight: (Cout, C, 1, 1); bias:
            (Cout,) or None.
    """
    p = problem
    dtype = np.dtype(p.dtype)
    packed = dw_weight if isinstance(dw_weight, PackedDepthwise) else pack(dw_weight)
    x_nhwc = np.ascontiguousarray(x.transpose(0, 2, 3, 1)) if p.layout == "NCHW" else x
    pads, taps = p.padding, _taps(p)
    if not packed.finite:
        # Skipped padding taps would hide 0 * Inf = NaN: pad for real and run every tap.
        x_nhwc = np.pad(x_nhwc, ((0, 0), pads[:2], pads[2:], (0, 0)))
        full = SepConvProblem(p.n, p.c, x_nhwc.shape[1], x_nhwc.shape[2], p.cout, p.k,
                              p.stride, (0, 0, 0, 0), p.dilation, p.has_bias, p.activation,
                              p.dtype, "NHWC")
        pads, taps = (0, 0, 0, 0), _taps(full)
    wp = pw_weight.reshape(p.cout, p.c)  # a view: the weight is C-contiguous
    bias_v = np.zeros(p.cout, dtype) if bias is None else bias
    out_nhwc = (np.empty((p.n, p.oh, p.ow, p.cout), dtype) if p.layout == "NCHW" else out)
    module = build_module(int(config["BLOCK_OW"]), int(config["BLOCK_CO"]), config["ORDER"])
    threads = max(1, min(int(config["threads"]), numba.config.NUMBA_NUM_THREADS))
    args = (p.stride[0], p.stride[1], p.dilation[0], p.dilation[1], pads[0], pads[2])
    if config["PW"] == "blas":
        _blas(p, module, threads, x_nhwc, packed.wd, wp, bias, taps, out, args)
        return
    out_nhwc = (np.empty((p.n, p.oh, p.ow, p.cout), dtype) if p.layout == "NCHW" else out)
    previous = _set_threads(threads)
    try:
        module.kernel(x_nhwc, packed.wd, wp, bias_v, taps, out_nhwc, *args,
                      p.activation == "relu")
    finally:
        _set_threads(previous)
    if p.layout == "NCHW":
        out[...] = out_nhwc.transpose(0, 3, 1, 2)


def _blas(p: SepConvProblem, module: ModuleType, threads: int, x_nhwc: np.ndarray,
          wd: np.ndarray, wp: np.ndarray, bias: np.ndarray | None, taps: np.ndarray,
          out: np.ndarray, args: tuple) -> None:
    """The "blas" variant: every depthwise row first (Numba), then the pointwise 1x1 as
    one BLAS product per image, written straight in the output's layout (NCHW as
    ``wp @ D^T``: no transpose of the output), then bias and ReLU in place."""
    d = np.empty((p.n, p.oh, p.ow, p.c), p.dtype)
    previous = _set_threads(threads)
    try:
        module.depthwise(x_nhwc, wd, taps, d, *args)
    finally:
        _set_threads(previous)
    rows = d.reshape(p.n, p.oh * p.ow, p.c)
    if p.layout == "NHWC":
        np.matmul(rows.reshape(-1, p.c), wp.T, out=out.reshape(-1, p.cout))
        if bias is not None:
            out += bias
    else:
        for n in range(p.n):
            np.matmul(wp, rows[n].T, out=out[n].reshape(p.cout, -1))
        if bias is not None:
            out += bias[:, None, None]
    if p.activation == "relu":
        np.maximum(out, 0, out=out)  # NaN stays NaN, as in torch.relu
