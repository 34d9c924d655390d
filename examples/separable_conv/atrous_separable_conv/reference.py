"""The float64 NumPy reference of separable_conv2d: slow, obvious, and the definition of
"correct" for every kernel config."""

from __future__ import annotations

import numpy as np

from atrous_separable_conv.spec import SepConvProblem


def reference(problem: SepConvProblem, x: np.ndarray, dw_weight: np.ndarray,
              pw_weight: np.ndarray, bias: np.ndarray | None) -> np.ndarray:
    """Depthwise dilated convolution, then the 1x1 pointwise one, + bias, ReLU; in float64.

    Args:
        problem: the validated SepConvProblem.
        x: the input in ``problem.layout``.
        dw_weight: (C, 1, k, k).
        pw_weight: (Cout, C, 1, 1).
        bias: (Cout,) or None.

    Returns:
        The float64 output in ``problem.layout``.
    """
    p = problem
    x = np.asarray(x, dtype=np.float64)
    if p.layout == "NHWC":
        x = x.transpose(0, 3, 1, 2)
    pt, pb, pl, pr = p.padding
    xp = np.pad(x, ((0, 0), (0, 0), (pt, pb), (pl, pr)))
    wd = np.asarray(dw_weight, dtype=np.float64)[:, 0]  # (C, k, k)
    depth = np.zeros((p.n, p.c, p.oh, p.ow))
    (sh, sw), (dh, dw) = p.stride, p.dilation
    with np.errstate(invalid="ignore"):  # 0 * Inf in the padding is NaN, as in torch
        for ky in range(p.k):
            for kx in range(p.k):
                window = xp[:, :, ky * dh: ky * dh + sh * (p.oh - 1) + 1: sh,
                            kx * dw: kx * dw + sw * (p.ow - 1) + 1: sw]
                depth += window * wd[None, :, ky, kx, None, None]
    wp = np.asarray(pw_weight, dtype=np.float64)[:, :, 0, 0]  # (Cout, C)
    out = np.einsum("nchw,oc->nohw", depth, wp)
    if bias is not None:
        out += np.asarray(bias, dtype=np.float64)[None, :, None, None]
    if p.activation == "relu":
        out = np.where(out < 0, 0.0, out)  # NaN stays NaN, as in torch.relu
    return out.transpose(0, 2, 3, 1) if p.layout == "NHWC" else out
