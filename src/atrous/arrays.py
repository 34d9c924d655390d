"""What kind of array a user passed (NumPy, torch CPU, torch CUDA), without importing torch."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np


def is_tensor(a: object) -> bool:
    """True for a torch.Tensor, checked without importing torch."""
    return type(a).__module__.startswith("torch") and hasattr(a, "device") and hasattr(a, "dtype")


def dtype_name(a: Any) -> str:
    """"float32", "bfloat16", ... for a NumPy array or a torch tensor."""
    if is_tensor(a):
        return str(a.dtype).removeprefix("torch.")
    return str(a.dtype)


@dataclass(frozen=True)
class Kind:
    """Where a call's arrays live: "numpy", "cpu" (torch CPU tensors) or "cuda"."""

    name: str

    @property
    def torch(self) -> bool:
        return self.name != "numpy"


def kind_of(**arrays: Any) -> Kind:
    """The common kind of the given (non-None) arrays; TypeError/ValueError when they mix."""
    kinds = {}
    for name, a in arrays.items():
        if a is None:
            continue
        if is_tensor(a):
            kinds[name] = "cuda" if a.device.type == "cuda" else "cpu"
            if a.device.type not in ("cpu", "cuda"):
                raise ValueError(f"{name} is on device {a.device}; atrous runs on cpu and cuda")
        elif isinstance(a, np.ndarray):
            kinds[name] = "numpy"
        else:
            raise TypeError(
                f"{name} must be a numpy.ndarray or a torch.Tensor, got {type(a).__name__}")
    values = set(kinds.values())
    if values == {"cpu", "cuda"}:
        shown = ", ".join(f"{k} on {v}" for k, v in kinds.items())
        raise ValueError(f"mixed devices: {shown}")
    if len(values) > 1:
        shown = ", ".join(f"{k}: {'ndarray' if v == 'numpy' else 'tensor'}"
                          for k, v in kinds.items())
        raise TypeError(f"mix of NumPy arrays and torch tensors: {shown}")
    if arrays.get("x") is not None and is_tensor(arrays["x"]) and len(
            {str(a.device) for a in arrays.values() if a is not None}) > 1:
        shown = ", ".join(f"{k} on {a.device}" for k, a in arrays.items() if a is not None)
        raise ValueError(f"mixed devices: {shown}")
    return Kind(values.pop())


def triton_interpreted() -> bool:
    """True when Triton runs kernels on the CPU (TRITON_INTERPRET=1, a debugging mode)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def to_numpy(a: Any) -> np.ndarray:
    """A NumPy view of a CPU tensor (zero-copy), or the array itself."""
    if is_tensor(a):
        return a.detach().numpy()
    return a
