"""The Numba upsample's fast paths: column runs, per-problem tables, task splits that cross
planes, the serial path, NaN/Inf through every config, and the on-disk compile cache."""

from __future__ import annotations

import numpy as np
import pytest
from support import LAYOUTS, assert_close, assert_second_process_compiles_nothing, seeded

from atrous.jobs.cases import upsample_cases
from atrous.kernels.upsample import numba_cpu
from atrous.kernels.upsample.reference import reference
from atrous.kernels.upsample.spec import MODES, make_problem, numba_space, source_indices


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("size_in,size_out", [(1, 33), (33, 513), (65, 520), (9, 4), (7, 7),
                                              (5, 1)])
def test_runs_cover_every_column_once(mode, size_in, size_out):
    i0, i1, _ = source_indices(size_in, size_out, None, mode)
    starts, k0, k1 = numba_cpu.runs_of(i0, i1)
    lengths = np.diff(starts)
    assert starts[0] == 0 and starts[-1] == size_out and (lengths > 0).all()
    np.testing.assert_array_equal(np.repeat(k0, lengths), i0)
    np.testing.assert_array_equal(np.repeat(k1, lengths), i1)
    # Maximal: neighbouring runs read different input pairs.
    assert ((k0[1:] != k0[:-1]) | (k1[1:] != k1[:-1])).all()


def _with_specials(shape, seed):
    x = seeded(shape, seed)
    flat = x.reshape(-1)
    flat[:: 7] = np.nan
    flat[3:: 11] = np.inf
    flat[5:: 13] = -np.inf
    return x


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_every_config_writes_the_same_bits(layout, dtype):
    """A config only changes which task writes a row, never the arithmetic: every config
    (serial and parallel, tasks crossing planes) gives identical bits, NaN and Inf
    included, and they match the reference."""
    problems = [*upsample_cases(layout, dtype),  # and 2 * 5 planes of 7 rows: tasks end mid-plane
                make_problem((2, 5, 3, 4) if layout == "NCHW" else (2, 3, 4, 5), dtype, (7, 3),
                             layout=layout)]
    for i, p in enumerate(problems):
        x = _with_specials(p.in_shape, i).astype(dtype)
        with np.errstate(invalid="ignore"):  # inf - inf in the reference, as intended
            ref = reference(p, x.astype(np.float64))
        outs = []
        for config in numba_space(p).configs():
            out = np.full(p.out_shape, 7.0, dtype)
            numba_cpu.launch(p, config, out, x)
            outs.append(out)
        for out in outs[1:]:
            np.testing.assert_array_equal(out, outs[0])
        assert_close(outs[0], ref, dtype)


def test_tables_are_built_once_per_problem_and_dtype():
    p = make_problem((1, 3, 4, 5), "float32", (9, 11))
    t32 = numba_cpu.tables(p, np.dtype(np.float32))
    assert numba_cpu.tables(p, np.dtype(np.float32)) is t32
    t64 = numba_cpu.tables(p, np.dtype(np.float64))
    assert t64 is not t32 and t64[2].dtype == np.float64 and t32[2].dtype == np.float32
    assert not any(a.flags.writeable for a in t32)


_CHILD = """
import numpy as np
from atrous.kernels.upsample import numba_cpu as k
from atrous.kernels.upsample.spec import make_problem
for layout in ("NCHW", "NHWC"):
    p = make_problem((1, 3, 4, 5) if layout == "NCHW" else (1, 4, 5, 3), "float32", (9, 11),
                     layout=layout)
    x = np.ones(p.in_shape, np.float32)
    for threads in (1, 2):
        k.launch(p, {"SPLIT": 1, "threads": threads}, np.empty(p.out_shape, np.float32), x)
"""


def test_kernels_load_from_the_disk_cache(tmp_path):
    """Every jitted kernel is cacheable: a second process compiles nothing (the helpers
    they call are compiled into them, so only the launched kernels are counted)."""
    kernels = {"upsample_serial", "upsample_parallel"}
    assert_second_process_compiles_nothing(_CHILD, tmp_path, kernels)
