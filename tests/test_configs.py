"""Every config of every Space, on the small cases, against the reference: the tuner can
then never pick a wrong kernel."""

from __future__ import annotations

import pytest
from support import DEVICE, LAYOUTS, backend_dtypes

from atrous.autotune.validate import check
from atrous.core.registry import OPS, op
from atrous.jobs.cases import small_cases


def _params():
    for name in OPS:
        for backend, dtype in backend_dtypes(name):
            for layout in LAYOUTS:
                yield pytest.param(name, backend, layout, dtype,
                                   id=f"{name}-{backend}-{layout}-{dtype}")


@pytest.mark.parametrize("name,backend,layout,dtype", _params())
def test_every_config_matches_reference(name, backend, layout, dtype):
    checked = 0
    for problem in small_cases(name, layout, dtype):
        for config in op(name).space(problem, backend).configs():
            result = check(problem, backend, config, device=DEVICE, seed=checked)
            assert result.ok, f"{problem.key} config {config}: {result}"
            checked += 1
    assert checked >= len(small_cases(name, layout, dtype))
