"""Convolution weights packed once for the CPU variants, and the padding terms of
non-finite weights.

Every CPU variant reads the weights as ``[kh, kw, Cout, Cin/g]``: a tap is a (Cout, Cin/g)
matrix whose rows are contiguous over input channels (the tile kernel's dot products, the
NCHW GEMMs as they are, the NHWC GEMMs through a transposed view that BLAS reads without a
copy). :class:`PackedWeights` holds that packing, whether any weight is not finite, and the
Winograd variant's transformed filters, so a prepared convolution
(:func:`atrous.prepare_conv`) and the tuner pay for them once, not per call; plain calls
get theirs from the weight cache (:func:`atrous.plain_conv.for_plain_call`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numba import njit, prange

from atrous.kernels.conv import winograd_cpu
from atrous.kernels.conv.spec import ConvProblem


@dataclass
class PackedWeights:
    """Weights in the CPU variants' layout, holding no reference to the caller's array.

    Attributes:
        taps: (kh, kw, Cout, Cin/g) C-contiguous.
        nonfinite: whether any weight is NaN or Inf (padding then contributes NaN terms).
        weight: a copy of the (Cout, Cin/g, kh, kw) weights when ``nonfinite`` (read for
            the padding terms), else None.
        winograd: the Winograd variant's transformed filters, filled on first use.
    """

    taps: np.ndarray
    nonfinite: bool
    weight: np.ndarray | None = None
    winograd: dict = field(default_factory=dict)

    @property
    def nbytes(self) -> int:
        """Bytes held: the packing, the copy, the transformed filters."""
        held = self.taps.nbytes + (0 if self.weight is None else self.weight.nbytes)
        return held + sum(f.nbytes for f in list(self.winograd.values()))


@njit(parallel=True, cache=True)
def _pack(weight: np.ndarray, wp: np.ndarray) -> bool:  # pragma: no cover - jitted
    """Copy OIHW ``weight`` into ``wp`` [kh, kw, Cout, Cin/g]; True if any value is not finite."""
    cout, cin_g, kh, kw = weight.shape
    bad = 0
    for co in prange(cout):
        for ky in range(kh):
            for kx in range(kw):
                for ci in range(cin_g):
                    v = weight[co, ci, ky, kx]
                    wp[ky, kx, co, ci] = v
                    if not np.isfinite(v):
                        bad += 1
    return bad > 0


def pack(weight: np.ndarray) -> PackedWeights:
    """Pack C-contiguous OIHW ``weight`` for the CPU variants (a copy: later changes to
    ``weight`` do not reach the packing, which keeps no reference to it)."""
    cout, cin_g, kh, kw = weight.shape
    taps = np.empty((kh, kw, cout, cin_g), weight.dtype)
    nonfinite = bool(_pack(weight, taps))
    return PackedWeights(taps, nonfinite, np.array(weight, order="C") if nonfinite else None)


#: The Winograd filter transform's cost in units of one Winograd call of the problem: a
#: fixed part (fresh memory, tasks) and one per filter pair over the products it serves.
#: Fitted on the 2-core machine at ASPP shapes (33x33 rates 6/12/18: the transform took
#: 0.6-0.7, 0.9-1.2 and 0.4-0.6 calls); see docs/weight-cache.md.
TRANSFORM_FIXED, TRANSFORM_PER_FILTER = 0.3, 40.0

#: The "gemm" variant's time per product (padded taps skipped) over the Winograd
#: variant's, by layout, measured there too: NCHW 1.5-2.2 (column windows are copied, BLAS
#: runs its own threads), NHWC 0.5-2.2; the lower ends, so Winograd is not favoured wrongly.
GEMM_PER_PRODUCT = {"NCHW": 1.5, "NHWC": 1.0}


def winograd_pays_at_once(problem: ConvProblem) -> bool:
    """Whether a Winograd call with new weights, filter transform included, is estimated to
    beat a "gemm" call: the transform (in Winograd calls, see :data:`TRANSFORM_FIXED`)
    against what gemm costs more (``GEMM_PER_PRODUCT / saving - 1`` Winograd calls, where
    ``saving`` is Winograd's products over gemm's). Larger maps and batches amortise the
    filters better; rate 12 on 33x33 NHWC (64 filter pairs) does not pay at once."""
    ay, ax = winograd_cpu.plan(problem.h, problem.w, problem.dilation[0])
    pairs = len(ay.filters) * len(ax.filters)
    transform = TRANSFORM_FIXED + TRANSFORM_PER_FILTER * pairs / (
        problem.n * ay.products * ax.products)
    ratio = winograd_cpu.saving(problem.h, problem.w, problem.dilation[0])
    saved = GEMM_PER_PRODUCT[problem.layout] / ratio - 1.0
    return transform <= saved


def add_padding_terms(problem: ConvProblem, weight: np.ndarray, out: np.ndarray) -> None:
    """Add the reference's ``0 * weight`` products over the padding, which are NaN where a
    weight is NaN or Inf (call only then): per tap, outside its valid rectangle.

    ``out`` is in ``problem.layout``; the terms are 0 or NaN, so adding them after the
    bias and ReLU gives the reference's NaN positions.
    """
    p = problem
    nchw = p.layout == "NCHW"
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
            if nchw:
                out.transpose(0, 2, 3, 1)[:, outside, :] += zero_terms
            else:
                out[:, outside, :] += zero_terms
