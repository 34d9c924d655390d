"""Triton kernels for dilated_conv2d (an implicit GEMM), and their launcher.

The GEMM: rows are output pixels (n, oy, ox), columns the output channels of one group,
and the reduction runs over the kernel taps and, per tap, over the group's input channels
in blocks of BLOCK_K: ``acc[m, co] += x[n, oy*s + ky*d - p, ox*s + kx*d - p, ci] @ w[tap, ci, co]``
with tl.dot, accumulating in float32 (IEEE float32 products for float32 inputs unless
``problem.allow_tf32``).

- Layouts: both are read in place through strides (no transpose of x). For NCHW the input
  tile is loaded as (BLOCK_K, BLOCK_M), pixels fastest, so the loads coalesce along the
  image row, and transposed in registers; NCHW output tiles are stored the same way.
- Weights: the launcher repacks the OIHW weight to (groups, kh, kw, Cin/g, Cout/g) on every
  call, so a (BLOCK_K, BLOCK_N) tile is contiguous along output channels. This costs one
  read and one write of the weight (9.4 MB in float16 for a 2048->256 3x3 conv, a few
  microseconds on an H100), as PyTorch's channels_last path pays for its own reorder.
- Tap skipping: per tap a program computes which of its output pixels read inside the image;
  when none do (a common case at ASPP's large dilations) the whole tap is skipped.
- Split-K: SPLIT_K programs per output tile split each tap's input-channel blocks evenly
  (so skipped taps do not unbalance them). Each writes its float32 partial tile to a
  workspace (SPLIT_K, M, Cout) and a second kernel adds the partials in split order, then
  applies bias, ReLU and the cast: deterministic, unlike float atomics, at the price of
  SPLIT_K * M * Cout * 4 bytes written and read once (4.5 MB for a batch-1 33x33 ASPP conv
  with SPLIT_K 4, small beside its 10 GFLOP).
- Groups: the grid's second axis runs over (group, output-channel tile). tl.dot needs tiles
  of at least 16 in every dimension, so narrow groups (depthwise: 1 x 1) are padded with
  masked, zero-filled lanes: correct, but most of the tile's work is wasted.
- 64-bit offsets: when x, the output, the packed weight or the workspace has >= 2**31
  elements the launcher sets INT64 and the kernels widen their index vectors (and the
  weight's per-tap offset) before any product with a stride.
"""

from __future__ import annotations

from typing import Any

import torch
import triton
import triton.language as tl

from atrous.kernels.conv.spec import ConvProblem
from atrous.kernels.launch_plan import Launch, run_all

#: Tensors with at least this many elements are indexed with 64-bit offsets (tests lower it).
INT64_THRESHOLD = 2**31
_EPILOGUE_BLOCK_M, _EPILOGUE_BLOCK_N = 64, 64


