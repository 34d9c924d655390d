"""tune_problem with deterministic timers: the validation gate, the reference computed once,
resuming from the trial log, keeping the default within noise, and the Triton path (under
the interpreter on machines without a GPU)."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
from conftest import CUDA

import atrous
from atrous.autotune import lookup
from atrous.autotune.database import Database
from atrous.autotune.search import FAILED, Budget
from atrous.autotune.tuner import Settings, TuningError, tune_problem
from atrous.kernels.gap import numba_cpu
from atrous.kernels.gap import reference as gap_reference
from atrous.kernels.gap.spec import default_config
from atrous.kernels.gap.spec import make_problem as gap_problem

PROBLEM = gap_problem((2, 8, 5, 5), "float64")  # NCHW: ROWS x SPLIT x threads
DEFAULT = default_config(PROBLEM, "numba")


class TableTimer:
    """A deterministic sampler: seconds per call from the candidate's config."""

    policy = "test-table-v1"

    def __init__(self, seconds):
        self.seconds = seconds

    def __call__(self, run, calls):
        return self.seconds(run.config)


def fastest_rows_16(config) -> float:
    return 1e-3 * {16: 1.0, 4: 2.0, 1: 3.0}[config["ROWS"]] * (1.5 if config["SPLIT"] > 1
                                                               else 1.0)


@pytest.fixture
def db(tmp_path):
    return Database(tmp_path / "tuning.json")


def settings(**kw) -> Settings:
    return Settings(**{"strategy": "exhaustive", "budget": Budget(), **kw})


def test_the_gate_rejects_wrong_and_crashing_candidates(db, monkeypatch):
    real = numba_cpu.launch

    def broken(problem, config, out, x):
        if config["ROWS"] == 4 and config["threads"] == 1:
            raise RuntimeError("out of resources")
        real(problem, config, out, x)
        if config["ROWS"] == 16:
            out[0] += 1e-3  # deliberately wrong: the fastest candidate in the table

    refs = []
    monkeypatch.setattr(numba_cpu, "launch", broken)
    monkeypatch.setattr(gap_reference, "reference",
                        lambda *a: refs.append(1) or real_reference(*a))
    out = tune_problem(PROBLEM, settings=settings(), database=db,
                       sampler=TableTimer(fastest_rows_16))
    failed = {(t.config["ROWS"], t.config["threads"]): t.reason
              for t in out.trials if t.status == FAILED}
    assert all("FAIL: rel error" in failed[16, th] for th in (1, 2))
    assert failed[4, 1] == "RuntimeError: out of resources"
    assert out.record.config["ROWS"] == 4 and out.record.config["threads"] == 2
    assert out.record.failed == 3 and out.record.validation_error < 1e-12
    assert len(refs) == 1, "the float64 reference is computed once per problem"


real_reference = gap_reference.reference


def test_no_valid_config_is_an_error(db, monkeypatch):
    monkeypatch.setattr(numba_cpu, "launch", lambda problem, config, out, x: None)
    with pytest.raises(TuningError, match="no config passed the validation gate"):
        tune_problem(PROBLEM, settings=settings(), database=db,
                     sampler=TableTimer(fastest_rows_16))
    assert db.read().records() == []


def test_an_interrupted_tuning_resumes_from_the_trial_log(db, monkeypatch):
    real = numba_cpu.launch
    gated = []

    def counting(problem, config, out, x):
        if np.isnan(out).all():  # a validation run (the gate poisons its output)
            gated.append((config["ROWS"], config["SPLIT"], config["threads"]))
        real(problem, config, out, x)

    monkeypatch.setattr(numba_cpu, "launch", counting)
    seen = []

    def interrupt(problem, trial):
        seen.append(trial)
        if len(seen) == 3:
            raise KeyboardInterrupt

    timer = TableTimer(fastest_rows_16)
    with pytest.raises(KeyboardInterrupt):
        tune_problem(PROBLEM, settings=settings(), database=db, sampler=timer, on_trial=interrupt)
    first = set(gated)
    gated.clear()
    out = tune_problem(PROBLEM, settings=settings(), database=db, sampler=timer)
    assert out.resumed == 3
    default = atrous.core.registry.op(PROBLEM.op).spec.default_config(PROBLEM, "numba")
    # replayed candidates are not measured again; only one that could win (here the
    # default, always a finalist) passes the validation gate again
    assert first & set(gated) <= {(default["ROWS"], default["SPLIT"], default["threads"])}
    assert len(out.trials) == len(atrous.core.registry.op(PROBLEM.op).spec.space(PROBLEM, "numba"))
    again = tune_problem(PROBLEM, settings=settings(), database=db, sampler=timer)
    assert again.resumed == 0, "a finished run is not resumed"


