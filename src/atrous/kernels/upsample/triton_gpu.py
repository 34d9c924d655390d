"""Triton kernels for upsample_bilinear, and their launcher.

Source coordinates are computed in-kernel in float32 from the per-axis ratio the launcher
passes (the formulas of kernels/upsample/reference.py): ``x = o * r`` (align_corners,
asymmetric) or
``x = max(r * (o + 0.5) - 0.5, 0)`` (half_pixel modes); a ratio of 0 gives x = 0, which is
what align_corners and pytorch_half_pixel want for an output size of 1. Then
``i0 = min(floor(x), I-1)``, ``lam = clamp(x - i0, 0, 1)``, ``i1 = min(i0 + 1, I-1)``, and
``(1-lam)*v0 + lam*v1`` along W, then along H, in float32.

NCHW: the output is N*C*OH rows of OW values; a program writes BLOCK_R rows (which may
span planes, so short planes waste no rows) x BLOCK_W columns. A 1x1 -> 33x33 upsample of
256 channels and a 21-channel 65x65 -> 520x520 one both launch thousands of programs.
NHWC: a program writes BLOCK_P output pixels (flattened over rows and columns, so narrow
outputs still fill a tile) times BLOCK_C contiguous channels.
"""

from __future__ import annotations

from typing import Any

import torch
import triton
import triton.language as tl

from atrous.kernels.launch_plan import Launch, run_all
from atrous.kernels.upsample.spec import UpsampleProblem

#: Tensors with at least this many elements are indexed with 64-bit offsets (tests lower it).
INT64_THRESHOLD = 2**31


@triton.jit
def _source(o, size_in, ratio, HALF_PIXEL: tl.constexpr):
    """(i0, i1, lam) of output indices ``o`` along one axis, in float32."""
    of = o.to(tl.float32)
    x = tl.maximum(ratio * (of + 0.5) - 0.5, 0.0) if HALF_PIXEL else of * ratio
    i0 = tl.minimum(tl.floor(x).to(tl.int32), size_in - 1)
    lam = tl.minimum(tl.maximum(x - i0.to(tl.float32), 0.0), 1.0)
    i1 = tl.minimum(i0 + 1, size_in - 1)
    return i0, i1, lam


@triton.jit
def _upsample_nchw_kernel(
    x_ptr, out_ptr,
    H, W, OH, OW, rows, ratio_h, ratio_w,  # rows = N * C * OH output rows
    HALF_PIXEL: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_W: tl.constexpr,
    INT64: tl.constexpr,
):
    """BLOCK_R output rows (counted across planes: row r is row r % OH of plane r // OH) x
    BLOCK_W columns; grid (row tiles, column tiles). Source rows and columns, and their
    weights, are computed once per row and once per column of the tile."""
    r = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    ox = tl.program_id(1) * BLOCK_W + tl.arange(0, BLOCK_W)
    if INT64:
        r = r.to(tl.int64)
    r_ok = r < rows
    plane = r // OH
    y0, y1, ly = _source(r % OH, H, ratio_h, HALF_PIXEL)
    x0, x1, lx = _source(ox, W, ratio_w, HALF_PIXEL)
    src = x_ptr + plane * H * W
    mask = r_ok[:, None] & (ox < OW)[None, :]
    r0 = (src + y0 * W)[:, None]
    r1 = (src + y1 * W)[:, None]
    v00 = tl.load(r0 + x0[None, :], mask=mask, other=0.0).to(tl.float32)
    v01 = tl.load(r0 + x1[None, :], mask=mask, other=0.0).to(tl.float32)
    v10 = tl.load(r1 + x0[None, :], mask=mask, other=0.0).to(tl.float32)
    v11 = tl.load(r1 + x1[None, :], mask=mask, other=0.0).to(tl.float32)
    wx = lx[None, :]
    top = (1.0 - wx) * v00 + wx * v01
    bottom = (1.0 - wx) * v10 + wx * v11
    wy = ly[:, None]
    val = (1.0 - wy) * top + wy * bottom
    tl.store(out_ptr + r[:, None] * OW + ox[None, :], val.to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _upsample_nhwc_kernel(
    x_ptr, out_ptr,
    H, W, C, OH, OW, ratio_h, ratio_w,
    HALF_PIXEL: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr,
    INT64: tl.constexpr,
):
    """BLOCK_P output pixels x BLOCK_C channels of image n; grid (pixel tiles, channel tiles,
    batch), pixel tiles first because they can outnumber the 65535 limit of the other axes."""
    p = tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)
    ch = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    n = tl.program_id(2)
    if INT64:
        p = p.to(tl.int64)
        n = n.to(tl.int64)
    p_ok = p < OH * OW
    ch_ok = ch < C
    oy = p // OW
    ox = p % OW
    y0, y1, ly = _source(oy, H, ratio_h, HALF_PIXEL)
    x0, x1, lx = _source(ox, W, ratio_w, HALF_PIXEL)
    if INT64:
        y0, y1, x0, x1 = y0.to(tl.int64), y1.to(tl.int64), x0.to(tl.int64), x1.to(tl.int64)
    src = x_ptr + n * H * W * C + ch[None, :]
    mask = p_ok[:, None] & ch_ok[None, :]
    v00 = tl.load(src + ((y0 * W + x0) * C)[:, None], mask=mask, other=0.0).to(tl.float32)
    v01 = tl.load(src + ((y0 * W + x1) * C)[:, None], mask=mask, other=0.0).to(tl.float32)
    v10 = tl.load(src + ((y1 * W + x0) * C)[:, None], mask=mask, other=0.0).to(tl.float32)
    v11 = tl.load(src + ((y1 * W + x1) * C)[:, None], mask=mask, other=0.0).to(tl.float32)
    wx = lx[:, None]
    top = (1.0 - wx) * v00 + wx * v01
    bottom = (1.0 - wx) * v10 + wx * v11
    wy = ly[:, None]
    val = (1.0 - wy) * top + wy * bottom
    dst = out_ptr + n * OH * OW * C + p[:, None] * C + ch[None, :]
    tl.store(dst, val.to(out_ptr.dtype.element_ty), mask=mask)


