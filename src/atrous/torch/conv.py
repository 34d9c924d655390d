"""``Conv2d``: ``torch.nn.Conv2d`` whose inference runs atrous's tuned convolution.

A subclass, so its state dict, ``repr`` arguments and ``isinstance(m, nn.Conv2d)`` are the
same as the module it replaces; only ``forward`` differs. Training, or a forward that needs
gradients, runs ``nn.Conv2d``'s own forward (atrous's kernels have no backward), so a
converted model can still be fine-tuned.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from atrous.core.args import CPU_DTYPES, GPU_DTYPES
from atrous.torch import ops
from atrous.torch.modules import layout_of, view_back, view_in


def unsupported(conv: nn.Conv2d) -> str | None:
    """Why atrous cannot run ``conv`` exactly (None when it can)."""
    if type(conv) is not nn.Conv2d:
        return f"a {type(conv).__name__}, not a plain nn.Conv2d"
    if conv.padding_mode != "zeros":
        return f"padding_mode={conv.padding_mode!r} (atrous pads with zeros)"
    dtype = str(conv.weight.dtype).removeprefix("torch.")
    device = conv.weight.device.type
    allowed = GPU_DTYPES if device == "cuda" else CPU_DTYPES
    if device not in ("cpu", "cuda"):
        return f"on a {device} device (atrous runs CPU and CUDA tensors)"
    if dtype not in allowed:
        return f"{dtype} weights on {device} (atrous runs {', '.join(allowed)} there)"
    return None


class Conv2d(nn.Conv2d):
    """``nn.Conv2d`` run by ``atrous.dilated_conv2d`` at inference (see the module doc).

    Build one with :meth:`from_module`; other arguments as ``nn.Conv2d``'s, plus
    ``backend`` ("auto", "numba", "triton", "numpy"). A channels-last input runs the NHWC
    kernel and comes back channels-last.
    """

    def __init__(self, *args: Any, backend: str = "auto", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.backend = backend

    @classmethod
    def from_module(cls, conv: nn.Conv2d, *, backend: str = "auto") -> Conv2d:
        """An atrous Conv2d with ``conv``'s arguments, weights, dtype and device (strict
        state-dict load). ValueError when atrous cannot run it (see :func:`unsupported`)."""
        why = unsupported(conv)
        if why is not None:
            raise ValueError(f"atrous cannot run this convolution: {why}")
        new = cls(conv.in_channels, conv.out_channels, conv.kernel_size, stride=conv.stride,
                  padding=conv.padding, dilation=conv.dilation, groups=conv.groups,
                  bias=conv.bias is not None, padding_mode=conv.padding_mode,
                  device=conv.weight.device, dtype=conv.weight.dtype, backend=backend)
        new.load_state_dict(conv.state_dict(), strict=True)
        new.train(conv.training)
        new.requires_grad_(conv.weight.requires_grad)
        return new

    def forward(self, x: Tensor) -> Tensor:
        """atrous's kernel at inference; nn.Conv2d's forward when gradients are needed."""
        wants_grad = torch.is_grad_enabled() and (
            x.requires_grad or any(p.requires_grad for p in self.parameters()))
        if self.training or wants_grad or x.dim() != 4:
            return super().forward(x)
        layout = layout_of(x)
        y = ops.dilated_conv2d(view_in(x, layout), self.weight, self.bias, stride=self.stride,
                               padding=self.padding, dilation=self.dilation,
                               groups=self.groups, layout=layout, backend=self.backend)
        return view_back(y, layout)
