"""Argument checks shared by every op's spec: dtypes, layouts, pairs and shapes."""

from __future__ import annotations

import functools
import math
import numbers
import os
from collections.abc import Sequence

LAYOUTS = ("NCHW", "NHWC")
CPU_DTYPES = ("float32", "float64")
GPU_DTYPES = ("float16", "bfloat16", "float32")
FLOAT_DTYPES = ("float16", "bfloat16", "float32", "float64")
ITEMSIZE = {"float16": 2, "bfloat16": 2, "float32": 4, "float64": 8}
#: The most elements an array may have (and the largest size or parameter): byte sizes
#: (8 bytes an element at most) and flat indices then fit the signed 64-bit integers that
#: NumPy and Numba's kernels compute with.
MAX_ELEMENTS = 2**59


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
    """Check ``shape`` has ``ndim`` positive integer dimensions (not bools) and at most
    ``MAX_ELEMENTS`` elements; return it as a tuple of ints. ValueError names ``name``."""
    try:
        dims = shape if type(shape) is tuple else tuple(shape)
    except TypeError:
        raise ValueError(f"{name} must have a shape (a sequence of ints), got {shape!r}") from None
    if len(dims) != ndim:
        what = f" ({layout})" if layout else ""
        raise ValueError(f"{name} must be {ndim}-D{what}, got shape {dims}")
    count = 1
    for s in dims:  # the common case, plain positive ints, costs one pass (per-call overhead)
        if type(s) is not int or s < 1:
            return _checked_shape(name, dims)
        count *= s
    if count > MAX_ELEMENTS:
        check_elements(name, dims)
    return dims


def _checked_shape(name: str, dims: tuple) -> tuple[int, ...]:
    """:func:`check_shape`'s slow path: NumPy integers converted, everything else refused."""
    if any(isinstance(s, bool) or not isinstance(s, numbers.Integral) for s in dims):
        raise ValueError(f"{name} must have integer sizes, got shape {dims!r}")
    dims = tuple(int(s) for s in dims)
    if min(dims) < 0:
        raise ValueError(f"{name} has a negative dimension, shape {dims}")
    if min(dims) == 0:
        raise ValueError(f"{name} has a zero-size dimension, shape {dims}: not supported")
    check_elements(name, dims)
    return dims


def check_elements(name: str, shape: tuple[int, ...]) -> int:
    """The element count of ``shape``; ValueError naming ``name`` past ``MAX_ELEMENTS``."""
    count = math.prod(shape)
    if count > MAX_ELEMENTS:
        raise ValueError(f"{name} would have {count} elements (shape {shape}); atrous indexes"
                         f" arrays of at most 2**{MAX_ELEMENTS.bit_length() - 1} elements")
    return count


def check_sizes(owner: str, names: tuple[str, ...], values: tuple) -> None:
    """The cheap check of a Problem's own fields: each size is an int (not a bool) in
    [1, MAX_ELEMENTS]; ValueError naming ``owner.<name>`` otherwise."""
    for value in values:
        if type(value) is not int or not 0 < value <= MAX_ELEMENTS:
            break
    else:
        return
    for field, value in zip(names, values, strict=True):
        if type(value) is not int or not 0 < value <= MAX_ELEMENTS:
            raise ValueError(f"{owner}.{field} must be a positive int, got {value!r}")


def check_fields(owner: str, dtype: object, layout: object) -> None:
    """A Problem's dtype and layout are names atrous knows; ValueError otherwise."""
    if dtype not in FLOAT_DTYPES:
        raise ValueError(f"{owner}.dtype must be one of {FLOAT_DTYPES}, got {dtype!r}")
    if layout not in LAYOUTS:
        raise ValueError(f"{owner}.layout must be one of {LAYOUTS}, got {layout!r}")


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
    if max(pair) > MAX_ELEMENTS:  # kernels compute offsets from it in 64-bit integers
        raise ValueError(f"{name} must be at most 2**{MAX_ELEMENTS.bit_length() - 1},"
                         f" got {value!r}")
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
