"""Hypothesis: random small shapes and parameters, Numba against the reference."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from support import assert_close

import atrous

SETTINGS = settings(max_examples=25, deadline=None, derandomize=True)
layouts = st.sampled_from(["NCHW", "NHWC"])
dtypes = st.sampled_from(["float32", "float64"])


def _data(shape, dtype, seed):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


@SETTINGS
@given(n=st.integers(1, 3), c=st.integers(1, 9), h=st.integers(1, 12), w=st.integers(1, 12),
       layout=layouts, dtype=dtypes, seed=st.integers(0, 2**16))
def test_gap_random_shapes(n, c, h, w, layout, dtype, seed):
    shape = (n, c, h, w) if layout == "NCHW" else (n, h, w, c)
    x = _data(shape, dtype, seed)
    assert_close(atrous.global_avg_pool(x, layout=layout),
                 atrous.global_avg_pool(x.astype(np.float64), layout=layout, backend="numpy"),
                 dtype)


@SETTINGS
@given(n=st.integers(1, 2), g=st.integers(1, 3), cin_g=st.integers(1, 4), cout_g=st.integers(1, 4),
       h=st.integers(1, 10), w=st.integers(1, 10), k=st.integers(1, 3), stride=st.integers(1, 3),
       dilation=st.integers(1, 12), pad=st.integers(0, 12), bias=st.booleans(),
       relu=st.booleans(), layout=layouts, dtype=dtypes, seed=st.integers(0, 2**16))
def test_conv_random_shapes(n, g, cin_g, cout_g, h, w, k, stride, dilation, pad, bias, relu,
                            layout, dtype, seed):
    if (h + 2 * pad - dilation * (k - 1) - 1) < 0 or (w + 2 * pad - dilation * (k - 1) - 1) < 0:
        return  # an empty output is an error, tested in test_errors.py
    shape = (n, cin_g * g, h, w) if layout == "NCHW" else (n, h, w, cin_g * g)
    x, wt = _data(shape, dtype, seed), _data((cout_g * g, cin_g, k, k), dtype, seed + 1)
    b = _data((cout_g * g,), dtype, seed + 2) if bias else None
    kw = dict(stride=stride, padding=pad, dilation=dilation, groups=g, layout=layout,
              activation="relu" if relu else None)
    ref = atrous.dilated_conv2d(x.astype(np.float64), wt.astype(np.float64),
                                None if b is None else b.astype(np.float64), backend="numpy", **kw)
    assert_close(atrous.dilated_conv2d(x, wt, b, **kw), ref, dtype)


@SETTINGS
@given(c=st.integers(1, 5), h=st.integers(1, 9), w=st.integers(1, 9), oh=st.integers(1, 20),
       ow=st.integers(1, 20), mode=st.sampled_from(["half_pixel", "align_corners", "asymmetric",
                                                     "pytorch_half_pixel"]),
       layout=layouts, dtype=dtypes, seed=st.integers(0, 2**16))
def test_upsample_random_shapes(c, h, w, oh, ow, mode, layout, dtype, seed):
    shape = (1, c, h, w) if layout == "NCHW" else (1, h, w, c)
    x = _data(shape, dtype, seed)
    kw = dict(coordinate_mode=mode, layout=layout)
    assert_close(atrous.upsample_bilinear(x, (oh, ow), **kw),
                 atrous.upsample_bilinear(x.astype(np.float64), (oh, ow), backend="numpy", **kw),
                 dtype)
