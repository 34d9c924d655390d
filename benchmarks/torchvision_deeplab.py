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


# ---- the rest of a DeepLabV3 model, for atrous.torch.convert's tests -------------------
# Re-implementations, written here, of torchvision's FCNHead, DeepLabV3 (its
# _SimpleSegmentationModel forward), IntermediateLayerGetter and ResNet's Bottleneck, with
# the same class names, children and forward, so that conversion sees torchvision's
# structure; ``small_deeplabv3`` builds a narrow ResNet with torchvision's layout (a stem,
# four stages, layer3 and layer4 dilated instead of strided) so that tests run in seconds.


class FCNHead(nn.Sequential):
    """torchvision.models.segmentation.fcn.FCNHead (DeepLabV3's auxiliary classifier)."""

    def __init__(self, in_channels: int, channels: int) -> None:
        inter = in_channels // 4
        super().__init__(nn.Conv2d(in_channels, inter, 3, padding=1, bias=False),
                         nn.BatchNorm2d(inter), nn.ReLU(), nn.Dropout(0.1),
                         nn.Conv2d(inter, channels, 1))


class IntermediateLayerGetter(nn.ModuleDict):
    """torchvision.models._utils.IntermediateLayerGetter: the model's children up to the
    last returned one; ``forward`` returns the named outputs."""

    def __init__(self, model: nn.Module, return_layers: dict[str, str]) -> None:
        wanted, layers = dict(return_layers), {}
        for name, module in model.named_children():
            layers[name] = module
            wanted.pop(name, None)
            if not wanted:
                break
        super().__init__(layers)
        self.return_layers = dict(return_layers)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        out = {}
        for name, module in self.items():
            x = module(x)
            if name in self.return_layers:
                out[self.return_layers[name]] = x
        return out


class DeepLabV3(nn.Module):
    """torchvision.models.segmentation.DeepLabV3 (its _SimpleSegmentationModel forward)."""

    def __init__(self, backbone: nn.Module, classifier: nn.Module,
                 aux_classifier: nn.Module | None = None) -> None:
        super().__init__()
        self.backbone = backbone
        self.classifier = classifier
        self.aux_classifier = aux_classifier

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        size = x.shape[-2:]
        features = self.backbone(x)
        out = {"out": F.interpolate(self.classifier(features["out"]), size=size,
                                    mode="bilinear", align_corners=False)}
        if self.aux_classifier is not None:
            out["aux"] = F.interpolate(self.aux_classifier(features["aux"]), size=size,
                                       mode="bilinear", align_corners=False)
        return out


class Bottleneck(nn.Module):
    """torchvision.models.resnet.Bottleneck (stride and dilation on the 3x3 conv)."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1,
                 downsample: nn.Module | None = None, dilation: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=dilation,
                               dilation=dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.relu(self.bn3(self.conv3(out)) + identity)


class SmallResNet(nn.Module):
    """ResNet's children (conv1, bn1, relu, maxpool, layer1..layer4) with
    ``blocks_per_stage`` Bottlenecks and widths ``planes``; layer3 and layer4 dilated
    (output stride 8), as torchvision's ``replace_stride_with_dilation=[False, True, True]``
    does (a stage's first block keeps the previous dilation, the others dilate)."""

    def __init__(self, planes: Sequence[int] = (4, 8, 16, 32),
                 blocks_per_stage: Sequence[int] = (1, 1, 2, 2)) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        inplanes, dilation = 16, 1
        for i, (width, stride, dilate) in enumerate(zip(planes, (1, 2, 2, 2),
                                                        (False, False, True, True),
                                                        strict=True)):
            previous = dilation
            if dilate:
                dilation, stride = dilation * stride, 1
            down = None
            if stride != 1 or inplanes != width * 4:
                down = nn.Sequential(nn.Conv2d(inplanes, width * 4, 1, stride=stride,
                                               bias=False), nn.BatchNorm2d(width * 4))
            blocks = [Bottleneck(inplanes, width, stride, down, previous)]
            blocks += [Bottleneck(width * 4, width, dilation=dilation)
                       for _ in range(blocks_per_stage[i] - 1)]
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
            inplanes = width * 4


def small_deeplabv3(num_classes: int = 5, aux: bool = True, seed: int = 0) -> DeepLabV3:
    """A DeepLabV3 of torchvision's exact structure on :class:`SmallResNet`: backbone
    returning layer4 ("out") and layer3 ("aux"), DeepLabHead (rates 12, 24, 36), FCNHead;
    seeded weights and BatchNorm statistics, eval mode."""
    resnet = SmallResNet()
    backbone = IntermediateLayerGetter(resnet, {"layer4": "out", "layer3": "aux"} if aux
                                       else {"layer4": "out"})
    model = DeepLabV3(backbone, DeepLabHead(128, num_classes),
                      FCNHead(64, num_classes) if aux else None)
    return seeded(model, seed)
