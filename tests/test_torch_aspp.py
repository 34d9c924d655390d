"""atrous.torch: torchvision-compatible ASPP and DeepLabHead modules, the custom ops,
torch.compile, the prepared-weights cache and the inference-only errors."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
F = torch.nn.functional

from test_torch_reference import ReferenceASPP, randomized, reference_head, rel_l2  # noqa: E402

import atrous  # noqa: E402
import atrous.torch as at  # noqa: E402
from atrous.torch import cache  # noqa: E402

RATES = (2, 5, 13)
CIN, C = 12, 8


def image(n: int = 2, h: int = 11, w: int = 9, seed: int = 4) -> torch.Tensor:
    return torch.randn(n, CIN, h, w, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def reference():
    return randomized(ReferenceASPP(CIN, RATES, C))


def expected(module: torch.nn.Module, x: torch.Tensor, **kwargs) -> torch.Tensor:
    """``module``'s output in float64 (on a float64 copy of it)."""
    import copy

    with torch.no_grad():
        return copy.deepcopy(module).double()(x.double(), **kwargs)


def test_state_dict_is_torchvisions_and_loads_strictly(reference):
    ours = at.ASPP(CIN, RATES, C)
    theirs = reference.state_dict()
    assert list(ours.state_dict()) == list(theirs)
    assert all(ours.state_dict()[k].shape == v.shape for k, v in theirs.items())
    ours.load_state_dict(theirs, strict=True)
    assert not ours.training and not any(p.requires_grad for p in ours.parameters())


@pytest.mark.parametrize("channels_last", [False, True])
def test_module_matches_the_reference(reference, channels_last):
    ours = at.ASPP.from_module(reference)
    x = image()
    want = expected(reference, x)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        got = ours(x)
    assert got.shape == want.shape and got.dtype == torch.float32
    assert got.is_contiguous(memory_format=torch.channels_last) == channels_last
    assert rel_l2(got, want) <= 1e-5


def test_float64_module(reference):
    ours = at.ASPP.from_module(reference.double())
    reference.float()
    assert next(ours.parameters()).dtype == torch.float64
    with torch.no_grad():
        got = ours(image().double())
    assert got.dtype == torch.float64 and rel_l2(got, expected(reference, image())) <= 1e-12


def test_head_matches_the_reference_and_upsamples():
    head = randomized(reference_head(CIN, 5, RATES), seed=7)
    ours = at.DeepLabHead.from_module(head)
    assert list(ours.state_dict()) == list(head.state_dict())
    x = image(n=1)
    want = expected(head, x)
    with torch.no_grad():
        assert rel_l2(ours(x), want) <= 1e-5
        up = ours(x.contiguous(memory_format=torch.channels_last), image_size=(40, 35))
    assert up.shape == (1, 5, 40, 35) and up.is_contiguous(memory_format=torch.channels_last)
    assert rel_l2(up, F.interpolate(want, size=(40, 35), mode="bilinear",
                                    align_corners=False)) <= 1e-5
    fresh = at.DeepLabHead(CIN, 5, RATES)
    fresh.load_state_dict(head.state_dict(), strict=True)
    with torch.no_grad():
        assert rel_l2(fresh(x), want) <= 1e-5


def test_prepared_weights_are_cached_and_invalidated(reference):
    ours = at.ASPP.from_module(reference)
    x = image()
    with torch.no_grad():
        first = ours(x)
        before = cache.stats()
        assert torch.equal(ours(x), first)
        assert cache.stats()["hits"] == before["hits"] + 1
        other = randomized(ReferenceASPP(CIN, RATES, C), seed=9)
        ours.load_state_dict(other.state_dict())  # in-place copies bump the version counters
        assert rel_l2(ours(x), expected(other, x)) <= 1e-5
        ours.convs[1][1].running_var.mul_(2.0)  # any in-place change of a buffer
        other.convs[1][1].running_var.mul_(2.0)
        assert rel_l2(ours(x), expected(other, x)) <= 1e-5


def test_inference_only_errors(reference):
    ours = at.ASPP.from_module(reference)
    x = image()
    with pytest.raises(RuntimeError, match=r"inference-only.*requires grad"):
        ours(x.clone().requires_grad_())
    ours.project[0].weight.requires_grad_(True)
    with pytest.raises(RuntimeError, match=r"inference-only.*requires grad"):
        ours(x)
    with pytest.raises(RuntimeError, match="inference-only"):  # the op itself, called directly
        torch.ops.atrous.aspp(x, ours.params(), list(RATES), 1e-5, "NCHW", "auto")
    with torch.no_grad():
        assert ours(x).shape == (2, C, 11, 9)
    ours.train()
    with pytest.raises(RuntimeError, match=r"inference-only.*call \.eval\(\)"), torch.no_grad():
        ours(x)
    with pytest.raises(RuntimeError, match="inference-only"):
        at.dilated_conv2d(x, torch.ones(3, CIN, 1, 1, requires_grad=True))


def test_op_wrappers_match_the_public_functions():
    x = image()
    w = torch.randn(6, CIN, 3, 3, generator=torch.Generator().manual_seed(1))
    b = torch.randn(6, generator=torch.Generator().manual_seed(2))
    conv = at.dilated_conv2d(x, w, b, padding="same", dilation=3, activation="relu")
    # both as a first call with these weights (a tuned Winograd config runs as gemm on the
    # first, atrous.weight_cache), so both run the same variant
    atrous.clear_weight_cache()
    pairs = [
        (at.global_avg_pool(x, keepdims=True), atrous.global_avg_pool(x, keepdims=True)),
        (conv, atrous.dilated_conv2d(x, w, b, padding="same", dilation=3, activation="relu")),
        (at.upsample_bilinear(x, scale_factor=1.5), atrous.upsample_bilinear(x, scale_factor=1.5)),
        (at.upsample_bilinear(x, (20, 7), align_corners=True),
         atrous.upsample_bilinear(x, (20, 7), align_corners=True)),
    ]
    for ours, public in pairs:
        assert ours.shape == public.shape and torch.equal(ours, public)


@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")
def test_torch_compile(reference):
    """A module mixing torch layers, the ASPP and the ops compiles (fullgraph) and matches."""

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = torch.nn.Conv2d(3, CIN, 1)
            self.aspp = at.ASPP.from_module(reference)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.aspp(self.stem(x).relu())
            y = at.dilated_conv2d(y, torch.ones(4, C, 1, 1), activation="relu")
            return at.upsample_bilinear(at.global_avg_pool(y, keepdims=True) + y, (15, 12))

    net = Net().eval().requires_grad_(False)
    x = torch.randn(1, 3, 11, 9, generator=torch.Generator().manual_seed(5))
    compiled = torch.compile(net, fullgraph=True)
    with torch.no_grad():
        eager = net(x)
        got = compiled(x)
        again = compiled(x.contiguous(memory_format=torch.channels_last))
    assert got.shape == (1, 4, 15, 12)
    np.testing.assert_allclose(got.numpy(), eager.numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(again.numpy(), eager.numpy(), rtol=1e-5, atol=1e-5)


def test_from_module_rejects_other_modules():
    with pytest.raises(TypeError, match="torchvision-style ASPP"):
        at.ASPP.from_module(torch.nn.Conv2d(3, 3, 1))
    with pytest.raises(TypeError, match="torchvision-style DeepLabHead"):
        at.DeepLabHead.from_module(torch.nn.Sequential(torch.nn.ReLU()))
