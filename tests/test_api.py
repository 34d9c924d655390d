"""Public API behaviour: tensors in and out, out=, configs, strided inputs, NaN and Inf."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from support import assert_close, seeded

import atrous


def test_import_is_light():
    code = ("import sys, atrous; heavy = [m for m in ('torch', 'triton', 'numba') if m in"
            " sys.modules]; print(heavy)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True)
    assert result.stdout.strip() == "[]"


def test_out_is_written_and_returned():
    x = seeded((2, 3, 5, 5), 0).astype(np.float32)
    out = np.full((2, 3), np.nan, dtype=np.float32)
    assert atrous.global_avg_pool(x, out=out) is out
    assert_close(out, atrous.global_avg_pool(x.astype(np.float64), backend="numpy"), "float32")


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_non_contiguous_inputs(layout):
    big = seeded((2, 9, 12, 10), 1)
    x = big[:, ::2, 1::2, ::-1]  # strided and reversed
    if layout == "NHWC":
        x = big.transpose(0, 2, 3, 1)[:, ::2, 1:, :]
    w = seeded((4, 3, 3, 3), 2).transpose(0, 1, 3, 2)
    x4 = x[:, :3] if layout == "NCHW" else x[..., :3]
    got = atrous.dilated_conv2d(x4, w, padding="same", dilation=2, layout=layout)
    ref = atrous.dilated_conv2d(np.ascontiguousarray(x4), np.ascontiguousarray(w),
                                padding="same", dilation=2, layout=layout, backend="numpy")
    assert_close(got, ref, "float64")
    assert_close(atrous.global_avg_pool(x, layout=layout),
                 atrous.global_avg_pool(x, layout=layout, backend="numpy"), "float64")
    assert_close(atrous.upsample_bilinear(x, (7, 9), layout=layout),
                 atrous.upsample_bilinear(x, (7, 9), layout=layout, backend="numpy"), "float64")


def test_nan_and_inf_propagate_like_the_reference():
    x = seeded((1, 3, 6, 6), 3)
    x[0, 0, 2, 3] = np.nan
    x[0, 1, 0, 0] = np.inf
    x[0, 2, 5, 5] = -np.inf
    w = seeded((2, 3, 3, 3), 4)
    calls = [
        lambda b: atrous.global_avg_pool(x, backend=b),
        lambda b: atrous.upsample_bilinear(x, (13, 11), backend=b),
        lambda b: atrous.upsample_bilinear(x, (13, 11), coordinate_mode="align_corners",
                                           backend=b),
        lambda b: atrous.dilated_conv2d(x, w, padding="same", dilation=2, backend=b),
    ]
    for call in calls:
        got, ref = call("numba"), call("numpy")
        assert np.isnan(ref).any()
        assert_close(got, ref, "float64")


def test_partial_config_fills_from_default():
    x = seeded((1, 4, 5, 5), 5)
    out = atrous.global_avg_pool(x, config={"threads": 1})
    assert_close(out, atrous.global_avg_pool(x, backend="numpy"), "float64")


class TestTorchTensors:
    torch = pytest.importorskip("torch")

    def test_cpu_tensor_in_tensor_out(self):
        x = self.torch.from_numpy(seeded((1, 4, 6, 6), 6).astype(np.float32))
        w = self.torch.from_numpy(seeded((5, 4, 3, 3), 7).astype(np.float32))
        out = atrous.dilated_conv2d(x, w, padding=1)
        assert isinstance(out, self.torch.Tensor) and out.dtype == self.torch.float32
        expected = self.torch.nn.functional.conv2d(x.double(), w.double(), padding=1)
        assert_close(out, expected.numpy(), "float32")

    def test_out_tensor_is_written_in_place(self):
        x = self.torch.from_numpy(seeded((2, 3, 4, 4), 8))
        out = self.torch.full((2, 3, 9, 9), float("nan"), dtype=self.torch.float64)
        result = atrous.upsample_bilinear(x, (9, 9), out=out)
        assert result is out
        expected = self.torch.nn.functional.interpolate(x, (9, 9), mode="bilinear")
        assert_close(out, expected.numpy(), "float64")

    def test_tensor_requiring_grad_is_refused_unless_grad_is_off(self):
        """atrous is inference-only (README): no silent result without a grad_fn."""
        x = self.torch.ones(1, 2, 3, 3, dtype=self.torch.float64, requires_grad=True)
        with pytest.raises(RuntimeError, match=r"global_avg_pool is inference-only.*x requires"):
            atrous.global_avg_pool(x)
        with self.torch.no_grad():
            assert float(atrous.global_avg_pool(x)[0, 0]) == 1.0
