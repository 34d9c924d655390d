"""When the ``atrous.keras`` layers run atrous's kernels, and when they fall back to keras.ops.

A layer calls atrous's kernels only where that is both possible and safe:

- Keras runs the torch backend (``KERAS_BACKEND=torch``); under JAX or TensorFlow the
  layers run their ``keras.ops`` form and say so once per backend (a ``UserWarning``);
- the call is inference: ``training`` is not true, torch.compile is not tracing, and no
  gradient can be needed (autograd off, or neither the input nor a trainable weight of
  the layer requires grad): atrous's kernels have no backward, so when Keras trains or a
  ``GradientTape``-like torch autograd pass is recording, the ``keras.ops`` form runs and
  gradients flow;
- the input is a real CPU or CUDA tensor (not a symbolic or meta tensor) of a dtype atrous
  runs there: float32/float64 on the CPU, float16/bfloat16/float32 on CUDA.

CPU tensors then run atrous's Numba (and BLAS) engines and CUDA tensors its Triton kernels,
with the tuned configs of this machine's tuning database (the normal lookup).
:func:`fallback` forces the ``keras.ops`` form in a block, to compare the two.
"""

from __future__ import annotations

import contextlib
import threading
import warnings
from collections.abc import Iterable, Iterator
from typing import Any

import keras

CPU_DTYPES = ("float32", "float64")
GPU_DTYPES = ("float16", "bfloat16", "float32")

_local = threading.local()
_warned: set[str] = set()
_warned_lock = threading.Lock()


@contextlib.contextmanager
def fallback() -> Iterator[None]:
    """Run every ``atrous.keras`` layer's ``keras.ops`` form inside this block (this thread).

    >>> with atrous.keras.fallback():
    ...     reference = model.predict(x)   # what the stock Keras layers compute
    """
    previous = getattr(_local, "forced", False)
    _local.forced = True
    try:
        yield
    finally:
        _local.forced = previous


def forced() -> bool:
    """True inside :func:`fallback`."""
    return getattr(_local, "forced", False)


def _warn_once(backend: str) -> None:
    with _warned_lock:
        if backend in _warned:
            return
        _warned.add(backend)
    warnings.warn(f"atrous.keras: the Keras {backend!r} backend runs the layers' keras.ops form"
                  " (correct, not accelerated); atrous's kernels run under KERAS_BACKEND=torch",
                  UserWarning, stacklevel=3)


def use_kernels(x: Any, training: Any, variables: Iterable[Any] = ()) -> bool:
    """Whether a layer's call on ``x`` runs atrous's kernels (see the module docstring).

    Args:
        x: the layer's input, as Keras passes it to ``call``.
        training: the ``training`` argument of ``call`` (None, a bool or a bool tensor).
        variables: the layer's weights (Keras variables), whose ``trainable`` flag says
            whether autograd would want a gradient for them.
    """
    if forced():
        return False
    name = keras.backend.backend()
    if name != "torch":
        _warn_once(name)
        return False
    if training is not None and training is not False and bool(training):
        return False
    import torch

    if not isinstance(x, torch.Tensor) or x.device.type not in ("cpu", "cuda"):
        return False
    if torch.compiler.is_compiling():
        return False
    dtype = str(x.dtype).removeprefix("torch.")
    if dtype not in (GPU_DTYPES if x.device.type == "cuda" else CPU_DTYPES):
        return False
    # Autograd recording with something that wants a gradient: the kernels have no backward.
    wants_grad = x.requires_grad or any(v.trainable for v in variables)
    return not (torch.is_grad_enabled() and wants_grad)


class WeightCache:
    """A layer's weights in the form atrous's kernels take (OIHW, folded, cast), rebuilt only
    when a weight changes.

    Keras's torch backend keeps each variable as a torch Parameter and writes it in place
    (``set_weights``, ``assign``, optimizer steps), which bumps the tensor's version counter,
    so (data pointer, version, dtype, device) of every source tensor identifies its content.
    """

    def __init__(self) -> None:
        self._entries: dict[str, tuple[tuple, Any]] = {}

    def get(self, name: str, sources: Iterable[Any], build: Any, *extra: Any) -> Any:
        """``build()`` for the torch tensors ``sources``, cached under ``name`` until one of
        them (or ``extra``, e.g. the target dtype and device) changes."""
        key = (tuple((t.data_ptr(), t._version, t.dtype, t.device) for t in sources), extra)
        hit = self._entries.get(name)
        if hit is not None and hit[0] == key:
            return hit[1]
        value = build()
        self._entries[name] = (key, value)
        return value

    def clear(self) -> None:
        self._entries.clear()


def torch_value(variable: Any) -> Any:
    """The torch tensor behind a Keras variable (torch backend), detached."""
    return variable.value.detach()


def data_format(value: str | None) -> str:
    """"channels_last" / "channels_first" (Keras's image data format when None)."""
    if value is None:
        return keras.config.image_data_format()
    fmt = str(value).lower()
    if fmt not in ("channels_last", "channels_first"):
        raise ValueError(f"data_format must be 'channels_last' or 'channels_first', got"
                         f" {value!r}")
    return fmt
