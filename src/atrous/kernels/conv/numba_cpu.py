"""Numba CPU kernels for dilated_conv2d and the launcher of the CPU variants.

The config's ``variant`` picks the algorithm (``spec.cpu_variants``):

* "tile" (any convolution, the code below): per-tap shifted GEMMs on NHWC with generated
  register tiles. For tap (ky, kx) only the rectangle of output pixels whose input lies
  inside the image is computed (``ConvProblem.valid_taps``), so the zero padding of large
  dilations costs nothing. Each output row ``(n, oy)`` is one parallel work item. Inside
  it, for every tap and every block of BLOCK_CO output channels, a register tile of
  BLOCK_OW output pixels x BLOCK_CO output channels is accumulated as BLOCK_OW * BLOCK_CO
  dot products over the input channels of the group. Input pixels (NHWC) and packed
  weight rows ``[kh, kw, Cout, Cin/g]`` are both contiguous over input channels, so LLVM
  vectorises the reduction loop with one vector accumulator per tile element (this beats
  broadcasting over output channels, which Numba cannot keep in registers).
* "gemm" (stride 1, one group): one BLAS product per valid tap, both layouts natively
  (``gemm_cpu``).
* "winograd" ("same" 3x3, stride 1): Winograd F(m,3) tiles along the dilated lines
  (``winograd_cpu``); it falls back to "gemm" when an input or weight is not finite, where
  its transforms would turn Inf into NaN.

Tile sizes are compile-time constants baked into generated source, written to the kernel
cache directory (``atrous.kernels.codegen``) so Numba caches the machine code on disk and a
new process loads it instead of compiling; the thread count is applied at launch. Weights
arrive packed: once for good by :func:`prepare` (the tuner, ``atrous bench``) and
:func:`atrous.prepare_conv`, and once per weights for plain calls (the weight cache,
``atrous.plain_conv.for_plain_call``); raw weights are packed per call.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from atrous.kernels import codegen
from atrous.kernels.conv import gemm_cpu, winograd_cpu
from atrous.kernels.conv.schedule_cpu import Blocking, Schedule
from atrous.kernels.conv.spec import ConvProblem
from atrous.kernels.conv.weights_cpu import PackedWeights, add_padding_terms, pack
from atrous.kernels.threads_cpu import config_threads, with_threads

# No nnan/ninf: NaN and Inf must propagate exactly as in the reference.
FASTMATH = {"reassoc", "contract", "arcp"}


def _tile_source(bo: int, bc: int) -> str:
    """Source of a ``bo`` pixels x ``bc`` channels register tile: adds the dot products of
    input pixel rows with weight rows over ``kn`` input channels into ``orow``.

    Only the first ``nx`` pixels and ``nc`` channels are stored; the rest of the tile
    re-reads the last valid row (always in bounds), so one full-speed tile covers a ragged
    edge instead of several narrow ones.
    """
    tile = [(j, c) for j in range(bo) for c in range(bc)]
    lines = ["@njit(cache=True, fastmath=FASTMATH)",
             "def tile(xrow, wt, orow, ox, nx, co, nc, cb, kn, sw, xoff):"]
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


#: The kernel around the tile (BO and BC are substituted); see :func:`build_kernel`.
_KERNEL_SOURCE = '''
@njit(parallel=True, cache=True, fastmath=FASTMATH)
def kernel(x, wp, bias, taps, out, sh, sw, dh, dw, pt, pl, groups, relu):
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
                for co in range(g * cout_g, co_end, BC):
                    nc = min(BC, co_end - co)
                    for ox in range(xlo, xhi, BO):
                        tile(xrow, wt, orow, ox, min(BO, xhi - ox), co, nc, cb, cin_g, sw,
                             xoff)
        if relu:
            for ox in range(ow):
                for co in range(cout):
                    if orow[ox, co] < 0:  # NaN < 0 is False: NaN stays, as in torch.relu
                        orow[ox, co] = 0.0
'''


def kernel_source(block_ow: int, block_co: int) -> str:
    """The complete module source of the tile kernel for one (BLOCK_OW, BLOCK_CO)."""
    head = ("from numba import njit, prange\n\n"
            f"FASTMATH = set({sorted(FASTMATH)!r})\nBO = {block_ow}\nBC = {block_co}\n\n\n")
    return head + _tile_source(block_ow, block_co) + "\n" + _KERNEL_SOURCE


def build_kernel(block_ow: int, block_co: int) -> Callable[..., None]:
    """The tile kernel for one (BLOCK_OW, BLOCK_CO), from the on-disk kernel cache.

    The returned function is ``kernel(x, wp, bias, taps, out, sh, sw, dh, dw, pt, pl,
    groups, relu)`` with x (N, H, W, Cin), wp (kh, kw, Cout, Cin/g), bias (Cout,), taps
    (T, 6) int64 rows ``(ky, kx, oy_lo, oy_hi, ox_lo, ox_hi)`` and out (N, OH, OW, Cout).
    """
    return codegen.function(f"conv_tile_{block_ow}x{block_co}",
                            kernel_source(block_ow, block_co), "kernel")


def prepare(problem: ConvProblem, config: dict[str, Any], arrays: list[Any]) -> list[Any]:
    """``[x, weight, bias]`` with the weight packed once (see :class:`PackedWeights`), and
    for the "winograd" variant its filters transformed, for callers that run one problem
    and config many times (the tuner, ``atrous bench``)."""
    x, weight, bias = arrays
    packed = weight if isinstance(weight, PackedWeights) else pack(weight)
    if config["variant"] == "winograd":
        winograd_cpu.schedule_filters(problem, packed.taps, packed.winograd,
                                      Schedule.of(config))
    return [x, packed, bias]


def launch(problem: ConvProblem, config: dict[str, Any], out: np.ndarray, x: np.ndarray,
           weight: np.ndarray | PackedWeights, bias: np.ndarray | None) -> None:
    """Write the convolution of ``x`` with ``weight`` (+ ``bias``, ReLU) into ``out``.

    Args:
        problem: the validated ConvProblem.
        config: a full config of ``numba_space(problem)`` (the variant, its keys, threads).
        out: C-contiguous output of ``problem.out_shape`` in ``problem.layout``.
        x: C-contiguous input in ``problem.layout``.
        weight: C-contiguous OIHW weight (Cout, Cin/groups, kh, kw), or its packing.
        bias: (Cout,) or None.
    """
    p = problem
    packed = weight if isinstance(weight, PackedWeights) else pack(weight)
    variant = config["variant"]
    if variant == "winograd" and (packed.nonfinite or not np.isfinite(x.sum())):
        variant = "gemm"  # a sum is NaN or Inf when any input is: then no Winograd
    if variant == "gemm":
        gemm_cpu.run(p, packed.taps, bias, x, out, Blocking.of(config))
    elif variant == "winograd":
        _winograd(p, config, packed, bias, x, out)
    else:
        _tile(p, config, packed.taps, bias, x, out)
    if packed.nonfinite:
        add_padding_terms(p, packed.weight, out)


def _winograd(p: ConvProblem, config: dict[str, Any], packed: PackedWeights,
              bias: np.ndarray | None, x: np.ndarray, out: np.ndarray) -> None:
    """The "winograd" variant (both layouts, bias and ReLU inside its tasks), cut into
    tasks as the config's WINO_* keys and ``threads`` say."""
    winograd_cpu.run(p, packed.taps, packed.winograd, x, out, bias, Schedule.of(config))


def _tile(p: ConvProblem, config: dict[str, Any], wp: np.ndarray, bias: np.ndarray | None,
          x: np.ndarray, out: np.ndarray) -> None:
    """The "tile" variant: the generated kernel on NHWC (NCHW is transposed in and out)."""
    kernel = build_kernel(int(config["BLOCK_OW"]), int(config["BLOCK_CO"]))
    dtype = np.dtype(p.dtype)
    if p.layout == "NCHW":
        x_nhwc = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
        out_nhwc = np.empty((p.n, p.oh, p.ow, p.cout), dtype=dtype)
    else:
        x_nhwc, out_nhwc = x, out
    bias_v = np.zeros(p.cout, dtype=dtype) if bias is None else bias
    taps = np.array(p.valid_taps, dtype=np.int64).reshape(-1, 6)
    with_threads(config_threads(config), kernel, (
        x_nhwc, wp, bias_v, taps, out_nhwc, p.stride[0], p.stride[1], p.dilation[0],
        p.dilation[1], p.padding[0], p.padding[2], p.groups, p.activation == "relu"))
    if p.layout == "NCHW":
        out[...] = out_nhwc.transpose(0, 3, 1, 2)
