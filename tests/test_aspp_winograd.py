"""The Winograd tiles of the CPU ASPP engine: the transforms, the tilings and their counts,
and dilated convolutions through them against the float64 reference."""

from __future__ import annotations

import numpy as np
import pytest
from support import assert_close, seeded

import atrous
from atrous.deeplab import cpu
from atrous.kernels.conv import winograd_cpu as winograd


@pytest.mark.parametrize("m", [2, 3])
def test_toom_cook_computes_a_correlation(m):
    at, g, bt = winograd.toom_cook(m)
    x, w = seeded((m + 2,), 1), seeded((3,), 2)
    want = np.array([x[i:i + 3] @ w for i in range(m)])
    np.testing.assert_allclose(at @ ((g @ w) * (bt @ x)), want, rtol=1e-13, atol=1e-13)


def test_line_tilings_need_fewest_products():
    assert winograd.line_tiling(1, 3) == [1]
    assert winograd.line_tiling(2, 3) == [2]  # PAIR: 3 products instead of 2 + 2
    assert winograd.line_tiling(2, 1) == [1, 1]  # max_tile 1: direct taps only
    assert winograd.line_tiling(3, 3) == [3]  # F(3,3): 5 products instead of 2 + 3 + 2
    assert sorted(winograd.line_tiling(6, 3)) == [3, 3]
    assert winograd.line_tiling(6, 1) == [1] * 6


def test_pair_computes_a_two_output_line():
    """A line of two outputs whose outer taps read padding: y0 = x0 g1 + x1 g2,
    y1 = x0 g0 + x1 g1, from the three PAIR products."""
    x, g = seeded((2,), 1), seeded((3,), 2)
    y = np.zeros(2)
    for row, ins, outs in winograd.PAIR:
        y += np.array(outs) * (np.array(row) @ g) * (np.array(ins) @ x)
    np.testing.assert_allclose(y, [x[0] * g[1] + x[1] * g[2], x[0] * g[0] + x[1] * g[1]],
                               rtol=1e-14)


@pytest.mark.parametrize("length,rate,direct,tiled", [
    (33, 6, 87, 57), (33, 12, 75, 54), (33, 18, 63, 48),
    (65, 12, 171, 113), (65, 24, 147, 106), (65, 36, 123, 94)])
def test_products_per_axis_at_aspp_shapes(length, rate, direct, tiled):
    """Direct taps with padding skipped do 3n - 2 products per line of n outputs; a line of
    two does 3 with PAIR (rate 18 on 33: 15 such lines and 3 single outputs)."""
    assert winograd.direct_products(length, rate) == direct
    assert winograd.axis_plan(length, rate, 3).products == tiled


def test_engine_uses_winograd_where_it_pays():
    for size, rates in ((33, (6, 12, 18)), (65, (12, 24, 36))):
        assert all(cpu.winograd_axes(size, size, r) is not None for r in rates)
    assert cpu.winograd_axes(33, 33, 40) is None  # only centre taps: nothing to save
    assert cpu.winograd_axes(33, 33, 1) is not None


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("h,w,rate,max_tile", [
    (11, 9, 2, 3), (13, 13, 3, 2), (17, 12, 4, 3), (9, 9, 4, 3), (7, 10, 1, 3),
    (9, 7, 5, 3), (8, 13, 6, 2)])  # the last two: lines of two outputs (PAIR)
def test_branch_matches_the_reference_conv(dtype, h, w, rate, max_tile):
    x = seeded((2, h, w, 12), 3).astype(dtype)
    taps = seeded((3, 3, 12, 5), 4).astype(dtype)
    want = atrous.dilated_conv2d(x.astype(np.float64), taps.transpose(3, 2, 0, 1)
                                 .astype(np.float64), padding="same", dilation=rate,
                                 layout="NHWC", backend="numpy")
    got = np.full(want.shape, np.nan, dtype)
    winograd.branch(x, taps, winograd.axis_plan(h, rate, max_tile),
                    winograd.axis_plan(w, rate, max_tile), got, {})
    assert_close(got, want, dtype)
