"""A plain-PyTorch ASPP and DeepLab head with torchvision's exact structure, and its checks.

torchvision cannot be installed beside this torch, so ``ReferenceASPP`` and
``reference_head`` copy ``torchvision/models/segmentation/deeplabv3.py`` (ASPPConv,
ASPPPooling, ASPP, DeepLabHead): same submodules, same state-dict keys, same forward. The
other ASPP tests import them from here.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest

torch = pytest.importorskip("torch")
nn, F = torch.nn, torch.nn.functional

from atrous.deeplab import param_names  # noqa: E402
from atrous.deeplab.reference import reference  # noqa: E402


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

    def forward(self, x):
        size = x.shape[-2:]
        for mod in self:
            x = mod(x)
        return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


class ReferenceASPP(nn.Module):
    """torchvision.models.segmentation.deeplabv3.ASPP."""

    def __init__(self, in_channels: int, atrous_rates: Sequence[int],
                 out_channels: int = 256) -> None:
        super().__init__()
        modules = [nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, bias=False),
                                 nn.BatchNorm2d(out_channels), nn.ReLU())]
        modules += [ASPPConv(in_channels, out_channels, r) for r in atrous_rates]
        modules.append(ASPPPooling(in_channels, out_channels))
        self.convs = nn.ModuleList(modules)
        self.project = nn.Sequential(
            nn.Conv2d(len(self.convs) * out_channels, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels), nn.ReLU(), nn.Dropout(0.5))

    def forward(self, x):
        return self.project(torch.cat([conv(x) for conv in self.convs], dim=1))


def reference_head(in_channels: int, num_classes: int,
                   atrous_rates: Sequence[int] = (12, 24, 36)) -> nn.Sequential:
    """torchvision.models.segmentation.deeplabv3.DeepLabHead."""
    return nn.Sequential(ReferenceASPP(in_channels, atrous_rates),
                         nn.Conv2d(256, 256, 3, padding=1, bias=False), nn.BatchNorm2d(256),
                         nn.ReLU(), nn.Conv2d(256, num_classes, 1))


def randomized(module: nn.Module, seed: int = 0) -> nn.Module:
    """``module`` in eval mode with seeded weights and non-trivial BatchNorm statistics
    (a fresh BatchNorm is the identity, which would hide a folding bug)."""
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
    return module.eval()


def rel_l2(got, want) -> float:
    """Relative L2 error of ``got`` (array or tensor) against the float64 ``want``."""
    got = got.detach().double().numpy() if hasattr(got, "detach") else np.asarray(got, float)
    want = want.detach().double().numpy() if hasattr(want, "detach") else np.asarray(want)
    return float(np.linalg.norm(got - want) / np.linalg.norm(want))


def test_reference_state_dict_keys_are_torchvisions():
    sd = ReferenceASPP(8, (1, 2, 3), 4).state_dict()
    tracked = [k for k in sd if k.endswith("num_batches_tracked")]
    assert [k for k in sd if k not in tracked] == param_names(3)
    assert "convs.4.1.weight" in sd and "convs.4.2.running_var" in sd  # pooling: conv .1, BN .2
    assert tuple(sd["project.0.weight"].shape) == (4, 20, 1, 1)


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_numpy_reference_matches_the_torch_reference(layout):
    rates = (2, 5, 13)  # 13 > the 11x9 map: only the centre tap of that branch sees the image
    module = randomized(ReferenceASPP(6, rates, 5)).double()
    x = torch.randn(2, 6, 11, 9, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = module(x)
    if layout == "NHWC":
        x, want = x.permute(0, 2, 3, 1), want.permute(0, 2, 3, 1)
    got = reference(x.numpy(), module.state_dict(), rates, layout=layout)
    assert rel_l2(got, want) < 1e-13
