"""The plain-PyTorch ASPP and DeepLab head with torchvision's exact structure, and its checks.

torchvision cannot be installed beside this torch, so ``benchmarks/torchvision_deeplab.py``
copies ``torchvision/models/segmentation/deeplabv3.py`` (ASPPConv, ASPPPooling, ASPP,
DeepLabHead): same submodules, same state-dict keys, same forward. The benchmarks time it;
the tests check against it under the names below, which the other ASPP tests import from
here.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
from torchvision_deeplab import ASPP as ReferenceASPP  # noqa: E402
from torchvision_deeplab import DeepLabHead as reference_head  # noqa: E402
from torchvision_deeplab import seeded as randomized  # noqa: E402

from atrous.deeplab import param_names  # noqa: E402
from atrous.deeplab.reference import reference  # noqa: E402

__all__ = ["ReferenceASPP", "randomized", "reference_head", "rel_l2"]


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