def _ratio(size_in: int, size_out: int, scale: float | None, mode: str) -> float:
    """The per-axis coordinate step the kernels multiply by (0 where x is always 0)."""
    if mode == "align_corners":
        return (size_in - 1) / (size_out - 1) if size_out > 1 else 0.0
    if mode == "pytorch_half_pixel" and size_out == 1:
        return 0.0
    return 1.0 / scale if scale is not None else size_in / size_out


def launch(problem: UpsampleProblem, config: dict[str, Any], out: torch.Tensor,
           x: torch.Tensor) -> None:
    """Write the bilinear resampling of ``x`` into ``out``.

    Args:
        problem: the validated UpsampleProblem.
        config: a full config of ``triton_space(problem)``.
        out: contiguous output of ``problem.out_shape``.
        x: contiguous input in ``problem.layout``.
    """
    run_all(plan(problem, config, out, x))


def plan(problem: UpsampleProblem, config: dict[str, Any], out: torch.Tensor,
         x: torch.Tensor) -> list[Launch]:
    """The kernel launch of :func:`launch` (same arguments), as a one-item list."""
    p = problem
    half = p.mode in ("half_pixel", "pytorch_half_pixel")
    rh = _ratio(p.h, p.oh, p.scale_h, p.mode)
    rw = _ratio(p.w, p.ow, p.scale_w, p.mode)
    big = max(x.numel(), out.numel()) >= INT64_THRESHOLD
    if p.layout == "NCHW":
        rows, br, bw = p.n * p.c * p.oh, config["BLOCK_R"], config["BLOCK_W"]
        return [Launch(_upsample_nchw_kernel, (triton.cdiv(rows, br), triton.cdiv(p.ow, bw)),
                       (x, out, p.h, p.w, p.oh, p.ow, rows, rh, rw),
                       {"HALF_PIXEL": half, "BLOCK_R": br, "BLOCK_W": bw, "INT64": big},
                       config["num_warps"])]
    bp, bc = config["BLOCK_P"], config["BLOCK_C"]
    grid = (triton.cdiv(p.oh * p.ow, bp), triton.cdiv(p.c, bc), p.n)
    return [Launch(_upsample_nhwc_kernel, grid, (x, out, p.h, p.w, p.c, p.oh, p.ow, rh, rw),
                   {"HALF_PIXEL": half, "BLOCK_P": bp, "BLOCK_C": bc, "INT64": big},
                   config["num_warps"])]
