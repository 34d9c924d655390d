"""atrous.prepare_conv: weights packed once, the same results as dilated_conv2d, every CPU
variant (tile, gemm, winograd) against the float64 reference, and its errors."""

from __future__ import annotations

import numpy as np
import pytest

import atrous
from atrous.core.tolerance import compare
from atrous.kernels.conv import weights_cpu
from atrous.kernels.conv.reference import reference
from atrous.kernels.conv.spec import cpu_variants, make_problem

RNG = np.random.default_rng(7)


def _case(layout: str, dilation: int = 2, h: int = 9, dtype: str = "float32"):
    x = RNG.standard_normal((2, 6, h, h + 1)).astype(dtype)
    w = RNG.standard_normal((5, 6, 3, 3)).astype(dtype)
    b = RNG.standard_normal(5).astype(dtype)
    xl = x if layout == "NCHW" else np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    return xl, w, b


def _expected(xl, w, b, layout, **options):
    p = make_problem(xl.shape, w.shape, b.shape, str(xl.dtype), layout=layout, **options)
    return p, reference(p, xl.astype(np.float64), w.astype(np.float64), b.astype(np.float64))


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("variant", ["tile", "gemm", "winograd"])
@pytest.mark.parametrize("dilation", [1, 3])
def test_every_variant_matches_the_reference(layout, variant, dilation):
    xl, w, b = _case(layout)
    options = dict(padding="same", dilation=dilation, activation="relu")
    p, ref = _expected(xl, w, b, layout, **options)
    assert variant in cpu_variants(p)
    conv = atrous.prepare_conv(w, b, layout=layout, **options)
    out = np.full(p.out_shape, np.nan, np.float32)  # an unwritten element shows
    conv(xl, out=out, config={"variant": variant})
    assert compare(out, ref, "float32").ok
    np.testing.assert_array_equal(
        out, atrous.dilated_conv2d(xl, w, b, layout=layout, config={"variant": variant},
                                   **options))


def test_weights_are_copied_and_packed_once(monkeypatch):
    xl, w, b = _case("NHWC")
    calls = []
    real = weights_cpu.pack
    monkeypatch.setattr(weights_cpu, "pack", lambda weight: calls.append(1) or real(weight))
    conv = atrous.prepare_conv(w, b, padding=1, layout="NHWC")
    first = conv(xl)
    w[...] = 0  # the caller's array changes; the prepared conv does not
    np.testing.assert_array_equal(conv(xl), first)
    assert len(calls) == 1


def test_torch_tensors():
    torch = pytest.importorskip("torch")
    xl, w, b = _case("NCHW")
    conv = atrous.prepare_conv(torch.from_numpy(w), torch.from_numpy(b), padding="same",
                               dilation=2)
    got = conv(torch.from_numpy(xl))
    assert isinstance(got, torch.Tensor)
    _, ref = _expected(xl, w, b, "NCHW", padding="same", dilation=2)
    assert compare(got.numpy(), ref, "float32").ok


@pytest.mark.parametrize("variant", ["tile", "gemm", "winograd"])
def test_non_finite_values_propagate_as_in_the_reference(variant):
    xl, w, b = _case("NHWC", dilation=3)
    xl[0, 2, 3, 1] = np.inf
    w[1, 2, 0, 0] = np.nan
    options = dict(padding="same", dilation=3)
    _, ref = _expected(xl, w, b, "NHWC", **options)
    got = atrous.prepare_conv(w, b, layout="NHWC", **options)(xl, config={"variant": variant})
    assert compare(got, ref, "float32").ok
    xl2, w2, b2 = _case("NHWC", dilation=3)
    xl2[1, 0, 0, 0] = -np.inf  # non-finite input only: Winograd falls back to GEMMs
    _, ref2 = _expected(xl2, w2, b2, "NHWC", **options)
    got2 = atrous.prepare_conv(w2, b2, layout="NHWC", **options)(
        xl2, config={"variant": variant})
    assert compare(got2, ref2, "float32").ok


