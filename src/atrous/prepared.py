"""Prepared convolutions: weights checked, copied and packed once, then called on inputs.

``atrous.dilated_conv2d(x, weight, ...)`` keeps the packing of weights it has seen in the
weight cache (``atrous.weight_cache``), but checks per call that they did not change (a
byte comparison for NumPy arrays) and makes the Winograd filters only when the same
weights come a second time. A model calls the same convolution again and again, so
:func:`prepare_conv` does all of that once and returns a callable, like a module holding
its parameters: ``conv = atrous.prepare_conv(w, b, dilation=12, padding="same"); y = conv(x)``.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import numpy as np

from atrous import dispatch
from atrous.api import prepare_call
from atrous.core.arrays import is_tensor, kind_of, to_numpy

Array = Any  # numpy.ndarray or torch.Tensor


class PreparedConv:
    """A convolution with fixed weights; call it as ``conv(x, out=None, config=None)``.

    Build it with :func:`prepare_conv`. The weights are copied when it is built and never
    handed out for writing, so nothing a caller does can make them drift from their packing
    (made once, on the first CPU call): ``weight`` and ``bias`` are read-only NumPy views
    (or, for tensors, fresh copies), ``options`` a read-only mapping, and assigning any of
    them raises AttributeError. For other weights, build another one.
    """

    __slots__ = ("_backend", "_bias", "_options", "_packed", "_shapes", "_weight")

    def __init__(self, weight: Array, bias: Array | None, options: dict[str, Any],
                 backend: str) -> None:
        kind_of(weight=weight, bias=bias)  # arrays or tensors, one kind, one device
        if len(weight.shape) != 4:
            raise ValueError(f"weight must be 4-D (Cout, Cin/groups, kh, kw), got shape"
                             f" {tuple(weight.shape)}")
        self._weight = _private_copy(weight)
        self._bias = None if bias is None else _private_copy(bias)
        self._shapes = (tuple(weight.shape), None if bias is None else tuple(bias.shape))
        self._options = MappingProxyType(dict(options))
        self._backend = backend
        self._packed: Any = None

    @property
    def weight(self) -> Array:
        """The (Cout, Cin/groups, kh, kw) weights: a read-only view (NumPy) or a copy."""
        return _exposed(self._weight)

    @property
    def bias(self) -> Array | None:
        """The (Cout,) bias or None: a read-only view (NumPy) or a copy (tensor)."""
        return None if self._bias is None else _exposed(self._bias)

    @property
    def options(self) -> Mapping[str, Any]:
        """The convolution's options (stride, padding, ...), read-only."""
        return self._options

    @property
    def backend(self) -> str:
        """The backend it was prepared for ("auto", "numba", "triton" or "numpy")."""
        return self._backend

    def __setattr__(self, name: str, value: Any) -> None:
        if name in ("weight", "bias", "options", "backend"):
            raise AttributeError(
                f"PreparedConv.{name} is read-only: the weights were copied (and are packed)"
                f" when it was built; use atrous.prepare_conv(...) with the new {name}")
        object.__setattr__(self, name, value)

    def __call__(self, x: Array, *, out: Array | None = None,
                 config: Mapping[str, Any] | None = None) -> Array:
        """The convolution of ``x`` (in the prepared layout), as
        :func:`atrous.dilated_conv2d` with these weights and options would return it."""
        # the private copies never leave this object; checked anyway, since a packing read
        # with another weight's shape would read out of bounds
        if (tuple(self._weight.shape), None if self._bias is None else
                tuple(self._bias.shape)) != self._shapes:
            raise RuntimeError(f"PreparedConv's private weights changed shape (built with"
                               f" {self._shapes}); build a new one with atrous.prepare_conv")
        problem, inputs, kind = prepare_call(
            "dilated_conv2d", {"x": x, "weight": self._weight, "bias": self._bias},
            self._options)
        name = dispatch.resolve_backend(self._backend, kind, problem.dtype)
        if name == "numba":
            inputs["weight"] = self._packing()
        return dispatch.run(problem, inputs, kind, backend=name, config=config, out=out)

    def _packing(self) -> Any:
        if self._packed is None:
            from atrous.kernels.conv.weights_cpu import pack  # imports Numba

            self._packed = pack(np.ascontiguousarray(to_numpy(self._weight)))
        return self._packed

    def __repr__(self) -> str:
        shown = ", ".join(f"{k}={v!r}" for k, v in self._options.items())
        return f"PreparedConv(weight {self._shapes[0]}, {shown})"


def _private_copy(a: Array) -> Array:
    """A C-contiguous copy only this object holds; NumPy's is read-only for good (a view
    of it cannot be made writeable again)."""
    if is_tensor(a):
        return a.detach().clone().contiguous()
    copy = np.array(a, order="C", copy=True)
    copy.flags.writeable = False
    return copy


def _exposed(a: Array) -> Array:
    """What a caller sees of a private copy: a read-only view (NumPy; its base is read-only,
    so it stays so) or a fresh copy (torch has no read-only tensors)."""
    return a.detach().clone() if is_tensor(a) else a.view()


def prepare_conv(weight: Array, bias: Array | None = None, *, stride: Any = 1,
                 padding: Any = 0, dilation: Any = 1, groups: int = 1,
                 activation: str | None = None, layout: str = "NCHW",
                 allow_tf32: bool = False, backend: str = "auto") -> PreparedConv:
    """A convolution with these weights and options, ready to call on inputs.

    Arguments are those of :func:`atrous.dilated_conv2d` (less ``x``, ``config`` and
    ``out``, which each call takes). Shapes against the input are checked per call, with the
    same errors as ``dilated_conv2d``.

    Example:
        >>> conv = atrous.prepare_conv(w, b, padding="same", dilation=12, layout="NHWC")
        >>> y = conv(x)  # no weight packing here
    """
    options = {"stride": stride, "padding": padding, "dilation": dilation, "groups": groups,
               "activation": activation, "layout": layout, "allow_tf32": allow_tf32}
    return PreparedConv(weight, bias, options, backend)
