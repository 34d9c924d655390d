"""Shared test helpers: available backends, their dtypes, seeded inputs and the one check."""

from __future__ import annotations

import importlib.util
from typing import Any

import numpy as np
from conftest import CUDA

from atrous.tolerance import compare

HAS_TORCH = importlib.util.find_spec("torch") is not None
HAS_TRITON = HAS_TORCH and importlib.util.find_spec("triton") is not None
DEVICE = "cuda" if CUDA else "cpu"
BACKENDS = ["numba"] + (["triton"] if HAS_TRITON else [])
DTYPES = {"numba": ["float32", "float64"], "triton": ["float32", "float16", "bfloat16"]}
LAYOUTS = ["NCHW", "NHWC"]


def backend_dtypes(op: str) -> list[tuple[str, str]]:
    """(backend, dtype) pairs to test for ``op``. The Triton interpreter's tl.dot is wrong on
    bfloat16 operands, so bfloat16 convolution runs only on a real GPU (tests/test_gpu.py)."""
    return [(b, d) for b in BACKENDS for d in DTYPES[b]
            if not (b == "triton" and op == "dilated_conv2d" and d == "bfloat16" and not CUDA)]


def seeded(shape: tuple[int, ...], seed: int) -> np.ndarray:
    """Standard-normal float64 data (never zeros) for ``seed``."""
    return np.random.default_rng(seed).standard_normal(shape)


def on_backend(a: np.ndarray | None, backend: str, dtype: str) -> Any:
    """``a`` cast to ``dtype``: a NumPy array for Numba, a torch tensor on DEVICE for Triton."""
    if a is None:
        return None
    if backend != "triton":
        return a.astype(dtype)
    import torch

    return torch.from_numpy(a).to(device=DEVICE, dtype=getattr(torch, dtype))


def as_float64(a: Any) -> np.ndarray | None:
    """A float64 NumPy copy of an array or tensor (the values the kernel actually saw)."""
    if a is None:
        return None
    if hasattr(a, "detach"):
        return a.detach().to("cpu").double().numpy()
    return np.asarray(a, dtype=np.float64)


def assert_close(out: Any, ref: np.ndarray, dtype: str) -> None:
    """Fail, showing the error, when ``out`` is outside ``dtype``'s tolerance of ``ref``."""
    result = compare(out, ref, dtype)
    assert result.ok, str(result)
