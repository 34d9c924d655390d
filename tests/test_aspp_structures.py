"""The generalized ASPP (atrous.AsppStructure): the Keras tutorial's structure and mixes
(bias + BN, no pooling, a wider projection), functional and as atrous.torch.ASPP, against
plain-PyTorch modules of the same structure and the float64 reference, both layouts, each
fusion against the unfused path, the Triton engine, and bad structures."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import torch.nn.functional as F  # noqa: E402
from test_torch_reference import rel_l2  # noqa: E402
from torch import nn  # noqa: E402
from torchvision_deeplab import seeded as seeded_float32  # noqa: E402

import atrous  # noqa: E402
import atrous.torch as at  # noqa: E402
from atrous import AsppStructure  # noqa: E402
from atrous.deeplab import Fusions  # noqa: E402
from atrous.deeplab.reference import reference  # noqa: E402

CIN, C, N, H, W = 10, 6, 2, 9, 11
KERAS = AsppStructure.keras((1, 2, 5, 13))  # 13 > the map: only the centre tap is real
MIXED = AsppStructure(((1, 1), (3, 3), (1, 1), (3, 7)), pooling=True, bias=True,
                      batch_norm=True)
NO_POOL = AsppStructure(((3, 2), (1, 1), (3, 4)), pooling=False, bias=False, batch_norm=True)
STRUCTURES = {"keras": KERAS, "mixed": MIXED, "no_pool": NO_POOL}
FUSIONS = ["pool_into_bias", "write_slices", "epilogue", "shared_centre", "winograd"]


class PlainASPP(nn.Module):
    """The ASPP of ``structure`` in plain PyTorch, named as atrous.torch.ASPP's state dict
    (the Keras block's pooling branch resizes its 1x1 map with align_corners=True, which
    is the same broadcast as half_pixel)."""

    def __init__(self, structure: AsppStructure, cin: int, c: int, co: int | None = None):
        super().__init__()
        self.structure = structure

        def block(k: int, r: int, cin: int, cout: int) -> list[nn.Module]:
            conv = nn.Conv2d(cin, cout, k, padding=r * (k - 1) // 2, dilation=r,
                             bias=structure.bias)
            return [conv, *([nn.BatchNorm2d(cout)] if structure.batch_norm else []), nn.ReLU()]

        branches = [nn.Sequential(*block(k, r, cin, c)) for k, r in structure.branches]
        if structure.pooling:
            branches.append(nn.Sequential(nn.AdaptiveAvgPool2d(1), *block(1, 1, cin, c)))
        self.convs = nn.ModuleList(branches)
        self.project = nn.Sequential(*block(1, 1, len(branches) * c, co or c))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = [seq(x) for seq in self.convs]
        if self.structure.pooling:
            outs[-1] = F.interpolate(outs[-1], size=x.shape[-2:], mode="bilinear",
                                     align_corners=True)
        return self.project(torch.cat(outs, dim=1))


def seeded(module: nn.Module, seed: int = 0) -> nn.Module:
    """torchvision_deeplab.seeded (non-trivial BatchNorm statistics), in float64."""
    return seeded_float32(module, seed).double()


def in_layout(t: torch.Tensor, layout: str) -> np.ndarray:
    a = t.numpy()
    return np.ascontiguousarray(a.transpose(0, 2, 3, 1) if layout == "NHWC" else a)


@pytest.fixture(scope="module", params=list(STRUCTURES))
def case(request):
    """(structure, state dict, float64 NCHW input, float64 output of the plain module)."""
    structure = STRUCTURES[request.param]
    module = seeded(PlainASPP(structure, CIN, C))
    x = torch.randn(N, CIN, H, W, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = module(x)
    return structure, module.state_dict(), x, want


def test_structures_and_names():
    tv = AsppStructure.torchvision((6, 12, 18))
    assert tv.is_torchvision and tv.rates == (6, 12, 18) and tv.branches[0] == (1, 1)
    assert tv.param_names() == atrous.deeplab.param_names((6, 12, 18)) \
        == atrous.deeplab.param_names(3)
    assert KERAS.rates == (1, 2, 5, 13) and not KERAS.is_torchvision
    assert KERAS.param_names()[:3] == ["convs.0.0.weight", "convs.0.0.bias", "convs.1.0.weight"]
    assert KERAS.param_names()[-4:] == ["convs.4.1.weight", "convs.4.1.bias",
                                        "project.0.weight", "project.0.bias"]
    assert NO_POOL.param_names()[-5:] == ["project.0.weight"] + [
        f"project.1.{k}" for k in ("weight", "bias", "running_mean", "running_var")]
    assert set(PlainASPP(MIXED, 4, 3).state_dict()) - set(MIXED.param_names()) == {
        k for k in PlainASPP(MIXED, 4, 3).state_dict() if k.endswith("num_batches_tracked")}


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("dtype,bound", [("float32", 1e-5), ("float64", 1e-12)])
def test_fused_matches_the_plain_module(case, layout, dtype, bound):
    structure, params, x, want = case
    weights = atrous.prepare_aspp(params, structure, dtype=dtype)
    assert weights.structure == structure and weights.rates == structure.rates
    got = atrous.aspp(in_layout(x, layout).astype(dtype), weights, layout=layout)
    assert rel_l2(got, in_layout(want, layout)) <= bound
    # the float64 reference from raw parameters agrees with the plain module
    assert rel_l2(reference(in_layout(x, layout), params, structure, layout=layout),
                  in_layout(want, layout)) <= 1e-12


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("fusion", [*FUSIONS, "all"])
def test_each_fusion_matches_the_unfused_path(case, layout, fusion):
    structure, params, x, _ = case
    weights = atrous.prepare_aspp(params, structure, dtype="float32")
    xl = in_layout(x, layout).astype(np.float32)
    unfused = atrous.aspp(xl, weights, layout=layout, fusions=Fusions.none())
    fusions = Fusions() if fusion == "all" else Fusions.only(fusion)
    assert rel_l2(atrous.aspp(xl, weights, layout=layout, fusions=fusions), unfused) <= 1e-6


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_state_dict_with_structure_and_numpy_backend(case, layout):
    structure, params, x, want = case
    xl = in_layout(x, layout).astype(np.float32)
    expected = in_layout(want, layout)
    assert rel_l2(atrous.aspp(xl, params, structure=structure, layout=layout), expected) <= 1e-5
    got = atrous.aspp(torch.from_numpy(xl), params, structure=structure, layout=layout,
                      backend="numpy")
    assert isinstance(got, torch.Tensor) and rel_l2(got, expected) <= 1e-6


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("fusion", ["all", "none", "pool_into_bias"])
def test_triton_path(case, layout, fusion):
    """The Triton engine (on the CPU under TRITON_INTERPRET=1 when there is no GPU)."""
    pytest.importorskip("triton")
    from support import DEVICE

    structure, params, x, want = case
    fusions = {"all": Fusions(), "none": Fusions.none()}.get(fusion) or Fusions.only(fusion)
    weights = atrous.prepare_aspp(params, structure, dtype="float32", device=DEVICE)
    xt = torch.from_numpy(in_layout(x, layout)).float().to(DEVICE)
    got = atrous.aspp(xt, weights, layout=layout, backend="triton", fusions=fusions)
    assert rel_l2(got.cpu(), in_layout(want, layout)) <= 1e-5


def test_wider_projection():
    """The projection may have another width than the branches (functional API)."""
    module = seeded(PlainASPP(KERAS, CIN, C, co=9))
    x = torch.randn(1, CIN, H, W, dtype=torch.float64)
    with torch.no_grad():
        want = module(x)
    params = module.state_dict()
    for layout in ("NCHW", "NHWC"):
        got = atrous.aspp(in_layout(x, layout), params, structure=KERAS, layout=layout)
        assert got.shape[1 if layout == "NCHW" else 3] == 9
        assert rel_l2(got, in_layout(want, layout)) <= 1e-12


@pytest.mark.parametrize("channels_last", [False, True])
def test_torch_module(case, channels_last):
    structure, params, x, want = case
    ours = at.ASPP(CIN, None, C, structure=structure).double()
    ours.load_state_dict(params, strict=True)
    assert ours.structure == structure and list(ours.state_dict()) == list(params)
    xin = x.to(memory_format=torch.channels_last) if channels_last else x
    with torch.no_grad():
        got = ours(xin)
    assert got.is_contiguous(memory_format=torch.channels_last) == channels_last
    assert rel_l2(got, want) <= 1e-12
    # from_module reads the structure off a plain module
    plain = seeded(PlainASPP(structure, CIN, C))
    copy = at.ASPP.from_module(plain)
    assert copy.structure == structure
    with torch.no_grad():
        assert rel_l2(copy(x), plain(x)) <= 1e-12
    with torch.no_grad():  # the op wrapper, by name
        by_name = at.aspp(x, params, structure=structure)
    assert rel_l2(by_name, want) <= 1e-12


def test_torchvision_module_is_unchanged():
    ours = at.ASPP(CIN, (2, 3), C)
    assert ours.structure == AsppStructure.torchvision((2, 3))
    assert list(ours.state_dict())[:6] == ["convs.0.0.weight", "convs.0.1.weight",
                                           "convs.0.1.bias", "convs.0.1.running_mean",
                                           "convs.0.1.running_var",
                                           "convs.0.1.num_batches_tracked"]


def test_bad_structures_are_named():
    cases = [
        (lambda: AsppStructure(((5, 1),)), ValueError, r"kernel_size must be one of \(1, 3\)"),
        (lambda: AsppStructure(((1, 2),)), ValueError, "a 1x1 branch has rate 1"),
        (lambda: AsppStructure(()), TypeError, "non-empty sequence"),
        (lambda: AsppStructure(((3, 0),)), ValueError, "rates must be >= 1"),
        (lambda: AsppStructure(((3, 2),), pooling=1), TypeError, "pooling must be a bool"),
        (lambda: at.ASPP(4), TypeError, "atrous_rates"),
        (lambda: at.ASPP(4, (1,), structure=KERAS), TypeError, "not both"),
    ]
    for call, exc, message in cases:
        with pytest.raises(exc, match=message):
            call()
    params = seeded(PlainASPP(KERAS, 4, 3)).state_dict()
    with pytest.raises(ValueError, match=r"missing .*convs.0.1.weight.*unexpected"
                                         r" .*convs.0.0.bias.*conv biases"):
        atrous.prepare_aspp(params, AsppStructure.keras((1, 2, 5, 13)).__class__(
            KERAS.branches, bias=False, batch_norm=True))
    x = np.zeros((1, 4, 5, 5), np.float32)
    with pytest.raises(TypeError, match="not both"):
        atrous.aspp(x, params, rates=(1,), structure=KERAS)
    weights = atrous.prepare_aspp(params, KERAS, dtype="float32")
    with pytest.raises(ValueError, match="the weights were prepared for"):
        atrous.aspp(x, weights, structure=NO_POOL)
    plain = PlainASPP(KERAS, 4, 3)
    plain.convs[1][0].stride = (2, 2)
    with pytest.raises(TypeError, match=r"convs\[1\].*stride"):
        at.ASPP.from_module(plain)
