"""Prepared convolutions: weights checked, copied and packed once, then called on inputs.

``atrous.dilated_conv2d(x, weight, ...)`` packs the weights on every call (about 4 ms for
ASPP's 2048 -> 256 3x3). A model calls the same convolution again and again, so
:func:`prepare_conv` does that once and returns a callable, like a module holding its
parameters: ``conv = atrous.prepare_conv(w, b, dilation=12, padding="same"); y = conv(x)``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from atrous import dispatch
from atrous.api import _prepare_conv
from atrous.arrays import is_tensor, kind_of, to_numpy

Array = Any  # numpy.ndarray or torch.Tensor


class PreparedConv:
    """A convolution with fixed weights; call it as ``conv(x, out=None, config=None)``.

    Build it with :func:`prepare_conv`. The weights are copied when it is built, so later
    changes to the caller's arrays do not reach it; for the CPU they are also packed into
    the kernels' layout once, on the first call.
    """

    def __init__(self, weight: Array, bias: Array | None, options: dict[str, Any],
                 backend: str) -> None:
        kind_of(weight=weight, bias=bias)  # arrays or tensors, one kind, one device
        if len(weight.shape) != 4:
            raise ValueError(f"weight must be 4-D (Cout, Cin/groups, kh, kw), got shape"
                             f" {tuple(weight.shape)}")
        self.weight = weight.detach().clone().contiguous() if is_tensor(weight) else \
            weight.copy(order="C")
        self.bias = None if bias is None else (
            bias.detach().clone().contiguous() if is_tensor(bias) else bias.copy(order="C"))
        self.options = options
        self.backend = backend
        self._packed: Any = None

    def __call__(self, x: Array, *, out: Array | None = None,
                 config: Mapping[str, Any] | None = None) -> Array:
        """The convolution of ``x`` (in the prepared layout), as
        :func:`atrous.dilated_conv2d` with these weights and options would return it."""
        problem, inputs, kind = _prepare_conv(x, self.weight, self.bias, **self.options)
        name = dispatch.resolve_backend(self.backend, kind, problem.dtype)
        if name == "numba":
            inputs["weight"] = self._packing()
        return dispatch.run(problem, inputs, kind, backend=name, config=config, out=out)

    def _packing(self) -> Any:
        if self._packed is None:
            from atrous.kernels.conv.weights_cpu import pack  # imports Numba

            self._packed = pack(to_numpy(self.weight))
        return self._packed

    def __repr__(self) -> str:
        shown = ", ".join(f"{k}={v!r}" for k, v in self.options.items())
        return f"PreparedConv(weight {tuple(self.weight.shape)}, {shown})"


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
