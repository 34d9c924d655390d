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


_TOO_HARD = getattr(np, "exceptions", np).TooHardError  # NumPy < 1.25: np.TooHardError


def _byte_range(a: Any) -> tuple[int, int] | None:
    """[first, last] byte address a tensor can touch, or None when it has no elements."""
    if a.numel() == 0:
        return None
    start = a.data_ptr()
    span = sum((size - 1) * abs(stride) for size, stride in zip(a.shape, a.stride(),
                                                                 strict=True))
    return start, start + (span + 1) * a.element_size() - 1


def overlaps(a: Any, b: Any) -> bool:
    """True when arrays ``a`` and ``b`` (both NumPy or both torch) may share memory.

    NumPy: the bounds check, then the exact test where it is cheap (a case too hard to
    decide counts as overlapping). Torch: overlapping byte ranges on one device, then for
    CPU tensors NumPy's exact test where the dtype allows it.
    """
    if not is_tensor(a):
        if not np.may_share_memory(a, b):
            return False
        try:
            return bool(np.shares_memory(a, b, max_work=10_000))
        except _TOO_HARD:
            return True
    if a.device != b.device:
        return False
    ra, rb = _byte_range(a), _byte_range(b)
    if ra is None or rb is None or ra[1] < rb[0] or rb[1] < ra[0]:
        return False
    if a.device.type == "cpu" and "bfloat16" not in (dtype_name(a), dtype_name(b)):
        return overlaps(to_numpy(a), to_numpy(b))  # interleaved views need not touch
    return True


def check_inference(what: str, *arrays: Any, **named: Any) -> None:
    """Raise RuntimeError when autograd would need a gradient through atrous, which is
    inference-only (its kernels have no backward): grad mode is on and an input requires
    grad. Only ``requires_grad`` and grad mode are read, so torch.compile can trace it.

    Args:
        what: the function's public name, for the message (e.g. "atrous.dilated_conv2d").
        arrays, named: the inputs, unnamed or by argument name (named ones are cited).
    """
    wanting = [name for name, a in named.items() if getattr(a, "requires_grad", False)]
    if not wanting and not any(getattr(a, "requires_grad", False) for a in arrays):
        return
    import torch

    if not torch.is_grad_enabled():
        return
    which = f"{' and '.join(wanting)} {'require' if len(wanting) > 1 else 'requires'} grad" \
        if wanting else "an input or parameter requires grad"
    raise RuntimeError(
        f"{what} is inference-only (atrous kernels have no backward), but autograd is"
        f" enabled and {which}. Run it under torch.no_grad() / torch.inference_mode(),"
        " or call requires_grad_(False).")
