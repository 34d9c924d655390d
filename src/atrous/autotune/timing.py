"""The CPU measurement protocol: warm-up (compile excluded), samples long enough to beat the
timer's resolution, and the median with the 20th and 80th percentiles.

The autotuner issue extends this (cold-cache rotation, GPU events, interleaved re-timing);
every result carries the name of the policy that produced it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

POLICY = "cpu-warm-median-v1"


@dataclass(frozen=True)
class Timing:
    """Seconds per call: median, 20th and 80th percentiles, and how it was measured."""

    median: float
    p20: float
    p80: float
    samples: int
    calls_per_sample: int
    first_call: float  # includes compilation: reported, never counted as run time
    policy: str = POLICY


def measure(fn: Callable[[], object], *, samples: int = 7, min_sample_time: float = 0.02,
            max_time: float = 10.0) -> Timing:
    """Time ``fn`` after one warm-up call, in ``samples`` samples of at least
    ``min_sample_time`` seconds each, stopping early (with at least 3 samples) past
    ``max_time`` seconds."""
    t0 = time.perf_counter()
    fn()
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    fn()
    once = max(time.perf_counter() - t0, 1e-7)
    calls = max(1, int(np.ceil(min_sample_time / once)))
    times = []
    start = time.perf_counter()
    while len(times) < samples and (len(times) < 3 or time.perf_counter() - start < max_time):
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        times.append((time.perf_counter() - t0) / calls)
    p20, med, p80 = np.percentile(times, [20, 50, 80])
    return Timing(float(med), float(p20), float(p80), len(times), calls, first)
