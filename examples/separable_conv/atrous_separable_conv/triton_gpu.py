"""The Triton kernel of separable_conv2d, and its launcher.

An implicit GEMM with the depthwise convolution fused into its operand load: a program
owns BLOCK_M output pixels (flattened over N, OH, OW) x BLOCK_N output channels. For each
slice of BLOCK_K input channels it computes the depthwise result of its pixels for those
channels (k*k masked loads of the input, a multiply-add each, in float32: taps in the
padding are masked, never read), then multiplies it with the pointwise weights' slice
with ``tl.dot``. The bias and the ReLU are applied in the epilogue. Strides are arguments,
so NCHW and NHWC run the same kernel (NHWC's channel loads are contiguous).

float32 multiplies in IEEE precision (no TF32: the float32 tolerance is the CPU's);
float16 and bfloat16 round the depthwise slice to their dtype for the tensor cores and
accumulate in float32.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import triton
import triton.language as tl

from atrous_separable_conv.spec import SepConvProblem


@triton.jit
def _sepconv_kernel(
    x_ptr, wd_ptr, wp_ptr, b_ptr, out_ptr,
    M, C, H, W, COUT, OH, OW,
    sxn, sxc, sxh, sxw, son, soc, soh, sow,
    SH, SW, DH, DW, PT, PL,
    K: tl.constexpr, HAS_BIAS: tl.constexpr, RELU: tl.constexpr, IEEE: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    """out[m, co] = act(bias[co] + sum_c wp[co, c] * sum_taps x[m + tap, c] * wd[c, tap]).

    x (N, C, H, W) with strides (sxn, sxc, sxh, sxw); wd (C, 1, K, K) and wp (Cout, C)
    contiguous; out (N, Cout, OH, OW) with strides (son, soc, soh, sow); M = N * OH * OW.
    """
    offs_m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    m_ok = offs_m < M
    n_ok = offs_n < COUT
    img = offs_m // (OH * OW)
    rest = offs_m % (OH * OW)
    oy = rest // OW
    ox = rest % OW
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for c0 in range(0, C, BLOCK_K):
        offs_k = c0 + tl.arange(0, BLOCK_K)
        k_ok = offs_k < C
        depth = tl.zeros((BLOCK_M, BLOCK_K), dtype=tl.float32)
        for ky in tl.static_range(K):
            iy = oy * SH + ky * DH - PT
            y_ok = m_ok & (iy >= 0) & (iy < H)
            for kx in tl.static_range(K):
                ix = ox * SW + kx * DW - PL
                ok = y_ok & (ix >= 0) & (ix < W)
                xv = tl.load(x_ptr + img[:, None] * sxn + iy[:, None] * sxh
                             + ix[:, None] * sxw + offs_k[None, :] * sxc,
                             mask=ok[:, None] & k_ok[None, :], other=0.0)
                wv = tl.load(wd_ptr + offs_k * (K * K) + ky * K + kx, mask=k_ok, other=0.0)
                depth += xv.to(tl.float32) * wv.to(tl.float32)[None, :]
        wpv = tl.load(wp_ptr + offs_n[None, :] * C + offs_k[:, None],
                      mask=k_ok[:, None] & n_ok[None, :], other=0.0)
        if IEEE:
            acc += tl.dot(depth, wpv.to(tl.float32), input_precision="ieee")
        else:
            acc += tl.dot(depth.to(wpv.dtype), wpv)
    if HAS_BIAS:
        acc += tl.load(b_ptr + offs_n, mask=n_ok, other=0.0).to(tl.float32)[None, :]
    if RELU:
        acc = tl.where(acc < 0, 0.0, acc)  # NaN < 0 is False: NaN stays
    dst = (out_ptr + img[:, None] * son + oy[:, None] * soh + ox[:, None] * sow
           + offs_n[None, :] * soc)
    tl.store(dst, acc.to(out_ptr.dtype.element_ty), mask=m_ok[:, None] & n_ok[None, :])


def _nchw_strides(t: torch.Tensor, layout: str) -> tuple[int, int, int, int]:
    """(n, c, h, w) element strides of a 4-D tensor stored in ``layout``."""
    s = t.stride()
    return s if layout == "NCHW" else (s[0], s[3], s[1], s[2])


def launch(problem: SepConvProblem, config: Mapping[str, Any], out: torch.Tensor,
           x: torch.Tensor, dw_weight: torch.Tensor, pw_weight: torch.Tensor,
           bias: torch.Tensor | None) -> None:
    """Write the separable convolution of ``x`` into ``out``.

    Args:
        problem: the validated SepConvProblem.
        config: a full config of the Triton space: BLOCK_M, BLOCK_N, BLOCK_K, num_warps,
            num_stages.
        out: contiguous output of ``problem.out_shape`` in ``problem.layout``.
        x: contiguous input in ``problem.layout``; dw_weight (C, 1, k, k); pw_weight
            (Cout, C, 1, 1); bias (Cout,) or None; all on one device.
    """
    p = problem
    m = p.n * p.oh * p.ow
    grid = (triton.cdiv(m, config["BLOCK_M"]), triton.cdiv(p.cout, config["BLOCK_N"]))
    _sepconv_kernel[grid](
        x, dw_weight.contiguous(), pw_weight.contiguous(), out if bias is None else bias, out,
        m, p.c, p.h, p.w, p.cout, p.oh, p.ow,
        *_nchw_strides(x, p.layout), *_nchw_strides(out, p.layout),
        p.stride[0], p.stride[1], p.dilation[0], p.dilation[1], p.padding[0], p.padding[2],
        K=p.k, HAS_BIAS=bias is not None, RELU=p.activation == "relu",
        IEEE=p.dtype == "float32", BLOCK_M=config["BLOCK_M"], BLOCK_N=config["BLOCK_N"],
        BLOCK_K=config["BLOCK_K"], num_warps=config["num_warps"],
        num_stages=config["num_stages"])
