"""Convolution weights packed once for the CPU variants, and the padding terms of
non-finite weights.

Every CPU variant reads the weights as ``[kh, kw, Cout, Cin/g]``: a tap is a (Cout, Cin/g)
matrix whose rows are contiguous over input channels (the tile kernel's dot products, the
NCHW GEMMs as they are, the NHWC GEMMs through a transposed view that BLAS reads without a
copy). :class:`PackedWeights` holds that packing, whether any weight is not finite, and the
Winograd variant's transformed filters, so a prepared convolution
(:func:`atrous.prepare_conv`) and the tuner pay for them once, not per call.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numba import njit, prange

from atrous.kernels.conv.spec import ConvProblem


@dataclass
class PackedWeights:
    """Weights in the CPU variants' layout.

    Attributes:
        weight: the original (Cout, Cin/g, kh, kw) weights (read only for padding terms).
        taps: (kh, kw, Cout, Cin/g) C-contiguous.
        nonfinite: whether any weight is NaN or Inf (padding then contributes NaN terms).
        winograd: the Winograd variant's transformed filters, filled on first use.
    """

    weight: np.ndarray
    taps: np.ndarray
    nonfinite: bool
    winograd: dict = field(default_factory=dict)


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
    ``weight`` do not reach the packing)."""
    cout, cin_g, kh, kw = weight.shape
    taps = np.empty((kh, kw, cout, cin_g), weight.dtype)
    nonfinite = bool(_pack(weight, taps))
    return PackedWeights(weight.copy() if nonfinite else weight, taps, nonfinite)


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
