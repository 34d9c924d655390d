"""torchvision's DeepLabV3 ASPP and head in plain PyTorch: the baseline the benchmarks time
and the reference the tests check against (tests/test_torch_reference.py imports it).

A copy of ``torchvision/models/segmentation/deeplabv3.py`` (ASPPConv, ASPPPooling, ASPP,
DeepLabHead: same submodules, same state-dict keys, same forward; torchvision itself does
not install beside every torch build), and ``seeded`` for seeded weights and non-trivial
BatchNorm statistics. ``DeepLabHead.forward(x, image_size)`` adds DeepLabV3's final
bilinear upsampling of the logits to the image, as ``DeepLabV3.forward`` does.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


class ASPPConv(nn.Sequential):
    def __init__(self, in_channels: int, out_channels: int, dilation: int) -> None:
        super().__init__(nn.Conv2d(in_channels, out_channels, 3, padding=dilation,
                                   dilation=dilation, bias=False),
                         nn.BatchNorm2d(out_channels), nn.ReLU())


class ASPPPooling(nn.Sequential):
    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(nn.AdaptiveAvgPool2d(1), nn.Conv2d(in_channels, out_channels, 1,
                                                            bias=False),
                         nn.BatchNorm2d(out_channels), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        for mod in self:
            x = mod(x)
        return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


class ASPP(nn.Module):
    """torchvision.models.segmentation.deeplabv3.ASPP."""

    def __init__(self, in_channels: int, atrous_rates: Sequence[int],
                 out_channels: int = 256) -> None:
        super().__init__()
        modules: list[nn.Module] = [nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels),
            nn.ReLU())]
        modules += [ASPPConv(in_channels, out_channels, rate) for rate in atrous_rates]
        modules.append(ASPPPooling(in_channels, out_channels))
        self.convs = nn.ModuleList(modules)
        self.project = nn.Sequential(
            nn.Conv2d(len(self.convs) * out_channels, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels), nn.ReLU(), nn.Dropout(0.5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(torch.cat([conv(x) for conv in self.convs], dim=1))


class DeepLabHead(nn.Sequential):
    """torchvision's DeepLabHead; ``forward(x, image_size)`` also upsamples to the image."""

    def __init__(self, in_channels: int, num_classes: int,
                 atrous_rates: Sequence[int] = (12, 24, 36)) -> None:
        super().__init__(ASPP(in_channels, atrous_rates),
                         nn.Conv2d(256, 256, 3, padding=1, bias=False), nn.BatchNorm2d(256),
                         nn.ReLU(), nn.Conv2d(256, num_classes, 1))

    def forward(self, x: torch.Tensor, image_size: tuple[int, int] | None = None) -> torch.Tensor:
        y = super().forward(x)
        if image_size is None:
            return y
        return F.interpolate(y, size=image_size, mode="bilinear", align_corners=False)


def seeded(module: nn.Module, seed: int = 0) -> nn.Module:
    """``module`` in eval mode, without grad, with seeded weights and non-trivial BatchNorm
    statistics (a fresh BatchNorm is the identity, which would hide a folding bug)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            fan_in = p[0].numel() if p.dim() > 1 else 4
            p.copy_(torch.randn(p.shape, generator=g) * fan_in ** -0.5)
        for m in module.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.add_(1.0)
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.2)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    return module.eval().requires_grad_(False)
