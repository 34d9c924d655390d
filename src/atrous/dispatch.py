"""From a validated Problem and the user's arrays to a finished output on one backend.

Chooses the backend from where the arrays live, the config (given, else the tuning
database's choice for this machine, else the heuristic default), checks or allocates
``out``, and calls the backend's
``launch(problem, config, out, *inputs)``. Launchers receive contiguous inputs and a
contiguous output of the problem's shape and dtype.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from atrous.autotune import lookup
from atrous.autotune.lookup import Choice
from atrous.core.args import CPU_DTYPES, FLOAT_DTYPES, GPU_DTYPES
from atrous.core.arrays import (
    Kind,
    check_inference,
    dtype_name,
    is_tensor,
    overlaps,
    triton_interpreted,
)
from atrous.core.op import Problem
from atrous.core.registry import BACKENDS, op
from atrous.core.run import given_config
from atrous.core.run import launch as run_launch
from atrous.core.space import Config

BACKEND_DTYPES = {"numba": CPU_DTYPES, "triton": GPU_DTYPES, "numpy": FLOAT_DTYPES}

# Per-call overhead matters: a small upsample runs in ~50 us. This memo holds only what
# cannot change within a process (the names of NumPy dtypes).
_NUMPY_DTYPE_NAMES: dict[np.dtype, str] = {}


def _dtype_name(a: Any) -> str:
    """``dtype_name(a)``, memoised for NumPy arrays (``str`` of a dtype costs ~2.5 us)."""
    if type(a) is not np.ndarray:
        return dtype_name(a)
    name = _NUMPY_DTYPE_NAMES.get(a.dtype)
    if name is None:
        name = _NUMPY_DTYPE_NAMES[a.dtype] = dtype_name(a)
    return name


def _main(problem: Problem, inputs: Mapping[str, Any]) -> Any:
    """The op's main input (its first declared array), which decides device and kind."""
    return inputs[op(problem.op).inputs[0]]


def resolve_backend(backend: str, kind: Kind, dtype: str) -> str:
    """The backend to run for ``backend`` ("auto" or a name) on arrays of ``kind`` and ``dtype``."""
    if backend == "auto":
        backend = "triton" if kind.name == "cuda" else "numba"
    elif backend not in BACKENDS:
        raise ValueError(f"backend must be 'auto' or one of {BACKENDS}, got {backend!r}")
    if backend == "numba" and kind.name == "cuda":
        raise ValueError("backend='numba' runs on the CPU but the inputs are CUDA tensors;"
                         " use backend='auto' or 'triton', or move them with .cpu()")
    if backend == "triton" and kind.name != "cuda" and not (kind.torch and triton_interpreted()):
        got = "CPU tensors" if kind.torch else "NumPy arrays"
        raise ValueError(f"backend='triton' needs CUDA tensors, got {got}"
                         " (CPU tensors run under TRITON_INTERPRET=1, a debugging mode)")
    if dtype not in BACKEND_DTYPES[backend]:
        raise TypeError(f"backend {backend!r} supports {'/'.join(BACKEND_DTYPES[backend])},"
                        f" got {dtype}")
    return backend


def choose(problem: Problem, backend: str, config: Mapping[str, Any] | None,
           device: str = "cpu") -> Choice:
    """The config to run and where it came from.

    A given config may name only some keys: the rest come from the default, and every key
    and value is checked against the backend's Space. Without one, the tuning database is
    consulted (exact problem, nearest tuned shape, same machine family), falling back to
    the spec's heuristic default; nothing is ever benchmarked here.
    """
    if config is None:
        if backend == "numpy":
            return Choice({}, "default", "the reference has no config")
        return lookup.find(problem, backend, device)
    return Choice(given_config(problem, backend, config), "given", "passed as config=")