@triton.jit
def _conv_kernel(
    x_ptr, w_ptr, b_ptr, out_ptr,  # out is the float32 workspace when SPLIT_K > 1
    M, H, W, OH, OW, CIN_G, COUT_G, COUT, KH, KW,
    stride_h, stride_w, pad_h, pad_w, dil_h, dil_w,
    sxn, sxc, sxh, sxw,  # input strides, in elements
    son, soc, soh, sow,  # output strides (unused for the workspace)
    kb_per_split,  # input-channel blocks per split
    sbn,  # bias stride per image (BIAS_PER_IMAGE only)
    HAS_BIAS: tl.constexpr, BIAS_PER_IMAGE: tl.constexpr, RELU: tl.constexpr,
    SPLIT_K: tl.constexpr,
    CHANNELS_LAST: tl.constexpr, PRECISION: tl.constexpr, INT64: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
):
    """One BLOCK_M x BLOCK_N output tile (one split of its reduction); grid
    (M tiles x Cout/g tiles, groups, SPLIT_K), swizzled by GROUP_M."""
    pid = tl.program_id(0)
    g = tl.program_id(1)
    pid_k = tl.program_id(2)
    tiles_m = tl.cdiv(M, BLOCK_M)
    tiles_n = tl.cdiv(COUT_G, BLOCK_N)
    if GROUP_M == 1:  # M tiles fastest: consecutive programs share one weight tile
        pid_m = pid % tiles_m
        pid_n = pid // tiles_m
    else:  # GROUP_M M tiles x every N tile, then the next GROUP_M: x and w tiles reused in L2
        per_group = GROUP_M * tiles_n
        first_m = (pid // per_group) * GROUP_M
        rows = tl.minimum(tiles_m - first_m, GROUP_M)
        pid_m = first_m + (pid % per_group) % rows
        pid_n = (pid % per_group) // rows
    # Index math stays 32-bit (the launcher checks M < 2**31); under INT64 only the vectors
    # that multiply a stride are widened, so the per-pixel divisions stay cheap.
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_k = tl.arange(0, BLOCK_K)
    m_ok = offs_m < M
    n_ok = offs_n < COUT_G
    img = offs_m // (OH * OW)
    oy = (offs_m // OW) % OH
    ox = offs_m % OW
    iy0 = oy * stride_h - pad_h
    ix0 = ox * stride_w - pad_w
    if INT64:
        img, oy, ox = img.to(tl.int64), oy.to(tl.int64), ox.to(tl.int64)
        iy0, ix0 = iy0.to(tl.int64), ix0.to(tl.int64)
        offs_k = offs_k.to(tl.int64)
        g = g.to(tl.int64)
    x_img = x_ptr + img * sxn + g * CIN_G * sxc
    w_grp = w_ptr + g * KH * KW * CIN_G * COUT_G
    kb_lo = pid_k * kb_per_split
    kb_hi = tl.minimum(kb_lo + kb_per_split, tl.cdiv(CIN_G, BLOCK_K))

    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for tap in range(0, KH * KW):
        iy = iy0 + (tap // KW) * dil_h
        ix = ix0 + (tap % KW) * dil_w
        row_ok = m_ok & (iy >= 0) & (iy < H) & (ix >= 0) & (ix < W)
        # Tap skipping: this tile's pixels all read padding for this tap.
        if tl.max(row_ok.to(tl.int32), axis=0) > 0:
            x_pix = x_img + iy * sxh + ix * sxw  # (BLOCK_M,) pointers, channel 0 of the group
            w_off = tap * CIN_G
            if INT64:  # a packed weight past 2**31 elements: tap * CIN_G * COUT_G overflows
                w_off = w_off.to(tl.int64)
            w_tap = w_grp + w_off * COUT_G
            for kb in range(kb_lo, kb_hi):
                k = kb * BLOCK_K + offs_k
                k_ok = k < CIN_G
                if CHANNELS_LAST:
                    a = tl.load(x_pix[:, None] + k[None, :] * sxc,
                                mask=row_ok[:, None] & k_ok[None, :], other=0.0)
                else:  # NCHW: pixels are the contiguous axis, load (K, M) and transpose
                    a = tl.trans(tl.load(x_pix[None, :] + k[:, None] * sxc,
                                         mask=k_ok[:, None] & row_ok[None, :], other=0.0))
                b = tl.load(w_tap + k[:, None] * COUT_G + offs_n[None, :],
                            mask=k_ok[:, None] & n_ok[None, :], other=0.0)
                acc = tl.dot(a, b, acc, input_precision=PRECISION)

    co = g * COUT_G + offs_n  # int64 under INT64 (g is): co * soc may pass 2**31
    if SPLIT_K > 1:  # float32 partial tile into workspace (SPLIT_K, M, Cout)
        row = pid_k * M + offs_m
        if INT64:  # SPLIT_K * M * Cout may pass 2**31
            row = pid_k.to(tl.int64) * M + offs_m
        dst = out_ptr + row[:, None] * COUT + co[None, :]
        tl.store(dst, acc, mask=m_ok[:, None] & n_ok[None, :])
    else:
        if HAS_BIAS:
            if BIAS_PER_IMAGE:  # (N, Cout) bias: one row per image (a fused ASPP projection)
                acc += tl.load(b_ptr + img[:, None] * sbn + co[None, :],
                               mask=m_ok[:, None] & n_ok[None, :], other=0.0).to(tl.float32)
            else:
                acc += tl.load(b_ptr + co, mask=n_ok, other=0.0).to(tl.float32)[None, :]
        if RELU:
            acc = tl.where(acc < 0.0, 0.0, acc)  # keeps NaN, like torch.relu
        o_pix = img * son + oy * soh + ox * sow
        val = acc.to(out_ptr.dtype.element_ty)
        if CHANNELS_LAST:
            tl.store(out_ptr + o_pix[:, None] + co[None, :] * soc, val,
                     mask=m_ok[:, None] & n_ok[None, :])
        else:  # NCHW: store (N, M), pixels fastest
            tl.store(out_ptr + o_pix[None, :] + co[:, None] * soc, tl.trans(val),
                     mask=n_ok[:, None] & m_ok[None, :])


@triton.jit
def _splitk_epilogue_kernel(
    ws_ptr, b_ptr, out_ptr,  # ws: (SPLIT_K, M, COUT) float32
    M, COUT, OH, OW,
    son, soc, soh, sow, sbn,
    HAS_BIAS: tl.constexpr, BIAS_PER_IMAGE: tl.constexpr, RELU: tl.constexpr,
    SPLIT_K: tl.constexpr,
    CHANNELS_LAST: tl.constexpr, INT64: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    """Add the SPLIT_K partial tiles in split order, then bias, ReLU and the output cast."""
    offs_m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    co = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    if INT64:
        offs_m = offs_m.to(tl.int64)
    m_ok = offs_m < M
    n_ok = co < COUT
    mask = m_ok[:, None] & n_ok[None, :]
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for s in tl.static_range(SPLIT_K):
        acc += tl.load(ws_ptr + (s * M + offs_m)[:, None] * COUT + co[None, :], mask=mask,
                       other=0.0)
    img = offs_m // (OH * OW)
    if HAS_BIAS:
        if BIAS_PER_IMAGE:
            acc += tl.load(b_ptr + img[:, None] * sbn + co[None, :], mask=mask,
                           other=0.0).to(tl.float32)
        else:
            acc += tl.load(b_ptr + co, mask=n_ok, other=0.0).to(tl.float32)[None, :]
    if RELU:
        acc = tl.where(acc < 0.0, 0.0, acc)
    o_pix = img * son + ((offs_m // OW) % OH) * soh + (offs_m % OW) * sow
    val = acc.to(out_ptr.dtype.element_ty)
    if CHANNELS_LAST:
        tl.store(out_ptr + o_pix[:, None] + co[None, :] * soc, val, mask=mask)
    else:
        tl.store(out_ptr + o_pix[None, :] + co[:, None] * soc, tl.trans(val),
                 mask=n_ok[:, None] & m_ok[None, :])


def _strides(layout: str, n: int, c: int, h: int, w: int) -> tuple[int, int, int, int]:
    """(n, c, h, w) element strides of a contiguous tensor in ``layout``."""
    if layout == "NCHW":
        return (c * h * w, h * w, w, 1)
    return (h * w * c, 1, w * c, c)


def launch(problem: ConvProblem, config: dict[str, Any], out: torch.Tensor, x: torch.Tensor,
           weight: torch.Tensor, bias: torch.Tensor | None) -> None:
    """Write ``activation(conv(x, weight) + bias)`` into ``out``.

    Args:
        problem: the validated ConvProblem.
        config: a full config of ``triton_space(problem)``.
        out: contiguous output of ``problem.out_shape``, in ``problem.layout``.
        x: contiguous input in ``problem.layout``.
        weight: contiguous OIHW weight (Cout, Cin/groups, kh, kw).
        bias: contiguous (Cout,) or None.
    """
    run_all(plan(problem, config, out, x, weight, bias))


def plan(problem: ConvProblem, config: dict[str, Any], out: torch.Tensor, x: torch.Tensor,
         weight: torch.Tensor, bias: torch.Tensor | None) -> list[Launch]:
    """The kernel launches of :func:`launch` (same arguments), in order; packs the weight and
    allocates the split-K workspace on ``x``'s device (meta tensors: a plan without a GPU)."""
    return _plan(problem, config, out, _strides(problem.layout, problem.n, problem.cout,
                                                problem.oh, problem.ow), x, weight, bias, False)


def launch_into(problem: ConvProblem, config: dict[str, Any], out: torch.Tensor,
                x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, *,
                bias_per_image: bool = False) -> None:
    """``launch`` for the fused ASPP: ``out`` may be a strided view (a branch's channel slice
    of the concatenation buffer), and ``bias`` may be (N, Cout), one row per image (the
    projection's bias with the pooling branch folded in).

    Args:
        problem: the validated ConvProblem; ``has_bias`` says whether ``bias`` is given.
        config: a full config of ``triton_space(problem)``.
        out: a view of ``problem.out_shape`` in ``problem.layout``, any strides.
        x, weight: as in :func:`launch`.
        bias: contiguous (Cout,), or (N, Cout) with ``bias_per_image``, or None.
    """
    run_all(plan_into(problem, config, out, x, weight, bias, bias_per_image=bias_per_image))


def plan_into(problem: ConvProblem, config: dict[str, Any], out: torch.Tensor,
              x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, *,
              bias_per_image: bool = False) -> list[Launch]:
    """The kernel launches of :func:`launch_into` (same arguments), in order."""
    if bias_per_image and (bias is None or tuple(bias.shape) != (problem.n, problem.cout)):
        got = None if bias is None else tuple(bias.shape)
        raise ValueError(f"a per-image bias must have shape {(problem.n, problem.cout)}, got {got}")
    st = out.stride()
    strides = (st[0], st[1], st[2], st[3]) if problem.layout == "NCHW" else (
        st[0], st[3], st[1], st[2])
    return _plan(problem, config, out, strides, x, weight, bias, bias_per_image)


def _plan(problem: ConvProblem, config: dict[str, Any], out: torch.Tensor,
          so: tuple[int, int, int, int], x: torch.Tensor, weight: torch.Tensor,
          bias: torch.Tensor | None, bias_per_image: bool) -> list[Launch]:
    """The plan behind both entry points: ``so`` are the output's (n, c, h, w) strides."""
    p = problem
    g, cin_g, cout_g = p.groups, p.cin // p.groups, p.cout // p.groups
    bm, bn, bk = config["BLOCK_M"], config["BLOCK_N"], config["BLOCK_K"]
    m = p.n * p.oh * p.ow
    # (G, Cout/g, Cin/g, kh, kw) -> (G, kh, kw, Cin/g, Cout/g): output channels contiguous.
    w_packed = weight.view(g, cout_g, cin_g, p.kh, p.kw).permute(0, 3, 4, 2, 1).contiguous()
    kblocks = triton.cdiv(cin_g, bk)
    # Even channel blocks per split and no empty split (a split cannot exceed the blocks).
    per_split = triton.cdiv(kblocks, min(config["SPLIT_K"], kblocks))
    split = triton.cdiv(kblocks, per_split)
    # Axis 0: every (pixel tile, channel tile) of a group, in GROUP_M order; axis 1: groups.
    grid = (triton.cdiv(m, bm) * triton.cdiv(cout_g, bn), g, split)
    channels_last = p.layout == "NHWC"
    if g > 65535:  # CUDA limits grid axes 1 and 2
        raise ValueError(f"groups={g} exceeds the 65535 programs of a CUDA grid axis")
    if m >= 2**31 or grid[0] >= 2**31:  # the kernel's pixel index math is 32-bit
        raise ValueError(f"{m} output pixels ({grid[0]} tiles) exceed the 32-bit pixel index;"
                         f" split the batch")
    # The largest output offset, so a strided view into a big buffer is measured right.
    out_span = 1 + sum((d - 1) * s for d, s in zip((p.n, p.cout, p.oh, p.ow), so, strict=True))
    big = max(x.numel(), out_span, w_packed.numel(), split * m * p.cout) >= INT64_THRESHOLD
    precision = "tf32" if p.allow_tf32 or p.dtype != "float32" else "ieee"
    dst = out if split == 1 else torch.empty((split, m, p.cout), dtype=torch.float32,
                                             device=x.device)
    has_bias, relu = bias is not None, p.activation == "relu"
    bias_arg = bias if has_bias else out  # never read: HAS_BIAS is a constexpr
    sbn = p.cout if bias_per_image else 0
    flags = {"HAS_BIAS": has_bias, "BIAS_PER_IMAGE": bias_per_image, "RELU": relu,
             "SPLIT_K": split, "CHANNELS_LAST": channels_last, "INT64": big}
    launches = [Launch(
        _conv_kernel, grid,
        (x, w_packed, bias_arg, dst,
         m, p.h, p.w, p.oh, p.ow, cin_g, cout_g, p.cout, p.kh, p.kw,
         p.stride[0], p.stride[1], p.padding[0], p.padding[2], p.dilation[0], p.dilation[1],
         *_strides(p.layout, p.n, p.cin, p.h, p.w), *so, per_split, sbn),
        {**flags, "PRECISION": precision, "BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk,
         "GROUP_M": config.get("GROUP_M", 1)},
        config["num_warps"], config["num_stages"])]
    if split > 1:
        egrid = (triton.cdiv(m, _EPILOGUE_BLOCK_M), triton.cdiv(p.cout, _EPILOGUE_BLOCK_N))
        launches.append(Launch(
            _splitk_epilogue_kernel, egrid,
            (dst, bias_arg, out, m, p.cout, p.oh, p.ow, *so, sbn),
            {**flags, "BLOCK_M": _EPILOGUE_BLOCK_M, "BLOCK_N": _EPILOGUE_BLOCK_N}, 4))
    return launches
