"""The NumPy reference for global_avg_pool, in float64."""

from __future__ import annotations

import numpy as np

from atrous.kernels.gap.spec import GapProblem


def reference(problem: GapProblem, x: np.ndarray) -> np.ndarray:
    """Mean over H and W, computed in float64; the output keeps ``problem``'s layout."""
    x = np.asarray(x, dtype=np.float64)
    axes = (2, 3) if problem.layout == "NCHW" else (1, 2)
    total = x.sum(axis=axes, keepdims=problem.keepdims)
    return total / (problem.h * problem.w)
