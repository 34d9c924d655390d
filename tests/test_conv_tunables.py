"""The CPU convolution's tunables: every variant's own keys (held fixed in the others'
configs), the defaults unchanged, every value reachable by the small cases (so the
every-config check of test_configs covers it), and a Winograd size with several tilings
checked config by config against the float64 reference."""

from __future__ import annotations

import numpy as np
import pytest

from atrous.autotune.validate import Checker
from atrous.jobs.cases import small_cases
from atrous.kernels.conv import spec, winograd_cpu
from atrous.kernels.conv.spec import VARIANT_KEYS, make_problem, numba_space


def _aspp(layout: str = "NCHW", n: int = 1, h: int = 33, rate: int = 6):
    x = (n, 2048, h, h) if layout == "NCHW" else (n, h, h, 2048)
    return make_problem(x, (256, 2048, 3, 3), None, "float32", padding="same", dilation=rate,
                        layout=layout)


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_no_two_configs_differ_only_in_keys_their_variant_ignores(layout):
    cases = small_cases("dilated_conv2d", layout, "float32")
    for problem in [_aspp(layout), _aspp(layout, n=4, h=65, rate=36), *cases]:
        seen = set()
        for config in numba_space(problem):
            own = VARIANT_KEYS[config["variant"]]
            for variant, keys in VARIANT_KEYS.items():
                if variant != config["variant"]:
                    assert all(config[k] == v for k, v in keys.items()), config
            read = (config["variant"], config["threads"], *(config[k] for k in own))
            assert read not in seen, f"duplicate config {config}"
            seen.add(read)


def test_defaults_keep_todays_choices():
    p = _aspp()
    default = spec.default_config(p, "numba")
    assert default["variant"] == "winograd"
    assert {k: default[k] for k in VARIANT_KEYS["winograd"]} == {
        "WINO_TILE": 3, "WINO_PARTS": 2, "WINO_BANDS": 2, "WINO_ORDER": "rows"}
    gemm = spec.complete_config(p, "numba", {"variant": "gemm"})
    assert (gemm["GEMM_BANDS"], gemm["GEMM_SPLIT"], gemm["GEMM_MERGE"]) == (1, 1, 1)
    assert numba_space(p).allows(default) and numba_space(p).allows(gemm)
    assert winograd_cpu.Schedule() == winograd_cpu.Schedule(3, 2, 2, False, None)


def test_partial_configs_complete_to_their_variant():
    p = _aspp("NHWC", n=4)
    assert spec.complete_config(p, "numba", {"WINO_TILE": 4})["variant"] == "winograd"
    assert spec.complete_config(p, "numba", {"GEMM_SPLIT": 2})["variant"] == "gemm"
    assert spec.complete_config(p, "numba", {"BLOCK_OW": 3})["variant"] == "tile"
    old = {"variant": "winograd", "BLOCK_CO": 4, "BLOCK_OW": 4, "threads": 2}  # a v1 record
    assert numba_space(p).allows(spec.complete_config(p, "numba", old))


def test_the_aspp_spaces_hold_what_other_machines_would_want():
    space = numba_space(_aspp("NHWC", n=4))
    assert space.params["WINO_TILE"] == (2, 3, 4)  # 33x33 at rate 6: three tilings
    assert numba_space(_aspp(h=33, rate=18)).params["WINO_TILE"] == (3,)  # lines of <= 3
    assert space.params["GEMM_BANDS"] == (1, 2, 4, 8) and space.params["GEMM_SPLIT"] == (1, 2, 4)
    variants = {c["variant"] for c in space}
    assert variants == {"tile", "gemm", "winograd"}
    merged = {c["GEMM_MERGE"] for c in space if c["variant"] == "gemm"}
    assert merged == {0, 1}  # NHWC batch 4: the whole-image merge is a choice
    assert {c["GEMM_MERGE"] for c in numba_space(_aspp("NCHW", n=4))} == {1}


def test_small_cases_reach_every_value_of_every_key():
    """test_configs runs every config of the small cases: together they must use every
    value each key can take on the default suite's problems."""
    wanted: dict[str, set] = {}
    for layout in ("NCHW", "NHWC"):
        for p in (_aspp(layout, n=4), _aspp(layout, n=4, h=65, rate=12)):
            for k, values in numba_space(p).params.items():
                wanted.setdefault(k, set()).update(values)
    reached: dict[str, set] = {}
    for layout in ("NCHW", "NHWC"):
        for p in small_cases("dilated_conv2d", layout, "float32"):
            for config in numba_space(p):
                for k, v in config.items():
                    reached.setdefault(k, set()).add(v)
    for k, values in wanted.items():
        assert values <= reached[k], f"{k}: {sorted(values - reached[k], key=str)} unchecked"


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_winograd_and_gemm_schedules_match_the_reference(layout):
    """A map where F(2,3), F(3,3) and F(4,3) tile differently, batch 2, bias and ReLU:
    every Winograd and gemm config (NaN-poisoned outputs) against float64."""
    shape = (2, 6, 11, 9) if layout == "NCHW" else (2, 11, 9, 6)
    p = make_problem(shape, (10, 6, 3, 3), (10,), "float32", padding="same", dilation=2,
                     activation="relu", layout=layout)
    assert numba_space(p).params["WINO_TILE"] == (2, 3, 4)
    checker = Checker(p, "numba", seed=5)
    configs = [c for c in numba_space(p) if c["variant"] != "tile"]
    assert len(configs) > 100
    for config in configs:
        result = checker.check(config)
        assert result.ok, f"{config}: {result}"


def test_f43_is_a_correct_correlation():
    at, g, bt = winograd_cpu.toom_cook(4)
    rng = np.random.default_rng(3)
    x, k = rng.standard_normal(6), rng.standard_normal(3)
    want = [x[i:i + 3] @ k for i in range(4)]
    np.testing.assert_allclose(at @ ((g @ k) * (bt @ x)), want, rtol=1e-12, atol=1e-12)
