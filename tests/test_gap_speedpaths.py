"""The Numba GAP's fast paths: every config's bits, NaN/Inf through every config, equal
chunks, the split epilogue, the serial path and the on-disk compile cache."""

from __future__ import annotations

import numpy as np
import pytest
from support import LAYOUTS, assert_close, assert_second_process_compiles_nothing, seeded

from atrous.core.args import from_nchw
from atrous.kernels.gap import numba_cpu
from atrous.kernels.gap.reference import reference
from atrous.kernels.gap.spec import make_problem, numba_space

# (N, C, H, W): rows shorter than a chunk, one value past a chunk, several uneven chunks
SHAPES = [(2, 3, 7, 5), (1, 4, 33, 33), (1, 3, 1, 2049), (3, 2, 65, 65)]


def _with_specials(shape, seed):
    x = seeded(shape, seed)
    flat = x.reshape(-1)
    flat[:: 97] = np.nan
    flat[5:: 89] = np.inf
    flat[50:: 89] = -np.inf  # some rows see inf and -inf: NaN, as in the reference
    return x


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_every_config_matches_the_reference_with_nan_and_inf(layout, dtype, shape):
    """Rows (NCHW) and threads never change the arithmetic: configs with the same SPLIT
    give identical bits; all match the reference, NaN and Inf positions included."""
    p = make_problem(from_nchw(*shape, layout), dtype, layout=layout)
    x = _with_specials(p.in_shape, sum(shape)).astype(dtype)
    with np.errstate(invalid="ignore"):  # inf - inf in the reference, as intended
        ref = reference(p, x.astype(np.float64))
    by_split: dict[int, np.ndarray] = {}
    for config in numba_space(p).configs():
        out = np.full(p.out_shape, 7.0, dtype)
        numba_cpu.launch(p, config, out, x)
        assert_close(out, ref, dtype)
        first = by_split.setdefault(config["SPLIT"], out)
        np.testing.assert_array_equal(out, first)


def test_split_epilogue_adds_partials_in_order():
    """The split partials get the same additions as ``ws.sum(axis=0)``, then a float64
    division (what the NumPy epilogue this replaced did)."""
    ws = np.random.default_rng(0).standard_normal((16, 300)) * 1e6
    out = np.empty(300, np.float32)
    numba_cpu._finish_split(ws, out, 1089)
    np.testing.assert_array_equal(out, (ws.sum(axis=0) / 1089).astype(np.float32))


def test_long_float32_rows_stay_accurate():
    """Chunks flushed into float64 keep a float32 sum of 100k values as accurate as the
    tolerance asks, where one float32 accumulator would drift."""
    x = (np.random.default_rng(1).random((1, 2, 1, 100_003)) + 1e3).astype(np.float32)
    p = make_problem(x.shape, "float32")
    for config in numba_space(p).configs():
        out = np.empty(p.out_shape, np.float32)
        numba_cpu.launch(p, config, out, x)
        assert_close(out, reference(p, x.astype(np.float64)), "float32")


_CHILD = """
import numpy as np
from atrous.kernels.gap import numba_cpu as k
from atrous.kernels.gap.spec import make_problem
for layout in ("NCHW", "NHWC"):
    p = make_problem((2, 3, 4, 5) if layout == "NCHW" else (2, 4, 5, 3), "float32",
                     layout=layout)
    x = np.ones(p.in_shape, np.float32)
    for threads in (1, 2):
        for split in (1, 4):
            k.launch(p, {"ROWS": 1, "SPLIT": split, "threads": threads},
                     np.empty(p.out_shape, np.float32), x)
"""


def test_kernels_load_from_the_disk_cache(tmp_path):
    """Every jitted kernel is cacheable: a second process compiles nothing (the helpers
    they call are compiled into them, so only the launched kernels are counted)."""
    kernels = {"gap_rows_serial", "gap_rows_parallel", "gap_pixels_serial",
               "gap_pixels_parallel"}
    assert_second_process_compiles_nothing(_CHILD, tmp_path, kernels)