def choose_config(problem: Problem, backend: str, config: Mapping[str, Any] | None,
                  device: str = "cpu") -> tuple[Config, str]:
    """The config to run and its source ("given", "exact", "nearest", "family" or
    "default"); see :func:`choose`."""
    choice = choose(problem, backend, config, device)
    return choice.config, choice.source


def device_of(a: Any) -> str:
    """"cpu", or "cuda:N" for a tensor on a GPU."""
    return str(a.device) if is_tensor(a) and a.device.type == "cuda" else "cpu"


def _check_out(out: Any, problem: Problem, kind: Kind, like: Any,
               inputs: Mapping[str, Any] | None = None) -> None:
    """:func:`check_out` for ``problem``'s output shape and dtype."""
    check_out(out, tuple(problem.out_shape), problem.dtype, kind, like, inputs)


def check_out(out: Any, shape: tuple[int, ...], dtype: str, kind: Kind, like: Any,
              inputs: Mapping[str, Any] | None = None) -> None:
    """Check a caller's ``out``: an array of the inputs' kind (TypeError), writable
    (TypeError), of ``shape``, ``dtype`` and ``like``'s device, C-contiguous, and sharing
    no memory with any of ``inputs`` (ValueError: a kernel would read what it wrote)."""
    expected = "torch.Tensor" if kind.torch else "numpy.ndarray"
    if not (is_tensor(out) if kind.torch else isinstance(out, np.ndarray)):
        raise TypeError(f"out must be a {expected} like the inputs, got {type(out).__name__}")
    if not kind.torch and not out.flags.writeable:
        raise TypeError("out must be a writable numpy.ndarray, got a read-only array")
    got_shape = tuple(out.shape)
    if got_shape != shape or _dtype_name(out) != dtype:
        raise ValueError(f"out must have shape {shape} and dtype {dtype}, got shape {got_shape}"
                         f" and dtype {dtype_name(out)}")
    if kind.torch and out.device != like.device:
        raise ValueError(f"out is on {out.device} but the inputs are on {like.device}")
    contiguous = out.is_contiguous() if kind.torch else out.flags.c_contiguous
    if not contiguous:
        raise ValueError("out must be C-contiguous")
    for name, a in (inputs or {}).items():
        if (is_tensor(a) if kind.torch else isinstance(a, np.ndarray)) and overlaps(out, a):
            raise ValueError(f"out overlaps the memory of {name}: the kernel would read what"
                             f" it already wrote; pass a separate buffer (out and {name} have"
                             f" shapes {got_shape} and {tuple(a.shape)})")


def check_call(problem: Problem, inputs: Mapping[str, Any], kind: Kind, out: Any) -> None:
    """The checks every call makes on the caller's own arrays: no input or ``out`` that
    needs grad, and an ``out`` of the right kind, shape and dtype that aliases no input.
    (A caller that swaps an input for a prepared form runs them before the swap.)"""
    check_inference(f"atrous.{problem.op}", **inputs, out=out)
    if out is not None:
        _check_out(out, problem, kind, _main(problem, inputs), inputs)


def run(problem: Problem, inputs: Mapping[str, Any], kind: Kind, *, backend: str = "auto",
        config: Mapping[str, Any] | None = None, out: Any = None) -> Any:
    """Run ``problem`` on ``inputs`` (named as the op's inputs) and return the output array."""
    name = resolve_backend(backend, kind, problem.dtype)
    check_call(problem, inputs, kind, out)
    cfg = choose(problem, name, config, device_of(_main(problem, inputs))).config
    return launch(problem, inputs, kind, name, cfg, out)


def launch(problem: Problem, inputs: Mapping[str, Any], kind: Kind, name: str, config: Config,
           out: Any = None) -> Any:
    """Run ``problem`` on backend ``name`` with a full, validated ``config`` (from
    :func:`choose`), on arrays that :func:`check_call` has passed; return the output
    (:func:`atrous.core.run.launch`)."""
    return run_launch(problem, inputs, kind, name, config, out)
