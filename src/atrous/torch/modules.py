"""``ASPP`` and ``DeepLabHead``: torchvision's modules, state dicts and all, run by atrous.

The submodules are torchvision's (``convs.i`` Sequentials of Conv2d / BatchNorm2d / ReLU,
``project``), so ``state_dict()`` keys and shapes are exactly torchvision's and its
checkpoints load with ``strict=True``; only ``forward`` differs: it calls the fused
``atrous::aspp`` custom op (and the conv / upsample ops for the head), which folds the
BatchNorms once and caches the result until a parameter or buffer changes.

Both modules are inference-only: they are created in eval mode with ``requires_grad=False``
parameters; ``forward`` in training mode, or with autograd needed, raises. Channels-last
inputs run the NHWC kernels and come back channels-last; other inputs run NCHW.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from atrous.core.arrays import check_inference
from atrous.deeplab.weights import check_rates
from atrous.torch import ops


def _layout(x: Tensor) -> str:
    """"NHWC" for a channels-last (and not also contiguous) 4-D tensor, else "NCHW"."""
    if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) \
            and not x.is_contiguous():
        return "NHWC"
    return "NCHW"


def _to(x: Tensor, layout: str) -> Tensor:
    return x.permute(0, 2, 3, 1) if layout == "NHWC" else x  # a contiguous NHWC view


def _back(y: Tensor, layout: str) -> Tensor:
    return y.permute(0, 3, 1, 2) if layout == "NHWC" else y  # channels-last NCHW view


def _check_eval(module: nn.Module) -> None:
    if module.training:
        raise RuntimeError(f"atrous.torch.{type(module).__name__} is inference-only: BatchNorm"
                           " uses running statistics and dropout is off; call .eval()")


class ASPP(nn.Module):
    """torchvision's ``ASPP(in_channels, atrous_rates, out_channels)``, fused by atrous.

    Args:
        in_channels: channels of the backbone feature map (2048 for ResNet-50/101).
        atrous_rates: one dilation per 3x3 branch ((12, 24, 36) at output stride 8,
            (6, 12, 18) at 16).
        out_channels: channels of every branch and of the output (256).
        backend: "auto" (Numba/BLAS on the CPU, Triton on CUDA), "numba", "triton", "numpy".
    """

    def __init__(self, in_channels: int, atrous_rates: Sequence[int], out_channels: int = 256,
                 *, backend: str = "auto") -> None:
        super().__init__()
        self.atrous_rates = check_rates(atrous_rates)
        self.backend = backend
        c = out_channels
        branches: list[nn.Module] = [
            nn.Sequential(nn.Conv2d(in_channels, c, 1, bias=False), nn.BatchNorm2d(c), nn.ReLU())]
        for rate in self.atrous_rates:
            branches.append(nn.Sequential(
                nn.Conv2d(in_channels, c, 3, padding=rate, dilation=rate, bias=False),
                nn.BatchNorm2d(c), nn.ReLU()))
        branches.append(nn.Sequential(nn.AdaptiveAvgPool2d(1),
                                      nn.Conv2d(in_channels, c, 1, bias=False),
                                      nn.BatchNorm2d(c), nn.ReLU()))
        self.convs = nn.ModuleList(branches)
        self.project = nn.Sequential(nn.Conv2d(len(branches) * c, c, 1, bias=False),
                                     nn.BatchNorm2d(c), nn.ReLU(), nn.Dropout(0.5))
        self.requires_grad_(False)
        self.eval()

    def layers(self) -> list[tuple[nn.Conv2d, nn.BatchNorm2d]]:
        """(conv, BN) pairs in torchvision order: 1x1, one per rate, pooling, projection."""
        r = len(self.atrous_rates)
        return ([(self.convs[i][0], self.convs[i][1]) for i in range(r + 1)]
                + [(self.convs[r + 1][1], self.convs[r + 1][2]),
                   (self.project[0], self.project[1])])

    def params(self) -> list[Tensor]:
        """The tensors ``atrous::aspp`` takes, in ``atrous.deeplab.param_names`` order."""
        out = []
        for conv, bn in self.layers():
            out += [conv.weight, bn.weight, bn.bias, bn.running_mean, bn.running_var]
        return out

    def eps(self) -> float:
        values = {bn.eps for _, bn in self.layers()}
        if len(values) != 1:
            raise ValueError(f"every BatchNorm of the ASPP must have the same eps, got {values}")
        return values.pop()

    def run(self, x: Tensor, layout: str) -> Tensor:
        """The ASPP of ``x`` given in ``layout`` ("NCHW" or NHWC-shaped), in that layout."""
        _check_eval(self)
        params = self.params()
        check_inference("atrous.torch.ASPP", x, *params)
        return ops.aspp(x, params, self.atrous_rates, eps=self.eps(), layout=layout,
                        backend=self.backend)

    def forward(self, x: Tensor) -> Tensor:
        """(N, Cin, H, W) -> (N, C, H, W); a channels-last input runs NHWC and stays so."""
        layout = _layout(x)
        return _back(self.run(_to(x, layout), layout), layout)

    @classmethod
    def from_module(cls, module: nn.Module, *, backend: str = "auto") -> ASPP:
        """An atrous ASPP with the weights, eps, dtype and device of a torchvision-style one."""
        convs = getattr(module, "convs", None)
        if convs is None or not hasattr(module, "project") or len(convs) < 2:
            raise TypeError(f"expected a torchvision-style ASPP (with .convs and .project),"
                            f" got {type(module).__name__}")
        first = convs[0][0]
        rates = tuple(int(convs[i][0].dilation[0]) for i in range(1, len(convs) - 1))
        new = cls(first.in_channels, rates, first.out_channels, backend=backend)
        _copy_from(new, module)
        for (_, bn), (_, src) in zip(new.layers(), _source_layers(module, len(rates)),
                                         strict=True):
            bn.eps = src.eps
        return new


def _source_layers(module: nn.Module, r: int) -> list[tuple[nn.Module, nn.Module]]:
    convs = module.convs
    return ([(convs[i][0], convs[i][1]) for i in range(r + 1)]
            + [(convs[r + 1][1], convs[r + 1][2]), (module.project[0], module.project[1])])


def _copy_from(new: nn.Module, module: nn.Module) -> None:
    """Load ``module``'s state into ``new`` (strict), on its device and dtype."""
    p = next(module.parameters())
    new.to(device=p.device, dtype=p.dtype)
    new.load_state_dict(module.state_dict(), strict=True)


