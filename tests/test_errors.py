"""Bad input gets a clear error that names the argument and shows what it got."""

from __future__ import annotations

import numpy as np
import pytest

import atrous

X = np.ones((1, 4, 5, 5), dtype=np.float32)
W = np.ones((8, 4, 3, 3), dtype=np.float32)

CASES = [
    # (call, exception, message fragment)
    (lambda: atrous.global_avg_pool(X[0]), ValueError,
     r"x must be 4-D \(NCHW\), got shape \(4, 5, 5\)"),
    (lambda: atrous.global_avg_pool(X, layout="CHWN"), ValueError, "layout must be one of"),
    (lambda: atrous.global_avg_pool(X.astype(np.int32)), TypeError, "floating.*got int32"),
    (lambda: atrous.global_avg_pool(np.ones((1, 0, 5, 5), np.float32)), ValueError, "zero-size"),
    (lambda: atrous.global_avg_pool(X, backend="cuda"), ValueError, "backend must be"),
    (lambda: atrous.global_avg_pool(X, backend="triton"), ValueError, "needs CUDA tensors"),
    (lambda: atrous.global_avg_pool(X.astype(np.float16)), TypeError,
     "backend 'numba' supports float32/float64, got float16"),
    (lambda: atrous.global_avg_pool([[1.0]]), TypeError, "numpy.ndarray or a torch.Tensor"),
    (lambda: atrous.global_avg_pool(X, keepdims=1), TypeError, "keepdims"),
    (lambda: atrous.dilated_conv2d(X, W[:, :3]), ValueError, r"expects 3 input channels.*has 4"),
    (lambda: atrous.dilated_conv2d(X, W, groups=3), ValueError, "groups=3 must divide"),
    (lambda: atrous.dilated_conv2d(X, W, groups=0), ValueError, "groups must be a positive"),
    (lambda: atrous.dilated_conv2d(X, W, np.ones(7, np.float32)), ValueError,
     r"bias must have shape \(8,\), got \(7,\)"),
    (lambda: atrous.dilated_conv2d(X, W, padding=-1), ValueError, "padding must be >= 0"),
    (lambda: atrous.dilated_conv2d(X, W, padding="full"), ValueError, "padding must be"),
    (lambda: atrous.dilated_conv2d(X, W, stride=0), ValueError, "stride must be >= 1"),
    (lambda: atrous.dilated_conv2d(X, W, dilation=(1, 0)), ValueError, "dilation must be >= 1"),
    (lambda: atrous.dilated_conv2d(X, W, dilation=1.5), TypeError, "dilation must be an int"),
    (lambda: atrous.dilated_conv2d(X, W, stride=2, padding="same"), ValueError,
     "padding='same' needs stride 1"),
    (lambda: atrous.dilated_conv2d(X, W, activation="gelu"), ValueError, "activation must be"),
    (lambda: atrous.dilated_conv2d(X, W.astype(np.float64)), TypeError, "mixed dtypes"),
    (lambda: atrous.dilated_conv2d(X, W, dilation=3), ValueError, "output would be empty"),
    (lambda: atrous.dilated_conv2d(X, W[0]), ValueError, "weight must be 4-D"),
    (lambda: atrous.upsample_bilinear(X), ValueError, "exactly one of size and scale_factor"),
    (lambda: atrous.upsample_bilinear(X, 4, scale_factor=2), ValueError, "exactly one"),
    (lambda: atrous.upsample_bilinear(X, (0, 4)), ValueError, "size must be positive"),
    (lambda: atrous.upsample_bilinear(X, (2, 3, 4)), TypeError, "size must be"),
    (lambda: atrous.upsample_bilinear(X, scale_factor=-2.0), ValueError, "scale_factor must be"),
    (lambda: atrous.upsample_bilinear(X, scale_factor=0.1), ValueError, "empty output 0x0"),
    (lambda: atrous.upsample_bilinear(X, 4, coordinate_mode="nearest"), ValueError,
     "coordinate_mode must be one of"),
    (lambda: atrous.upsample_bilinear(X, 4, align_corners=True, coordinate_mode="half_pixel"),
     ValueError, "contradicts"),
    (lambda: atrous.upsample_bilinear(X, 4, align_corners=1), TypeError, "align_corners"),
    (lambda: atrous.global_avg_pool(X, out=np.empty((1, 5), np.float32)), ValueError,
     r"out must have shape \(1, 4\) and dtype float32, got shape \(1, 5\)"),
    (lambda: atrous.global_avg_pool(X, out=np.empty((1, 4), np.float64)), ValueError,
     "dtype float64"),
    (lambda: atrous.global_avg_pool(X, out=np.empty((1, 8), np.float32)[:, ::2]), ValueError,
     "C-contiguous"),
    (lambda: atrous.global_avg_pool(X, config={"BLOCK": 3}), ValueError, "unknown key"),
    (lambda: atrous.global_avg_pool(X, config={"ROWS": 3}), ValueError, "outside the space"),
    (lambda: atrous.global_avg_pool(X, config=[1]), TypeError, "config must be a dict"),
]


@pytest.mark.parametrize("call,exc,match", CASES, ids=[c[2][:40] for c in CASES])
def test_bad_input_raises_clear_error(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


def test_agreeing_align_corners_and_mode_are_accepted():
    a = atrous.upsample_bilinear(X, 7, align_corners=False, coordinate_mode="asymmetric",
                                 backend="numpy")
    b = atrous.upsample_bilinear(X, 7, align_corners=True, coordinate_mode="align_corners",
                                 backend="numpy")
    assert a.shape == b.shape == (1, 4, 7, 7)


class TestTorchErrors:
    torch = pytest.importorskip("torch")

    def test_mixed_arrays_and_tensors(self):
        with pytest.raises(TypeError, match="mix of NumPy arrays and torch tensors"):
            atrous.dilated_conv2d(self.torch.from_numpy(X), W)

    def test_unsupported_cpu_dtype(self):
        x = self.torch.ones(1, 2, 3, 3, dtype=self.torch.bfloat16)
        with pytest.raises(TypeError, match="supports float32/float64, got bfloat16"):
            atrous.global_avg_pool(x)

    def test_out_must_be_a_tensor_for_tensor_inputs(self):
        with pytest.raises(TypeError, match=r"out must be a torch\.Tensor"):
            atrous.global_avg_pool(self.torch.from_numpy(X), out=np.empty((1, 4), np.float32))

    def test_cuda_tensor_with_numba_backend(self):
        if not self.torch.cuda.is_available():
            pytest.skip("needs a CUDA GPU")
        with pytest.raises(ValueError, match="backend='numba' runs on the CPU"):
            atrous.global_avg_pool(self.torch.ones(1, 2, 3, 3, device="cuda"), backend="numba")

    def test_mixed_devices(self):
        if not self.torch.cuda.is_available():
            pytest.skip("needs a CUDA GPU")
        with pytest.raises(ValueError, match="mixed devices"):
            atrous.dilated_conv2d(self.torch.ones(1, 4, 5, 5, device="cuda"),
                                  self.torch.from_numpy(W))
