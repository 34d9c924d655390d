"""The measurement protocol with scripted samplers: calibration, samples, early stopping,
interleaved re-timing, cold-cache rotation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from atrous.autotune.candidate import Call, buffer_sets, copies_for, memory_bound
from atrous.autotune.timing import CpuSampler, Plan, Timing, interleaved, measure, measure_call
from atrous.jobs.suite import default_suite, smoke_suite


class Scripted:
    """A sampler returning per-call times from a script; records (run, calls) asked."""

    policy = "scripted-v1"

    def __init__(self, per_call):
        self.per_call = per_call  # run -> seconds per call
        self.asked: list[tuple[object, int]] = []

    def __call__(self, run, calls):
        self.asked.append((run, calls))
        return self.per_call(run)


def test_fast_calls_are_batched_into_long_samples():
    s = Scripted(lambda run: 1e-5)
    t = measure_call("f", s, Plan(samples=5, min_sample_time=0.02, warmup=0))
    calls = [c for _, c in s.asked]
    assert calls[0] == 1 and set(calls[1:]) == {2000}  # calibration, then 0.02 s / 1e-5 s
    assert t.samples == 5 and t.calls_per_sample == 2000
    assert t.median == pytest.approx(1e-5) and t.policy == "scripted-v1" and not t.pruned


def test_slow_calls_count_the_calibration_call_as_a_sample():
    s = Scripted(lambda run: 0.5)
    t = measure_call("f", s, Plan(samples=7, min_samples=3, max_time=0.0, warmup=0))
    assert len(s.asked) == 3 and t.samples == 3 and t.calls_per_sample == 1


def test_a_candidate_far_slower_than_the_best_stops_after_its_first_sample():
    s = Scripted(lambda run: 3e-3)
    t = measure_call("f", s, Plan(samples=7, prune_ratio=1.5, warmup=0, min_sample_time=1e-3),
                     best=1e-3)
    assert t.pruned and t.samples == 1 and len(s.asked) == 1


def test_a_close_candidate_is_timed_in_full():
    s = Scripted(lambda run: 1.2e-3)
    t = measure_call("f", s, Plan(samples=5, prune_ratio=1.5, warmup=0, min_sample_time=1e-3),
                     best=1e-3)
    assert not t.pruned and t.samples == 5


def test_percentiles_and_spread():
    t = Timing.of([1.0, 2.0, 3.0, 4.0, 5.0])
    assert (t.p20, t.median, t.p80) == pytest.approx((1.8, 3.0, 4.2))
    assert t.spread == pytest.approx(0.8)
    with pytest.raises(ValueError):
        Timing.of([])


def test_plan_checks_its_numbers():
    with pytest.raises(ValueError, match="min_samples"):
        Plan(samples=2, min_samples=3)
    with pytest.raises(ValueError, match="prune_ratio"):
        Plan(prune_ratio=0.9)


def test_interleaved_alternates_candidates():
    s = Scripted(lambda run: {"A": 1.0, "B": 2.0}[run])
    timings = interleaved(["A", "B"], s, [1, 1], rounds=3)
    assert [r for r, _ in s.asked] == ["A", "B"] * 3
    assert [t.median for t in timings] == [1.0, 2.0]


def test_measure_times_a_real_function_and_reports_the_first_call():
    calls = []
    t = measure(lambda: calls.append(1), samples=3, min_sample_time=1e-3, max_time=0.5)
    assert t.samples == 3 and t.median > 0 and math.isfinite(t.first_call)
    assert t.policy == CpuSampler().policy


def test_memory_bound_ops_are_the_pooling_and_upsampling():
    kinds = {e.problem.op: memory_bound(e.problem) for e in default_suite()}
    assert kinds == {"global_avg_pool": True, "upsample_bilinear": True,
                     "dilated_conv2d": False}


def test_cold_rotation_moves_more_than_twice_the_llc():
    gap = default_suite()[0].problem  # 2048x33x33 float32, ~8.9 MB
    llc = 32 * 1024**2
    n = copies_for(gap, llc)
    assert (n - 1) * gap.bytes > 2 * llc and n <= 64
    assert copies_for(default_suite(batches=(4,))[-1].problem, llc) <= 3  # big enough alone


def test_call_rotates_through_buffer_sets(monkeypatch):
    problem = smoke_suite()[0].problem  # GAP
    x = np.random.default_rng(0).standard_normal(problem.in_shape).astype(problem.dtype)
    sets = buffer_sets(problem, "numba", {"x": x}, copies=3)
    assert sets[0][1][0] is x and not np.shares_memory(sets[1][1][0], x)
    seen = []
    from atrous.kernels.gap import numba_cpu

    monkeypatch.setattr(numba_cpu, "launch", lambda p, cfg, out, x: seen.append(id(out)))
    call = Call(problem, "numba", {"ROWS": 1, "SPLIT": 1, "threads": 1}, sets)
    for _ in range(4):
        call()
    assert seen == [id(sets[i][0]) for i in (0, 1, 2, 0)]
