"""upsample_bilinear on every backend, layout and dtype against the float64 reference."""

from __future__ import annotations

import pytest
from support import LAYOUTS, as_float64, assert_close, backend_dtypes, on_backend, seeded

import atrous
from atrous.core.args import from_nchw
from atrous.kernels.upsample.spec import MODES

# (N, C, H, W, size, scale_factor)
GEOMETRIES = [
    (1, 4, 1, 1, (5, 7), None),  # the pooling branch: 1x1 -> feature map
    (2, 3, 5, 7, (17, 13), None),
    (1, 3, 9, 9, None, 8),  # integer scale (logits x8)
    (1, 2, 6, 5, None, 2.5),  # fractional scale
    (1, 2, 11, 9, None, (0.5, 0.7)),  # downscaling, no antialias
    (1, 2, 9, 7, (1, 4), None),  # a single output row
    (1, 5, 4, 4, (1, 1), None),
    (1, 3, 7, 7, (7, 7), None),  # identity size
]


@pytest.mark.parametrize("backend,dtype", backend_dtypes("upsample_bilinear"))
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("geometry", GEOMETRIES, ids=str)
def test_upsample_bilinear(backend, dtype, layout, mode, geometry):
    n, c, h, w, size, scale = geometry
    x = on_backend(seeded(from_nchw(n, c, h, w, layout), 4), backend, dtype)
    kwargs = dict(scale_factor=scale, coordinate_mode=mode, layout=layout)
    out = atrous.upsample_bilinear(x, size, backend=backend, **kwargs)
    ref = atrous.upsample_bilinear(as_float64(x), size, backend="numpy", **kwargs)
    assert type(out) is type(x)
    assert_close(out, ref, dtype)
