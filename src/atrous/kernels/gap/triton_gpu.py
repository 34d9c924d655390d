"""Triton kernels for global_avg_pool, and their launcher.

NCHW is a segmented row reduction: the input is N*C rows of H*W contiguous values, and each
program sums BLOCK_R rows in chunks of BLOCK_HW columns. NHWC is a column reduction: each
program sums H*W channel vectors of BLOCK_C contiguous channels, BLOCK_HW pixels a step.
For batch-1 shapes NHWC has too few channel slices to fill a GPU, so SPLIT programs share
the pixels of a slice: each writes a float32 partial sum and a second, tiny kernel adds the
SPLIT partials in a fixed order (deterministic, unlike atomics), divides and casts.
Everything accumulates in float32: loads are cast explicitly because tl.sum does not upcast.
"""

from __future__ import annotations

from typing import Any

import torch
import triton
import triton.language as tl

from atrous.kernels.gap.spec import GapProblem
from atrous.kernels.launch_plan import Launch, run_all

#: Tensors with at least this many elements are indexed with 64-bit offsets. A module-level
#: value so that tests can lower it and exercise the 64-bit path on small inputs.
INT64_THRESHOLD = 2**31


@triton.jit
def _gap_rows_kernel(
    x_ptr, out_ptr,  # x: (R, L) rows, out: (R,)
    R, L,
    BLOCK_R: tl.constexpr, BLOCK_HW: tl.constexpr, INT64: tl.constexpr,
):
    """out[r] = mean(x[r, :]) for BLOCK_R rows of a row-major (R, L) matrix."""
    rows = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    if INT64:
        rows = rows.to(tl.int64)
    row_ok = rows < R
    cols = tl.arange(0, BLOCK_HW)
    row_ptr = x_ptr + rows[:, None] * L
    # A 2-D accumulator keeps the loop free of cross-lane reductions: one tl.sum at the end.
    acc = tl.zeros((BLOCK_R, BLOCK_HW), dtype=tl.float32)
    for start in range(0, L, BLOCK_HW):
        idx = start + cols
        v = tl.load(row_ptr + idx[None, :], mask=row_ok[:, None] & (idx < L)[None, :], other=0.0)
        acc += v.to(tl.float32)
    mean = tl.sum(acc, axis=1) / L
    tl.store(out_ptr + rows, mean.to(out_ptr.dtype.element_ty), mask=row_ok)


@triton.jit
def _gap_cols_kernel(
    x_ptr, dst_ptr,  # x: (N, L, C); dst: out (N, C) or the float32 workspace (SPLIT, N, C)
    N, L, C, chunk,  # chunk: pixels per split
    BLOCK_C: tl.constexpr, BLOCK_HW: tl.constexpr, FINAL: tl.constexpr, INT64: tl.constexpr,
):
    """Sum pixels [s*chunk, (s+1)*chunk) of image n for BLOCK_C channels; FINAL also divides
    by L and casts into out, otherwise the float32 partial goes to workspace row s."""
    pid_c = tl.program_id(0)
    n = tl.program_id(1)
    s = tl.program_id(2)
    if INT64:
        n = n.to(tl.int64)
    ch = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    ch_ok = ch < C
    lo = s * chunk
    hi = tl.minimum(lo + chunk, L)
    pix = tl.arange(0, BLOCK_HW)
    img_ptr = x_ptr + n * L * C
    acc = tl.zeros((BLOCK_HW, BLOCK_C), dtype=tl.float32)
    for start in range(lo, hi, BLOCK_HW):
        p = start + pix
        if INT64:
            p = p.to(tl.int64)
        v = tl.load(img_ptr + p[:, None] * C + ch[None, :],
                    mask=(p < hi)[:, None] & ch_ok[None, :], other=0.0)
        acc += v.to(tl.float32)
    total = tl.sum(acc, axis=0)
    if FINAL:
        tl.store(dst_ptr + n * C + ch, (total / L).to(dst_ptr.dtype.element_ty), mask=ch_ok)
    else:
        tl.store(dst_ptr + (s * N + n) * C + ch, total, mask=ch_ok)


@triton.jit
def _gap_finish_kernel(
    ws_ptr, out_ptr,  # ws: (SPLIT, NC) float32 partial sums, out: (NC,)
    NC, L,
    SPLIT: tl.constexpr, BLOCK: tl.constexpr, INT64: tl.constexpr,
):
    """out[i] = sum_s ws[s, i] / L, adding the partials in split order (deterministic)."""
    i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    if INT64:
        i = i.to(tl.int64)
    ok = i < NC
    total = tl.zeros((BLOCK,), dtype=tl.float32)
    for s in tl.static_range(SPLIT):
        total += tl.load(ws_ptr + s * NC + i, mask=ok, other=0.0)
    tl.store(out_ptr + i, (total / L).to(out_ptr.dtype.element_ty), mask=ok)


def launch(problem: GapProblem, config: dict[str, Any], out: torch.Tensor,
           x: torch.Tensor) -> None:
    """Write the global average pool of ``x`` into ``out``.

    Args:
        problem: the validated GapProblem.
        config: a full config of ``triton_space(problem)``.
        out: contiguous output of ``problem.out_shape`` (keepdims only changes its shape: the
            N*C values are laid out the same way).
        x: contiguous input in ``problem.layout``.
    """
    run_all(plan(problem, config, out, x))


def plan(problem: GapProblem, config: dict[str, Any], out: torch.Tensor,
         x: torch.Tensor) -> list[Launch]:
    """The kernel launches of :func:`launch` (same arguments), in order; allocates the split
    workspace on ``x``'s device (meta tensors give a plan without a GPU)."""
    p = problem
    hw, warps = p.h * p.w, config["num_warps"]
    big = x.numel() >= INT64_THRESHOLD
    if p.layout == "NCHW":
        rows, block_r = p.n * p.c, config["BLOCK_R"]
        return [Launch(_gap_rows_kernel, (triton.cdiv(rows, block_r),), (x, out, rows, hw),
                       {"BLOCK_R": block_r, "BLOCK_HW": config["BLOCK_HW"], "INT64": big},
                       warps)]
    block_c, block_hw = config["BLOCK_C"], config["BLOCK_HW"]
    # Whole BLOCK_HW steps per split, and no empty split.
    chunk = triton.cdiv(triton.cdiv(hw, config["SPLIT"]), block_hw) * block_hw
    split = triton.cdiv(hw, chunk)
    grid = (triton.cdiv(p.c, block_c), p.n, split)
    cols = {"BLOCK_C": block_c, "BLOCK_HW": block_hw, "INT64": big}
    if split == 1:
        return [Launch(_gap_cols_kernel, grid, (x, out, p.n, hw, p.c, chunk),
                       {**cols, "FINAL": True}, warps)]
    ws = torch.empty((split, p.n * p.c), dtype=torch.float32, device=x.device)
    block = 1024
    return [Launch(_gap_cols_kernel, grid, (x, ws, p.n, hw, p.c, chunk),
                   {**cols, "FINAL": False}, warps),
            Launch(_gap_finish_kernel, (triton.cdiv(p.n * p.c, block),),
                   (ws, out, p.n * p.c, hw),
                   {"SPLIT": split, "BLOCK": block, "INT64": ws.numel() >= INT64_THRESHOLD}, 4)]
