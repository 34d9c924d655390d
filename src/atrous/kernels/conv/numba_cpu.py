"""Numba CPU kernel for dilated_conv2d: per-tap shifted GEMMs on NHWC, register-blocked.

The convolution is a sum over the kh x kw taps of shifted matrix products. For tap
(ky, kx) only the rectangle of output pixels whose input lies inside the image is
computed (``ConvProblem.valid_taps``), so the zero padding of large dilations costs nothing.

Each output row ``(n, oy)`` is one parallel work item. Inside it, for every tap and every
block of BLOCK_CO output channels, a register tile of BLOCK_OW output pixels x BLOCK_CO
output channels is accumulated as BLOCK_OW * BLOCK_CO dot products over the input channels
of the group. Input pixels (NHWC) and packed weight rows ``[kh, kw, Cout, Cin/g]`` are both
contiguous over input channels, so LLVM vectorises the reduction loop with one vector
accumulator per tile element (this beats broadcasting over output channels, which Numba
cannot keep in registers). Tile sizes are compile-time constants baked into generated
source; the thread count is applied at launch.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numba
import numpy as np
from numba import njit, prange

from atrous.kernels.conv.spec import ConvProblem

# No nnan/ninf: NaN and Inf must propagate exactly as in the reference.
FASTMATH = {"reassoc", "contract", "arcp"}

_TILES: dict[tuple[int, int], Callable[..., None]] = {}
_KERNELS: dict[tuple[int, int], Callable[..., None]] = {}


def _tile_source(bo: int, bc: int) -> str:
    """Source of a ``bo`` pixels x ``bc`` channels register tile: adds the dot products of
    input pixel rows with weight rows over ``kn`` input channels into ``orow``.

    Only the first ``nx`` pixels and ``nc`` channels are stored; the rest of the tile
    re-reads the last valid row (always in bounds), so one full-speed tile covers a ragged
    edge instead of several narrow ones.
    """
    tile = [(j, c) for j in range(bo) for c in range(bc)]
    lines = [f"def tile_{bo}x{bc}(xrow, wt, orow, ox, nx, co, nc, cb, kn, sw, xoff):"]
    lines += [f"    p{j} = ox + min({j}, nx - 1)" for j in range(bo)]
    lines += [f"    q{c} = co + min({c}, nc - 1)" for c in range(bc)]
    lines += [f"    x{j} = xrow[p{j} * sw + xoff, cb:cb + kn]" for j in range(bo)]
    lines += [f"    w{c} = wt[q{c}]" for c in range(bc)]
    lines += [f"    a{j}_{c} = orow[p{j}, q{c}]" for j, c in tile]
    lines.append("    for k in range(kn):")
    lines += [f"        xv{j} = x{j}[k]" for j in range(bo)]
    lines += [f"        wv{c} = w{c}[k]" for c in range(bc)]
    lines += [f"        a{j}_{c} += xv{j} * wv{c}" for j, c in tile]
    for j, c in tile:
        cond = " and ".join(([f"{j} < nx"] if j else []) + ([f"{c} < nc"] if c else []))
        store = f"orow[p{j}, q{c}] = a{j}_{c}"
        lines.append(f"    if {cond}:\n        {store}" if cond else f"    {store}")
    return "\n".join(lines) + "\n"


def _tile(bo: int, bc: int) -> Callable[..., None]:
    """The jitted ``bo`` x ``bc`` register tile, generated once per process."""
    if (bo, bc) not in _TILES:
        namespace: dict[str, Any] = {}
        exec(compile(_tile_source(bo, bc), f"<atrous conv tile {bo}x{bc}>", "exec"), namespace)
        _TILES[bo, bc] = njit(fastmath=FASTMATH)(namespace[f"tile_{bo}x{bc}"])
    return _TILES[bo, bc]


def build_kernel(block_ow: int, block_co: int) -> Callable[..., None]:
    """The convolution kernel for one (BLOCK_OW, BLOCK_CO), cached in-process.

    The returned function is ``kernel(x, wp, bias, taps, out, sh, sw, dh, dw, pt, pl,
    groups, relu)`` with x (N, H, W, Cin), wp (kh, kw, Cout, Cin/g), bias (Cout,), taps
    (T, 6) int64 rows ``(ky, kx, oy_lo, oy_hi, ox_lo, ox_hi)`` and out (N, OH, OW, Cout).
    """
    key = (block_ow, block_co)
    if key in _KERNELS:
        return _KERNELS[key]
    bo, bc = block_ow, block_co
    tile = _tile(bo, bc)

    @njit(parallel=True, fastmath=FASTMATH)
    def kernel(x, wp, bias, taps, out, sh, sw, dh, dw, pt, pl, groups, relu):  # pragma: no cover
        n_img, oh, ow, cout = out.shape[0], out.shape[1], out.shape[2], out.shape[3]
        cin_g = x.shape[3] // groups
        cout_g = cout // groups
        for r in prange(n_img * oh):
            n = r // oh
            oy = r - n * oh
            orow = out[n, oy]
            for ox in range(ow):
                for co in range(cout):
                    orow[ox, co] = bias[co]
            for t in range(taps.shape[0]):
                if oy < taps[t, 2] or oy >= taps[t, 3]:
                    continue
                ky, kx, xlo, xhi = taps[t, 0], taps[t, 1], taps[t, 4], taps[t, 5]
                xrow = x[n, oy * sh + ky * dh - pt]
                wt = wp[ky, kx]
                xoff = kx * dw - pl
                if cin_g == 1:  # depthwise: no reduction, so vectorise over channels instead
                    for ox in range(xlo, xhi):
                        ix = ox * sw + xoff
                        if cout_g == 1:
                            for co in range(cout):
                                orow[ox, co] += xrow[ix, co] * wt[co, 0]
                        else:
                            for co in range(cout):
                                orow[ox, co] += xrow[ix, co // cout_g] * wt[co, 0]
                    continue
                for g in range(groups):
                    cb = g * cin_g
                    co_end = (g + 1) * cout_g
                    # The BLOCK_CO weight rows stay cached while the pixel tiles stream past.
                    for co in range(g * cout_g, co_end, bc):
                        nc = min(bc, co_end - co)
                        for ox in range(xlo, xhi, bo):
                            tile(xrow, wt, orow, ox, min(bo, xhi - ox), co, nc, cb, cin_g, sw,
                                 xoff)
            if relu:
                for ox in range(ow):
                    for co in range(cout):
                        if orow[ox, co] < 0:  # NaN < 0 is False: NaN stays, as in torch.relu
                            orow[ox, co] = 0.0

    _KERNELS[key] = kernel
    return kernel


@njit(parallel=True)
def _pack_weights(weight: np.ndarray, wp: np.ndarray) -> bool:  # pragma: no cover
    """Copy OIHW ``weight`` into ``wp`` [kh, kw, Cout, Cin/g]; True if any value is not finite."""
    cout, cin_g, kh, kw = weight.shape
    bad = 0
    for co in prange(cout):
        for ky in range(kh):
            for kx in range(kw):
                for ci in range(cin_g):
                    v = weight[co, ci, ky, kx]
                    wp[ky, kx, co, ci] = v
                    if not math.isfinite(v):
                        bad += 1
    return bad > 0


def _padding_terms(problem: ConvProblem, weight: np.ndarray, out_nhwc: np.ndarray) -> None:
    """Add the reference's ``0 * weight`` products over the padding, which are NaN where a
    weight is NaN or Inf (only called then): per tap, outside its valid rectangle."""
    p = problem
    for ky in range(p.kh):
        ylo, yhi = p.tap_range(0, ky)
        for kx in range(p.kw):
            xlo, xhi = p.tap_range(1, kx)
            with np.errstate(invalid="ignore"):
                zero_terms = (weight[:, :, ky, kx] * 0).sum(axis=1)  # (Cout,): 0 or NaN
            if not np.isnan(zero_terms).any():
                continue
            outside = np.ones((p.oh, p.ow), dtype=bool)
            outside[ylo:yhi, xlo:xhi] = False
            out_nhwc[:, outside, :] += zero_terms


def launch(problem: ConvProblem, config: dict[str, Any], out: np.ndarray, x: np.ndarray,
           weight: np.ndarray, bias: np.ndarray | None) -> None:
    """Write the convolution of ``x`` with ``weight`` (+ ``bias``, ReLU) into ``out``.

    Args:
        problem: the validated ConvProblem.
        config: a full config of ``numba_space(problem)`` (BLOCK_OW, BLOCK_CO, threads).
        out: C-contiguous output of ``problem.out_shape`` in ``problem.layout``.
        x: C-contiguous input in ``problem.layout``.
        weight: C-contiguous OIHW weight (Cout, Cin/groups, kh, kw).
        bias: (Cout,) or None.
    """
    p = problem
    kernel = build_kernel(int(config["BLOCK_OW"]), int(config["BLOCK_CO"]))
    dtype = np.dtype(p.dtype)
    if p.layout == "NCHW":
        x_nhwc = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
        out_nhwc = np.empty((p.n, p.oh, p.ow, p.cout), dtype=dtype)
    else:
        x_nhwc, out_nhwc = x, out
    wp = np.empty((p.kh, p.kw, p.cout, p.cin // p.groups), dtype=dtype)
    nonfinite_weight = _pack_weights(weight, wp)
    bias_v = np.zeros(p.cout, dtype=dtype) if bias is None else bias
    taps = np.array(p.valid_taps, dtype=np.int64).reshape(-1, 6)
    previous = numba.get_num_threads()
    numba.set_num_threads(max(1, min(int(config["threads"]), numba.config.NUMBA_NUM_THREADS)))
    try:
        kernel(x_nhwc, wp, bias_v, taps, out_nhwc, p.stride[0], p.stride[1], p.dilation[0],
               p.dilation[1], p.padding[0], p.padding[2], p.groups, p.activation == "relu")
    finally:
        numba.set_num_threads(previous)
    if nonfinite_weight:
        _padding_terms(p, weight, out_nhwc)
    if p.layout == "NCHW":
        out[...] = out_nhwc.transpose(0, 3, 1, 2)