def test_errors_name_the_argument():
    xl, w, b = _case("NCHW")
    with pytest.raises(ValueError, match="weight must be 4-D"):
        atrous.prepare_conv(w[0], b)
    with pytest.raises(TypeError, match="weight"):
        atrous.prepare_conv([[1.0]], None)
    conv = atrous.prepare_conv(w, b, padding=1)
    with pytest.raises(ValueError, match="channel"):
        conv(xl[:, :4])
    with pytest.raises(ValueError, match="variant"):
        conv(xl, config={"variant": "fft"})
    grouped = atrous.prepare_conv(RNG.standard_normal((6, 3, 3, 3)).astype(np.float32),
                                  groups=2, padding=1)
    with pytest.raises(ValueError, match="variant"):
        grouped(xl, config={"variant": "gemm"})  # not in a grouped conv's Space


def test_partial_configs_complete_per_variant():
    xl, w, b = _case("NCHW")
    conv = atrous.prepare_conv(w, b, padding="same", dilation=2)
    ex = atrous.explain("dilated_conv2d", xl, w, b, padding="same", dilation=2,
                        config={"BLOCK_OW": 3})
    assert ex.config["variant"] == "tile" and ex.config["BLOCK_OW"] == 3
    ex = atrous.explain("dilated_conv2d", xl, w, b, padding="same", dilation=2,
                        config={"variant": "gemm"})
    assert ex.config["variant"] == "gemm"
    conv(xl, config={"variant": "gemm"})
    assert "PreparedConv" in repr(conv)


@pytest.mark.parametrize("kernel,padding", [(1, 0), (3, "valid"), (3, (1, 0)), (3, (2, 1))])
def test_gemm_batch_paths_match_the_reference(kernel, padding):
    """NHWC products over the whole batch (1x1, a centre tap reading whole images) and the
    per-image ones (no tap covers the output, or a row offset) agree with the reference."""
    x = RNG.standard_normal((3, 7, 6, 5)).astype(np.float32)  # NHWC
    w = RNG.standard_normal((4, 5, kernel, kernel)).astype(np.float32)
    p, ref = _expected(x, w, np.zeros(4, np.float32), "NHWC", padding=padding)
    out = np.full(p.out_shape, np.nan, np.float32)
    atrous.prepare_conv(w, layout="NHWC", padding=padding)(x, out=out,
                                                             config={"variant": "gemm"})
    assert compare(out, ref, "float32").ok


def test_weights_are_read_only_and_cannot_be_swapped():
    """Nothing done through the public API makes the weights drift from their packing:
    read-only views, no setters, and a bigger array cannot reach the kernels."""
    xl, w, b = _case("NHWC")
    options = dict(padding="same", dilation=2, layout="NHWC")
    conv = atrous.prepare_conv(w, b, **options)
    _, ref = _expected(xl, w, b, "NHWC", padding="same", dilation=2)
    first = conv(xl, config={"variant": "tile"})
    for view in (conv.weight, conv.bias):
        with pytest.raises(ValueError, match="read-only"):
            view[...] = 0
        with pytest.raises(ValueError):
            view.flags.writeable = True  # its base is read-only for good
    big = RNG.standard_normal((64, 6, 3, 3)).astype(np.float32)
    for name, value in (("weight", big), ("bias", big[:, 0, 0, 0]), ("options", {}),
                        ("backend", "numpy")):
        with pytest.raises(AttributeError, match=f"PreparedConv.{name} is read-only"):
            setattr(conv, name, value)
    with pytest.raises(TypeError):
        conv.options["groups"] = 2
    with pytest.raises(AttributeError):
        conv._other = 1  # no new attributes either (slots)
    w[...] = 0  # the caller's arrays are not the prepared ones
    b[...] = 0
    for variant in ("tile", "gemm", "winograd"):
        out = np.full(first.shape, np.nan, np.float32)
        conv(xl, out=out, config={"variant": variant})
        assert compare(out, ref, "float32").ok
    np.testing.assert_array_equal(conv(xl, config={"variant": "tile"}), first)


def test_torch_weights_are_copies():
    torch = pytest.importorskip("torch")
    xl, w, b = _case("NCHW")
    conv = atrous.prepare_conv(torch.from_numpy(w), torch.from_numpy(b), padding=1)
    first = conv(torch.from_numpy(xl))
    conv.weight.add_(1.0)  # a copy: the prepared weights do not change
    conv.weight.resize_(64, 6, 3, 3)
    conv.bias.zero_()
    assert tuple(conv.weight.shape) == w.shape
    with pytest.raises(AttributeError, match="read-only"):
        conv.weight = torch.zeros(64, 6, 3, 3)
    torch.testing.assert_close(conv(torch.from_numpy(xl)), first, rtol=0, atol=0)
