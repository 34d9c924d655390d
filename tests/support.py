"""Shared test helpers: available backends, their dtypes, seeded inputs and the one check."""

from __future__ import annotations

import importlib.util
from typing import Any

import numpy as np
from conftest import CUDA

from atrous.core.tolerance import compare

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


#: Appended to a child script that imported a kernel module as ``k`` and ran its kernels:
#: prints each jitted function's on-disk cache hits and misses as JSON.
CACHE_STATS = """
import json, sys
stats = {name: [len(f.stats.cache_hits), len(f.stats.cache_misses)]
         for name, f in vars(k).items() if hasattr(f, "stats") and not name.startswith("_")}
json.dump(stats, sys.stdout)
"""


def assert_second_process_compiles_nothing(child: str, cache_dir: Any,
                                           kernels: set[str]) -> None:
    """Run ``child + CACHE_STATS`` twice in fresh processes sharing a Numba cache in
    ``cache_dir``: the first compiles and saves exactly ``kernels``, the second loads them
    all and compiles nothing (no "Cannot cache" warning either time)."""
    import json
    import os
    import subprocess
    import sys

    env = {**os.environ, "NUMBA_CACHE_DIR": str(cache_dir), "NUMBA_NUM_THREADS": "2"}

    def run() -> dict[str, list[int]]:
        done = subprocess.run([sys.executable, "-c", child + CACHE_STATS], env=env,
                              capture_output=True, text=True, check=True)
        assert "Cannot cache" not in done.stderr, done.stderr
        return json.loads(done.stdout)

    first = run()
    assert set(first) == kernels
    assert all(misses > 0 for _, misses in first.values())  # compiled, and saved
    second = run()
    for name, (hits, misses) in second.items():
        assert misses == 0 and hits > 0, f"{name} was compiled again: {second}"
