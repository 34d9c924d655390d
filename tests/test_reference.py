"""The NumPy references against independent oracles: torch.nn.functional and hand-computed
tiny cases."""

from __future__ import annotations

import numpy as np
import pytest
from support import seeded

import atrous

torch = pytest.importorskip("torch")
F = torch.nn.functional


@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (2, 3, 7, 5), (1, 4, 33, 33)], ids=str)
def test_gap_reference_matches_torch(shape):
    x = seeded(shape, 0)
    ref = atrous.global_avg_pool(x, backend="numpy", keepdims=True)
    expected = F.adaptive_avg_pool2d(torch.from_numpy(x), 1).numpy()
    np.testing.assert_allclose(ref, expected, rtol=1e-12, atol=1e-14)
    nhwc = atrous.global_avg_pool(x.transpose(0, 2, 3, 1), layout="NHWC", backend="numpy")
    np.testing.assert_allclose(nhwc, expected[:, :, 0, 0], rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("kwargs", [
    dict(padding=2, dilation=2),
    dict(stride=2, padding=3, dilation=3, groups=2),
    dict(stride=(1, 2), padding=(1, 0), groups=6),
    dict(padding="same", dilation=5),
    dict(padding="valid", dilation=(2, 1)),
], ids=str)
@pytest.mark.parametrize("relu", [False, True])
def test_conv_reference_matches_torch(kwargs, relu):
    x, bias = seeded((2, 6, 11, 9), 1), seeded((12,), 3)
    weight = seeded((12, 6 // kwargs.get("groups", 1), 3, 3), 2)
    ref = atrous.dilated_conv2d(x, weight, bias, backend="numpy",
                                activation="relu" if relu else None, **kwargs)
    expected = F.conv2d(torch.from_numpy(x), torch.from_numpy(weight), torch.from_numpy(bias),
                        **kwargs)
    expected = (F.relu(expected) if relu else expected).numpy()
    np.testing.assert_allclose(ref, expected, rtol=1e-10, atol=1e-10)
    nhwc = atrous.dilated_conv2d(x.transpose(0, 2, 3, 1), weight, bias, layout="NHWC",
                                 backend="numpy", activation="relu" if relu else None, **kwargs)
    np.testing.assert_allclose(nhwc.transpose(0, 3, 1, 2), expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("size,scale", [((17, 5), None), (None, 2.5), (None, (0.5, 3.0)),
                                        ((1, 7), None), (None, 8), ((40, 3), None)], ids=str)
@pytest.mark.parametrize("align_corners", [False, True])
def test_upsample_reference_matches_torch(size, scale, align_corners):
    x = seeded((2, 3, 9, 11), 4)
    ref = atrous.upsample_bilinear(x, size, scale_factor=scale, align_corners=align_corners,
                                   backend="numpy")
    expected = F.interpolate(torch.from_numpy(x), size=size, scale_factor=scale,
                             mode="bilinear", align_corners=align_corners).numpy()
    np.testing.assert_allclose(ref, expected, rtol=1e-12, atol=1e-12)


def test_gap_by_hand():
    x = np.array([[[[1.0, 2.0], [3.0, 4.0]]]])
    assert atrous.global_avg_pool(x, backend="numpy")[0, 0] == 2.5


def test_dilated_conv_by_hand():
    x = np.arange(1.0, 10.0).reshape(1, 1, 3, 3)
    out = atrous.dilated_conv2d(x, np.ones((1, 1, 3, 3)), padding=2, dilation=2,
                                backend="numpy")[0, 0]
    assert out[1, 1] == 5.0  # only the centre tap lands inside the image
    assert out[0, 0] == 1 + 3 + 7 + 9  # the four taps that land on the corners
    assert out.shape == (3, 3)


@pytest.mark.parametrize("mode,expected", [
    ("half_pixel", [0.0, 0.25, 0.75, 1.0]),
    ("pytorch_half_pixel", [0.0, 0.25, 0.75, 1.0]),
    ("align_corners", [0.0, 1 / 3, 2 / 3, 1.0]),
    ("asymmetric", [0.0, 0.5, 1.0, 1.0]),  # TF1 resize_bilinear: x = i * in / out
])
def test_upsample_by_hand(mode, expected):
    x = np.array([[[[0.0, 1.0]]]])
    out = atrous.upsample_bilinear(x, (1, 4), coordinate_mode=mode, backend="numpy")
    np.testing.assert_allclose(out[0, 0, 0], expected, rtol=0, atol=1e-15)


def test_single_output_pixel_modes_by_hand():
    x = np.array([[[[0.0, 1.0, 2.0, 3.0]]]])
    centre = atrous.upsample_bilinear(x, (1, 1), coordinate_mode="half_pixel", backend="numpy")
    first = atrous.upsample_bilinear(x, (1, 1), coordinate_mode="pytorch_half_pixel",
                                     backend="numpy")
    assert centre[0, 0, 0, 0] == 1.5  # x = 4 * 0.5 - 0.5
    assert first[0, 0, 0, 0] == 0.0  # ONNX pytorch_half_pixel: 0 when the output has size 1
