"""Checks only a real GPU can make: bfloat16 convolution (the Triton interpreter's tl.dot
is wrong on bfloat16 operands) and TF32, which the interpreter computes in full float32."""

from __future__ import annotations

import pytest
from conftest import CUDA
from support import LAYOUTS

from atrous.autotune.validate import check
from atrous.gpucheck.cases import sample
from atrous.jobs.cases import small_cases
from atrous.kernels.conv.spec import default_config, triton_space

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU (bfloat16 tl.dot)")]


@pytest.mark.parametrize("layout", LAYOUTS)
def test_bfloat16_convolution_sampled_configs(layout):
    for problem in small_cases("dilated_conv2d", layout, "bfloat16"):
        for config in sample(triton_space(problem), [default_config(problem, "triton")]):
            result = check(problem, "triton", config, device="cuda")
            assert result.ok, f"{problem.key} {config}: {result}"


@pytest.mark.parametrize("layout", LAYOUTS)
def test_tf32_convolution(layout):
    import dataclasses

    for problem in small_cases("dilated_conv2d", layout, "float32"):
        tf32 = dataclasses.replace(problem, allow_tf32=True)
        result = check(tf32, "triton", device="cuda")
        assert result.ok, f"{tf32.key}: {result}"
