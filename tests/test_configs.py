"""Every config of every CPU Space, and a sample of every Triton Space (see below), on the
small cases, against the reference: the tuner can then never pick a wrong kernel.

The Triton Spaces are what GPU autotuners search (thousands of configs for the
convolution); under the interpreter each runs its stratified sample (every value of every
parameter), its two corners and its default (``atrous.gpucheck.cases.sample``). The compile
check compiles them for sm_80 and sm_90 (tests/test_compile_check.py). A small case with
more than LARGE output values runs only the default and the largest-tile corner of the
sample there: the interpreter's cost grows with the programs, and small tiles on it take
minutes while the other cases test the same masks."""

from __future__ import annotations

import math

import pytest
from support import DEVICE, HAS_TRITON, LAYOUTS, backend_dtypes

from atrous.autotune.validate import check
from atrous.core.args import from_nchw
from atrous.core.registry import OPS, op
from atrous.gpucheck.cases import sample
from atrous.jobs.cases import small_cases

#: Output values past which a small case runs only two Triton configs (see above).
LARGE = 16384


def _params():
    for name in OPS:
        for backend, dtype in backend_dtypes(name):
            for layout in LAYOUTS:
                yield pytest.param(name, backend, layout, dtype,
                                   id=f"{name}-{backend}-{layout}-{dtype}")


def _tile_values(config: dict) -> int:
    """Values of a config's tile: the product of its BLOCK_* sizes."""
    return math.prod(v for k, v in config.items() if k.startswith("BLOCK_"))


@pytest.mark.parametrize("name,backend,layout,dtype", _params())
def test_every_config_matches_reference(name, backend, layout, dtype):
    checked = 0
    for problem in small_cases(name, layout, dtype):
        ops = op(name)
        space = ops.space(problem, backend)
        default = ops.default_config(problem, backend)
        configs = space.configs()
        if backend == "triton":
            configs = sample(space, [default])
            if math.prod(problem.out_shape) > LARGE:
                configs = [default, max(configs, key=_tile_values)]
        for config in configs:
            result = check(problem, backend, config, device=DEVICE, seed=checked)
            assert result.ok, f"{problem.key} config {config}: {result}"
            checked += 1
    assert checked >= len(small_cases(name, layout, dtype))


@pytest.mark.skipif(not HAS_TRITON, reason="needs torch and triton")
@pytest.mark.parametrize("config", [
    # GROUP_M 8 over 11 pixel tiles (a full group and a ragged one) x 3 channel tiles
    {"BLOCK_M": 32, "BLOCK_N": 32, "BLOCK_K": 16, "SPLIT_K": 1, "num_warps": 2,
     "num_stages": 2, "GROUP_M": 8},
    # the largest blocks, with split-K and 5 stages
    {"BLOCK_M": 256, "BLOCK_N": 128, "BLOCK_K": 16, "SPLIT_K": 2, "num_warps": 8,
     "num_stages": 5, "GROUP_M": 1},
], ids=["group_m", "big_blocks"])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_triton_conv_swizzle_and_big_blocks(config, layout):
    """What the small cases' Spaces leave out (their blocks stop at the problem's size):
    the GROUP_M program order and 256-pixel blocks, on an 18 x 18 map with 70 channels."""
    from atrous.kernels.conv.spec import make_problem, triton_space

    problem = make_problem(from_nchw(1, 64, 18, 18, layout), (70, 64, 3, 3), (70,),
                           "float32", padding="same", dilation=2, activation="relu",
                           layout=layout)
    assert triton_space(problem).allows(config)
    result = check(problem, "triton", config, device=DEVICE, seed=7)
    assert result.ok, f"{problem.key} config {config}: {result}"
