"""atrous.aspp, the functional ASPP: against the torchvision-structured reference in float64,
each fusion against the unfused path, both layouts, NumPy and torch inputs, bad input."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from test_torch_reference import ReferenceASPP, randomized, rel_l2  # noqa: E402

import atrous  # noqa: E402
from atrous.deeplab import Fusions  # noqa: E402
from atrous.deeplab.cpu import tap_columns, valid_macs  # noqa: E402

RATES = (2, 5, 13)  # 13 is larger than the map: that branch keeps only its centre tap
CIN, C, N, H, W = 12, 8, 2, 11, 9
FUSIONS = ["pool_into_bias", "write_slices", "epilogue", "shared_centre", "winograd"]


@pytest.fixture(scope="module")
def case():
    """(state dict, NCHW float64 input, float64 output of the reference module)."""
    module = randomized(ReferenceASPP(CIN, RATES, C)).double()
    x = torch.randn(N, CIN, H, W, dtype=torch.float64,
                    generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        want = module(x)
    return module.state_dict(), x, want


def f32(params) -> atrous.AsppWeights:
    return atrous.prepare_aspp(params, RATES, dtype="float32")


def in_layout(t, layout: str) -> np.ndarray:
    """A float64 NCHW tensor as a contiguous NumPy array in ``layout``."""
    a = t.numpy()
    return np.ascontiguousarray(a.transpose(0, 2, 3, 1) if layout == "NHWC" else a)


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("dtype,bound", [("float32", 1e-5), ("float64", 1e-12)])
def test_fused_matches_the_reference_module(case, layout, dtype, bound):
    params, x, want = case
    weights = atrous.prepare_aspp(params, RATES, dtype=dtype)
    got = atrous.aspp(in_layout(x, layout).astype(dtype), weights, layout=layout)
    assert got.dtype == np.dtype(dtype)
    assert rel_l2(got, in_layout(want, layout)) <= bound


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_torch_cpu_tensors_in_and_out(case, layout):
    params, x, want = case
    xt = torch.from_numpy(in_layout(x, layout)).float()
    got = atrous.aspp(xt, f32(params), layout=layout)
    assert isinstance(got, torch.Tensor) and got.dtype == torch.float32
    assert rel_l2(got, in_layout(want, layout)) <= 1e-5


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("fusion", [*FUSIONS, "all"])
def test_each_fusion_matches_the_unfused_path(case, layout, fusion):
    params, x, _ = case
    weights = f32(params)
    xl = in_layout(x, layout).astype(np.float32)
    unfused = atrous.aspp(xl, weights, layout=layout, fusions=Fusions.none())
    fusions = Fusions() if fusion == "all" else Fusions.only(fusion)
    fused = atrous.aspp(xl, weights, layout=layout, fusions=fusions)
    assert rel_l2(fused, unfused) <= 1e-6


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_state_dict_weights_numpy_backend_and_out(case, layout):
    params, x, want = case
    xl = in_layout(x, layout).astype(np.float32)
    expected = in_layout(want, layout)
    assert rel_l2(atrous.aspp(xl, params, rates=RATES, layout=layout), expected) <= 1e-5
    reference = atrous.aspp(xl, f32(params), layout=layout,
                            backend="numpy")
    assert reference.dtype == np.float32 and rel_l2(reference, expected) <= 1e-7
    out = np.full(expected.shape, np.nan, np.float32)
    assert atrous.aspp(xl, f32(params), layout=layout, out=out) is out
    assert rel_l2(out, expected) <= 1e-5


def test_padded_taps_are_skipped():
    # A rate past the map leaves only the centre column and row of taps out of the picture.
    assert tap_columns(11, 9, 13) == []
    # 77% / 57% / 41% of a padded 3x3's multiply-adds touch real data at 33x33.
    for rate, share in ((6, 0.77), (12, 0.57), (18, 0.41)):
        assert valid_macs(33, 33, (rate,)) - 33 * 33 == pytest.approx(9 * 33 * 33 * share,
                                                                       rel=0.02)


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("fusion", ["all", "none", "pool_into_bias", "write_slices",
                                    "epilogue"])
def test_triton_path(case, layout, fusion):
    """The Triton engine (on the CPU under TRITON_INTERPRET=1 when there is no GPU)."""
    pytest.importorskip("triton")
    from support import DEVICE

    params, x, want = case
    fusions = {"all": Fusions(), "none": Fusions.none()}.get(fusion) or Fusions.only(fusion)
    weights = atrous.prepare_aspp(params, RATES, dtype="float32", device=DEVICE)
    xt = torch.from_numpy(in_layout(x, layout)).float().to(DEVICE)
    got = atrous.aspp(xt, weights, layout=layout, backend="triton", fusions=fusions)
    assert got.device.type == DEVICE and got.dtype == torch.float32
    assert rel_l2(got.cpu(), in_layout(want, layout)) <= 1e-5


def test_bad_input_is_named(case):
    params, x, _ = case
    weights = f32(params)
    x32 = x.numpy().astype(np.float32)
    errors = [
        (lambda: atrous.aspp(x32[0], weights), ValueError, r"x must be 4-D \(NCHW\)"),
        (lambda: atrous.aspp(x32[:, :5], weights), ValueError,
         r"x has 5 channels \(shape \(2, 5, 11, 9\), NCHW\).*in_channels=12"),
        (lambda: atrous.aspp(x32, weights, layout="NHWC"), ValueError, "x has 9 channels"),
        (lambda: atrous.aspp(x32.astype(np.float64), weights), TypeError,
         "x is float64 but the weights were prepared for float32"),
        (lambda: atrous.aspp(x32, weights, rates=(1, 2, 3)), ValueError,
         r"rates=\(1, 2, 3\) but the weights were prepared for rates=\(2, 5, 13\)"),
        (lambda: atrous.aspp(x32, params), TypeError, "rates is required"),
        (lambda: atrous.aspp(x32, [1, 2]), TypeError, "weights must be AsppWeights"),
        (lambda: atrous.aspp(x32, weights, fusions="all"), TypeError, "fusions must be"),
        (lambda: atrous.aspp(x32, weights, out=np.empty((2, 8, 11, 8), np.float32)),
         ValueError, r"out must have shape \(2, 8, 11, 9\)"),
        (lambda: atrous.prepare_aspp(params, (2, 5)), ValueError,
         r"missing \['convs.3.2.bias'.*unexpected \['convs.3.0.weight'.*rates gives 2 dilated"),
        (lambda: atrous.prepare_aspp({**params, "project.0.weight": params["project.0.weight"]
                                      [:, :8]}, RATES), ValueError,
         r"params\['project.0.weight'\] must have shape \(8, 40, 1, 1\).*got \(8, 8, 1, 1\)"),
        (lambda: atrous.prepare_aspp(params, (2, 0, 3)), ValueError, "rates must be >= 1"),
        (lambda: atrous.prepare_aspp(params, 6), TypeError, "rates must be a sequence"),
        (lambda: atrous.prepare_aspp(params, RATES, eps=0), ValueError, "eps must be a positive"),
        (lambda: atrous.prepare_aspp(params, RATES, dtype="bfloat16"), TypeError,
         "dtype must be one of"),
    ]
    for call, exc, message in errors:
        with pytest.raises(exc, match=message):
            call()


def test_autograd_is_refused(case):
    params, x, _ = case
    xt = x.float().requires_grad_()
    with pytest.raises(RuntimeError, match="inference-only"):
        atrous.aspp(xt, f32(params))
    with torch.no_grad():
        assert atrous.aspp(xt, f32(params)).shape == (N, C, H, W)


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("split", [1, 4])
def test_triton_launch_into_a_slice_with_a_per_image_bias(layout, split):
    """The conv kernel support the Triton engine uses: a strided output view (a channel slice
    of a bigger buffer) and an (N, Cout) bias, with and without split-K."""
    pytest.importorskip("triton")
    from support import DEVICE

    from atrous.core.args import from_nchw
    from atrous.kernels.conv import triton_gpu
    from atrous.kernels.conv.spec import make_problem

    g = torch.Generator().manual_seed(6)
    n, cin, cout, h, w = 2, 64, 16, 5, 7
    x = torch.randn(from_nchw(n, cin, h, w, layout), generator=g).to(DEVICE)
    weight = torch.randn(cout, cin, 3, 3, generator=g).to(DEVICE)
    bias = torch.randn(n, cout, generator=g).to(DEVICE)
    problem = make_problem(tuple(x.shape), tuple(weight.shape), (cout,), "float32",
                           padding="same", dilation=2, activation="relu", layout=layout)
    config = {"BLOCK_M": 64, "BLOCK_N": 64, "BLOCK_K": 16, "SPLIT_K": split, "num_warps": 4,
              "num_stages": 3}
    buffer = torch.full(from_nchw(n, 3 * cout, h, w, layout), float("nan"), device=DEVICE)
    view = buffer[:, cout:2 * cout] if layout == "NCHW" else buffer[..., cout:2 * cout]
    triton_gpu.launch_into(problem, config, view, x, weight, bias, bias_per_image=True)
    want = [atrous.dilated_conv2d(x[i:i + 1].cpu().double(), weight.cpu().double(),
                                  bias[i].cpu().double(), padding="same", dilation=2,
                                  activation="relu", layout=layout, backend="numpy")
            for i in range(n)]
    assert rel_l2(view.cpu(), torch.cat(want)) <= 1e-6
    rest = torch.cat([buffer[:, :cout], buffer[:, 2 * cout:]], 1) if layout == "NCHW" else \
        torch.cat([buffer[..., :cout], buffer[..., 2 * cout:]], 3)
    assert torch.isnan(rest).all()  # nothing written outside the slice


@pytest.fixture(scope="module")
def head_case():
    from test_torch_reference import reference_head

    module = randomized(reference_head(CIN, 5, RATES), seed=8).double()
    x = torch.randn(1, CIN, H, W, dtype=torch.float64, generator=torch.Generator().manual_seed(9))
    with torch.no_grad():
        want = module(x)
    return module.state_dict(), x, want


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("path", ["fused", "unfused", "triton"])
def test_deeplab_head_functional(head_case, layout, path):
    params, x, want = head_case
    device = "cpu"
    if path == "triton":
        pytest.importorskip("triton")
        from support import DEVICE as device
    weights = atrous.prepare_deeplab_head(params, RATES, dtype="float32", device=device)
    xt = torch.from_numpy(in_layout(x, layout)).float().to(device)
    kwargs = {"fusions": Fusions.none()} if path == "unfused" else {}
    if path == "triton":
        kwargs["backend"] = "triton"
    logits = atrous.deeplab_head(xt, weights, layout=layout, **kwargs)
    assert rel_l2(logits.cpu(), in_layout(want, layout)) <= 1e-5
    up = atrous.deeplab_head(xt, weights, layout=layout, image_size=(20, 17), **kwargs)
    expected = torch.nn.functional.interpolate(want, size=(20, 17), mode="bilinear",
                                               align_corners=False)
    assert rel_l2(up.cpu(), in_layout(expected, layout)) <= 1e-5


def test_deeplab_head_numpy_and_bad_params(head_case):
    params, x, want = head_case
    got = atrous.deeplab_head(x.numpy().astype(np.float32), params, rates=RATES)
    assert isinstance(got, np.ndarray) and rel_l2(got, want) <= 1e-5
    with pytest.raises(ValueError, match=r"missing \['4.bias'\]"):
        atrous.prepare_deeplab_head({k: v for k, v in params.items() if k != "4.bias"}, RATES)
    with pytest.raises(ValueError, match=r"params\['1.weight'\] must have shape \(256, 256, 3"):
        atrous.prepare_deeplab_head({**params, "1.weight": params["1.weight"][:, :, :1]}, RATES)
