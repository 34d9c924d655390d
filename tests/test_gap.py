"""global_avg_pool on every backend, layout and dtype against the float64 reference."""

from __future__ import annotations

import pytest
from support import LAYOUTS, as_float64, assert_close, backend_dtypes, on_backend, seeded

import atrous
from atrous.core.args import from_nchw

SHAPES = [  # (N, C, H, W): single pixel, odd sizes, sizes that fill no block
    (1, 1, 1, 1), (2, 3, 7, 5), (1, 65, 33, 33), (3, 70, 2, 9), (1, 2, 65, 65), (2, 257, 1, 7),
]


@pytest.mark.parametrize("backend,dtype", backend_dtypes("global_avg_pool"))
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("keepdims", [False, True])
def test_global_avg_pool(backend, dtype, layout, shape, keepdims):
    x = on_backend(seeded(from_nchw(*shape, layout), seed=sum(shape)), backend, dtype)
    out = atrous.global_avg_pool(x, layout=layout, keepdims=keepdims, backend=backend)
    ref = atrous.global_avg_pool(as_float64(x), layout=layout, keepdims=keepdims,
                                 backend="numpy")
    assert type(out) is type(x)
    assert_close(out, ref, dtype)