class DeepLabHead(nn.Sequential):
    """torchvision's ``DeepLabHead``: ASPP -> 3x3 conv -> BN -> ReLU -> 1x1 conv to classes.

    Children ``0``..``4`` and their state-dict keys are torchvision's. ``forward(x,
    image_size)`` also does DeepLabV3's final step when ``image_size`` is given: bilinear
    upsampling of the logits to the image (align_corners=False), as torchvision's
    ``DeepLabV3.forward`` does after the head.

    Args:
        in_channels: channels of the backbone feature map.
        num_classes: output classes (21 for Pascal VOC).
        atrous_rates: the ASPP's rates (torchvision's default (12, 24, 36)).
        backend: as in :class:`ASPP`.
    """

    def __init__(self, in_channels: int, num_classes: int,
                 atrous_rates: Sequence[int] = (12, 24, 36), *, backend: str = "auto") -> None:
        super().__init__(ASPP(in_channels, atrous_rates, backend=backend),
                         nn.Conv2d(256, 256, 3, padding=1, bias=False), nn.BatchNorm2d(256),
                         nn.ReLU(), nn.Conv2d(256, num_classes, 1))
        self.backend = backend
        self.requires_grad_(False)
        self.eval()

    def params(self) -> list[Tensor]:
        """The tensors ``atrous::deeplab_head`` takes (``head_param_names`` order)."""
        bn = self[2]
        return [*self[0].params(), self[1].weight, bn.weight, bn.bias, bn.running_mean,
                bn.running_var, self[4].weight, self[4].bias]

    def forward(self, x: Tensor, image_size: Any = None) -> Tensor:
        """(N, Cin, H, W) -> logits (N, classes, H, W), or upsampled to ``image_size``
        ((height, width) or one int) when given."""
        _check_eval(self)
        params = self.params()
        check_inference("atrous.torch.DeepLabHead", x, *params)
        eps = self[0].eps()
        if self[2].eps != eps:
            raise ValueError(f"the head's BatchNorm eps ({self[2].eps}) must equal the ASPP's"
                             f" ({eps})")
        layout = _layout(x)
        y = ops.deeplab_head(_to(x, layout), params, self[0].atrous_rates, eps=eps,
                             layout=layout, image_size=image_size, backend=self.backend)
        return _back(y, layout)

    @classmethod
    def from_module(cls, module: nn.Module, *, backend: str = "auto") -> DeepLabHead:
        """An atrous DeepLabHead with the weights, dtype and device of a torchvision one."""
        if not isinstance(module, nn.Sequential) or len(module) != 5:
            raise TypeError(f"expected a torchvision-style DeepLabHead (a 5-module Sequential),"
                            f" got {type(module).__name__}")
        aspp = ASPP.from_module(module[0], backend=backend)
        new = cls(aspp.convs[0][0].in_channels, module[4].out_channels, aspp.atrous_rates,
                  backend=backend)
        new[0] = aspp
        new[2].eps = module[2].eps
        _copy_from(new, module)
        return new
