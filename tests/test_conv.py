"""dilated_conv2d on every backend, layout and dtype against the float64 reference."""

from __future__ import annotations

import pytest
from support import LAYOUTS, as_float64, assert_close, backend_dtypes, on_backend, seeded

import atrous
from atrous.core.args import from_nchw

# (N, Cin, H, W, Cout, k, keyword arguments)
CASES = [
    (1, 4, 9, 9, 8, 3, dict(padding="same", dilation=1)),
    (1, 4, 9, 9, 8, 3, dict(padding="same", dilation=2, activation="relu")),
    (2, 3, 13, 11, 5, 3, dict(padding="same", dilation=6)),
    (1, 5, 13, 13, 7, 3, dict(padding=12, dilation=12)),
    (1, 3, 7, 7, 4, 3, dict(padding="same", dilation=18)),  # dilation larger than the image
    (1, 6, 33, 33, 4, 3, dict(padding=6, dilation=6, bias=False)),
    (1, 2, 1, 1, 3, 3, dict(padding="same", dilation=12)),  # a single pixel
    (2, 4, 9, 8, 6, 3, dict(stride=2, padding=1)),
    (1, 4, 10, 7, 4, 3, dict(stride=(2, 3), padding=(2, 0), dilation=(2, 1))),
    (1, 4, 8, 8, 6, 3, dict(groups=2, padding=2, dilation=2, activation="relu")),
    (1, 8, 7, 9, 8, 3, dict(groups=8, padding="same", dilation=3)),  # depthwise
    (1, 6, 9, 9, 5, 3, dict(padding="valid", dilation=2)),
    (2, 9, 5, 4, 10, 1, dict()),  # the 1x1 branch
    (1, 3, 6, 6, 4, 2, dict(padding="same", dilation=3)),  # even kernel: asymmetric "same"
]


@pytest.mark.parametrize("backend,dtype", backend_dtypes("dilated_conv2d"))
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(map(str, c[:6])) + str(c[6]))
def test_dilated_conv2d(backend, dtype, layout, case):
    n, cin, h, w, cout, k, kwargs = case
    kwargs = dict(kwargs)
    groups = kwargs.get("groups", 1)
    x = on_backend(seeded(from_nchw(n, cin, h, w, layout), 1), backend, dtype)
    weight = on_backend(seeded((cout, cin // groups, k, k), 2), backend, dtype)
    bias = on_backend(seeded((cout,), 3), backend, dtype) if kwargs.pop("bias", True) else None
    out = atrous.dilated_conv2d(x, weight, bias, layout=layout, backend=backend, **kwargs)
    ref = atrous.dilated_conv2d(as_float64(x), as_float64(weight), as_float64(bias),
                                layout=layout, backend="numpy", **kwargs)
    assert type(out) is type(x)
    assert_close(out, ref, dtype)
