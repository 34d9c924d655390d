"""The NumPy reference for dilated_conv2d, in float64: zero-pad, then one product per tap."""

from __future__ import annotations

import numpy as np

from atrous.kernels.conv.spec import ConvProblem


def reference(problem: ConvProblem, x: np.ndarray, weight: np.ndarray,
              bias: np.ndarray | None = None) -> np.ndarray:
    """Convolve in float64 and return the output in ``problem``'s layout.

    For every tap (ky, kx) the strided, dilated window of the zero-padded input is multiplied
    by that tap's (Cin/g, Cout/g) weight matrix, group by group, and summed.
    """
    p = problem
    x = np.asarray(x, dtype=np.float64)
    if p.layout == "NHWC":
        x = x.transpose(0, 3, 1, 2)
    weight = np.asarray(weight, dtype=np.float64)
    pt, pb, pl, pr = p.padding
    xp = np.pad(x, ((0, 0), (0, 0), (pt, pb), (pl, pr)))
    (sh, sw), (dh, dw), g = p.stride, p.dilation, p.groups
    cin_g, cout_g = p.cin // g, p.cout // g
    out = np.zeros((p.n, p.cout, p.oh, p.ow))
    for ky in range(p.kh):
        for kx in range(p.kw):
            rows = slice(ky * dh, ky * dh + sh * (p.oh - 1) + 1, sh)
            cols = slice(kx * dw, kx * dw + sw * (p.ow - 1) + 1, sw)
            window = xp[:, :, rows, cols]  # (N, Cin, OH, OW)
            for gi in range(g):
                xs = window[:, gi * cin_g:(gi + 1) * cin_g]
                ws = weight[gi * cout_g:(gi + 1) * cout_g, :, ky, kx]  # (Cout/g, Cin/g)
                prod = np.tensordot(xs, ws, axes=([1], [1]))  # (N, OH, OW, Cout/g)
                out[:, gi * cout_g:(gi + 1) * cout_g] += prod.transpose(0, 3, 1, 2)
    if bias is not None:
        out += np.asarray(bias, dtype=np.float64)[None, :, None, None]
    if p.activation == "relu":
        out = np.maximum(out, 0.0)  # keeps NaN, as torch.relu does
    return out.transpose(0, 2, 3, 1) if p.layout == "NHWC" else out
