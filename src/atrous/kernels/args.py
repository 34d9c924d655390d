"""Argument checks shared by every op's spec: dtypes, layouts, pairs and shapes."""

from __future__ import annotations

import functools
import numbers
import os
from collections.abc import Sequence

LAYOUTS = ("NCHW", "NHWC")
CPU_DTYPES = ("float32", "float64")
GPU_DTYPES = ("float16", "bfloat16", "float32")
FLOAT_DTYPES = ("float16", "bfloat16", "float32", "float64")
ITEMSIZE = {"float16": 2, "bfloat16": 2, "float32": 4, "float64": 8}


def check_layout(layout: object) -> str:
    """Return ``layout`` if it is "NCHW" or "NHWC", else raise ValueError."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    return layout  # type: ignore[return-value]


def check_dtype(name: str, dtype: str) -> str:
    """Return ``dtype`` if it is a floating dtype atrous knows, else raise TypeError."""
    if dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} must be a floating array ({'/'.join(FLOAT_DTYPES)}), got {dtype}")
    return dtype


def same_dtype(**dtypes: str | None) -> str:
    """Check that all given (non-None) dtypes are one floating dtype and return it."""
    given = {k: v for k, v in dtypes.items() if v is not None}
    for k, v in given.items():
        check_dtype(k, v)
    if len(set(given.values())) > 1:
        shown = ", ".join(f"{k}={v}" for k, v in given.items())
        raise TypeError(f"mixed dtypes are not supported: {shown}")
    return next(iter(given.values()))


def check_shape(name: str, shape: Sequence[int], ndim: int, layout: str | None = None) -> tuple:
    """Check ``shape`` has ``ndim`` dimensions, none of them zero; return it as a tuple."""
    shape = tuple(int(s) for s in shape)
    if len(shape) != ndim:
        what = f" ({layout})" if layout else ""
        raise ValueError(f"{name} must be {ndim}-D{what}, got shape {shape}")
    if any(s == 0 for s in shape):
        raise ValueError(f"{name} has a zero-size dimension, shape {shape}: not supported")
    return shape


def to_nchw(shape: tuple[int, int, int, int], layout: str) -> tuple[int, int, int, int]:
    """(N, C, H, W) from a 4-D shape given in ``layout``."""
    if layout == "NCHW":
        return shape
    n, h, w, c = shape
    return (n, c, h, w)


def from_nchw(n: int, c: int, h: int, w: int, layout: str) -> tuple[int, int, int, int]:
    """A 4-D shape in ``layout`` from its (N, C, H, W) sizes."""
    return (n, c, h, w) if layout == "NCHW" else (n, h, w, c)


def int_pair(name: str, value: object, minimum: int) -> tuple[int, int]:
    """Normalise an int or a pair of ints to a pair, each at least ``minimum``."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        pair = (int(value), int(value))
    elif (
        isinstance(value, Sequence)
        and not isinstance(value, str)
        and len(value) == 2
        and all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in value)
    ):
        pair = (int(value[0]), int(value[1]))
    else:
        raise TypeError(f"{name} must be an int or a pair of ints, got {value!r}")
    if min(pair) < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
    return pair


@functools.cache
def cores() -> int:
    """The machine's CPU count, read once (``os.cpu_count`` reads /sys: ~6 us a call)."""
    return os.cpu_count() or 1


def thread_choices(cores: int) -> tuple[int, ...]:
    """Thread counts worth trying on a machine with ``cores`` cores: powers of two and all."""
    choices = {1, cores}
    t = 2
    while t < cores:
        choices.add(t)
        t *= 2
    return tuple(sorted(choices))