def test_a_winner_within_noise_keeps_the_default(db):
    def barely(config):
        return 1e-3 * (0.99 if config != DEFAULT else 1.0) * (1 + 0.2 * (config["SPLIT"] > 1))

    out = tune_problem(PROBLEM, settings=settings(noise=0.03), database=db,
                       sampler=TableTimer(barely))
    assert out.kept_default and out.record.config == DEFAULT
    assert out.record.speedup == pytest.approx(1.0)
    clear = tune_problem(PROBLEM, settings=settings(noise=0.005), database=db,
                         sampler=TableTimer(barely))
    assert not clear.kept_default and clear.record.speedup > 1.005


def test_the_record_carries_its_evidence(db):
    out = tune_problem(PROBLEM, settings=settings(), database=db,
                       sampler=TableTimer(fastest_rows_16))
    r = out.record
    assert r.config["ROWS"] == 16 and r.speedup == pytest.approx(3.0)
    assert r.policy == "test-table-v1" and r.strategy == "exhaustive"
    assert r.trials == len(out.trials) and r.runner_up_gap == pytest.approx(0.0)
    assert r.source_hash == lookup.source_hash(PROBLEM.op, "numba")
    assert db.read().records()[0][1] == r


def test_auto_picks_exhaustive_when_the_space_fits_and_local_search_otherwise(db):
    out = tune_problem(PROBLEM, settings=Settings(budget=Budget(max_seconds=60)), database=db,
                       sampler=TableTimer(fastest_rows_16))
    assert out.record.strategy == "exhaustive"
    out = tune_problem(PROBLEM, settings=Settings(budget=Budget(max_trials=4)), database=db,
                       sampler=TableTimer(fastest_rows_16))
    assert out.record.strategy == "local" and out.record.trials <= 4


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton not installed")
def test_triton_tuning_path(db):
    """Triton kernels validated for real (on the GPU, or the interpreter elsewhere), timed
    by a deterministic timer; the winner is what a Triton call then runs."""
    import torch

    device = "cuda" if CUDA else "cpu"
    problem = gap_problem((1, 4, 4, 40), "float32", layout="NHWC")
    space = atrous.core.registry.op(problem.op).space(problem, "triton")

    def timer(config) -> float:  # BLOCK_C 32, BLOCK_HW 32, SPLIT 8, 2 warps is fastest
        return 1e-5 * (1 + (config["BLOCK_C"] != 32) + (config["BLOCK_HW"] != 32)
                       + (config["SPLIT"] != 8) + (config["num_warps"] != 2) * 0.5)

    out = tune_problem(problem, "triton", device=device, settings=settings(), database=db,
                       sampler=TableTimer(timer))
    best = {"BLOCK_C": 32, "BLOCK_HW": 32, "SPLIT": 8, "num_warps": 2}
    assert out.record.config == best and len(out.trials) == len(space)
    assert not [t.reason for t in out.trials if t.status == FAILED]

    saved = (lookup._settings.path, lookup._settings.enabled)
    try:
        atrous.use_tuning(db.path)
        x = torch.from_numpy(np.random.default_rng(0).standard_normal((1, 4, 4, 40))).float()
        x = x.to(device)
        e = atrous.explain("global_avg_pool", x, layout="NHWC", backend="triton")
        assert (e.source, e.config, e.backend) == ("exact", best, "triton")
        y = atrous.global_avg_pool(x, layout="NHWC", backend="triton")
        np.testing.assert_allclose(y.cpu().numpy(), x.cpu().numpy().mean((1, 2)), rtol=1e-5)
    finally:
        lookup._settings.path, lookup._settings.enabled = saved


def test_each_variant_default_is_measured_before_the_search(db):
    from atrous.kernels.conv.spec import cpu_variants
    from atrous.kernels.conv.spec import make_problem as conv_problem

    p = conv_problem((1, 8, 7, 7), (4, 8, 3, 3), None, "float32", padding="same", dilation=2)
    seen = []
    # Winograd fastest, but with two trials' budget only the seeding can find it.
    timer = TableTimer(lambda c: 1e-3 * {"tile": 3, "gemm": 2, "winograd": 1}[c["variant"]])
    out = tune_problem(p, "numba", settings=settings(strategy="random", budget=Budget(
        max_trials=len(cpu_variants(p)))), database=db, sampler=timer,
        on_trial=lambda _, t: seen.append(t.config["variant"]))
    assert set(seen) == set(cpu_variants(p)) == {"tile", "gemm", "winograd"}
    assert out.record.config["variant"] == "winograd"
