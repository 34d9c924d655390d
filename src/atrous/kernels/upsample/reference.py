"""The NumPy reference for upsample_bilinear, in float64, written from the formulas alone."""

from __future__ import annotations

import math

import numpy as np

from atrous.kernels.upsample.spec import UpsampleProblem


def source_coordinate(o: int, size_in: int, size_out: int, scale: float | None,
                      mode: str) -> tuple[int, int, float]:
    """(i0, i1, lam) of output index ``o`` along one axis, one scalar at a time."""
    ratio = 1.0 / scale if scale is not None else size_in / size_out
    if mode == "align_corners":
        x = o * (size_in - 1) / (size_out - 1) if size_out > 1 else 0.0
    elif mode == "asymmetric":
        x = o * ratio
    elif mode == "pytorch_half_pixel" and size_out == 1:
        x = 0.0
    else:
        x = max(ratio * (o + 0.5) - 0.5, 0.0)
    i0 = min(math.floor(x), size_in - 1)
    lam = min(max(x - i0, 0.0), 1.0)
    return i0, min(i0 + 1, size_in - 1), lam


def reference(problem: UpsampleProblem, x: np.ndarray) -> np.ndarray:
    """Resample in float64: interpolate along W, then along H; output in ``problem``'s layout."""
    p = problem
    x = np.asarray(x, dtype=np.float64)
    if p.layout == "NHWC":
        x = x.transpose(0, 3, 1, 2)
    rows = [source_coordinate(o, p.h, p.oh, p.scale_h, p.mode) for o in range(p.oh)]
    cols = [source_coordinate(o, p.w, p.ow, p.scale_w, p.mode) for o in range(p.ow)]
    c0 = np.array([c[0] for c in cols])
    c1 = np.array([c[1] for c in cols])
    cl = np.array([c[2] for c in cols])
    along_w = (1.0 - cl) * x[..., c0] + cl * x[..., c1]  # (N, C, H, OW)
    out = np.empty((p.n, p.c, p.oh, p.ow))
    for o, (r0, r1, rl) in enumerate(rows):
        out[:, :, o, :] = (1.0 - rl) * along_w[:, :, r0, :] + rl * along_w[:, :, r1, :]
    return out.transpose(0, 2, 3, 1) if p.layout == "NHWC" else out
