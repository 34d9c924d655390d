"""The measurement protocol: how one kernel call is timed, on the CPU and on a GPU.

A *sampler* times ``calls`` back-to-back calls of a zero-argument function and returns
seconds per call: :class:`CpuSampler` with ``time.perf_counter``, :class:`CudaSampler` with
CUDA events around each call and the L2 cache flushed before it. :func:`measure_call` puts
a :class:`Plan` on top: warm-up calls (which absorb JIT compilation, so compile time is
never run time), calls per sample calibrated so a sample outlasts timer noise, repeated
samples, the median with the 20th and 80th percentiles, and early stopping of a candidate
whose first samples are already far slower than the best so far. :func:`interleaved`
re-times finalists in turns (A B C A B C), so a slow phase of a shared machine hurts all
of them alike.

Cold-cache timing (inputs rotated through more memory than the last-level cache) is done
by the function being timed: it cycles through several copies of its buffers. Every
result carries the name of the policy that produced it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

POLICY = "cpu-warm-median-v1"
CPU_COLD = "cpu-cold-rotate-v1"
CUDA = "cuda-events-l2flush-v1"


@dataclass(frozen=True)
class Timing:
    """Seconds per call: median, 20th and 80th percentiles, and how it was measured.

    ``pruned`` marks a measurement stopped early because it was far slower than the best.
    """

    median: float
    p20: float
    p80: float
    samples: int
    calls_per_sample: int
    first_call: float  # includes compilation: reported, never counted as run time
    policy: str = POLICY
    times: tuple[float, ...] = ()
    pruned: bool = False

    @classmethod
    def of(cls, times: Sequence[float], *, calls: int = 1, first_call: float = math.nan,
           policy: str = POLICY, pruned: bool = False) -> Timing:
        """The Timing of per-call sample ``times`` (at least one)."""
        if not times:
            raise ValueError("a Timing needs at least one sample")
        p20, med, p80 = np.percentile(np.asarray(times, dtype=float), [20, 50, 80])
        return cls(float(med), float(p20), float(p80), len(times), calls, first_call, policy,
                   tuple(float(t) for t in times), pruned)

    @property
    def spread(self) -> float:
        """(p80 - p20) / median: the relative noise of the samples."""
        return (self.p80 - self.p20) / self.median if self.median > 0 else 0.0


class Sampler(Protocol):
    """Times ``calls`` calls of ``run`` and returns seconds per call."""

    policy: str

    def __call__(self, run: Callable[[], Any], calls: int) -> float: ...


class CpuSampler:
    """Wall-clock time of back-to-back calls (``time.perf_counter``)."""

    def __init__(self, policy: str = POLICY) -> None:
        self.policy = policy

    def __call__(self, run: Callable[[], Any], calls: int) -> float:
        t0 = time.perf_counter()
        for _ in range(calls):
            run()
        return (time.perf_counter() - t0) / calls


class CudaSampler:
    """GPU time of each call between two CUDA events, with the L2 cache flushed (a buffer
    twice its size overwritten) before every call, so no call reads the last one's data.

    Args:
        device: the CUDA device the kernels run on ("cuda" or "cuda:N").
    """

    policy = CUDA

    def __init__(self, device: str = "cuda") -> None:
        import torch

        self._torch = torch
        l2 = getattr(torch.cuda.get_device_properties(torch.device(device)), "L2_cache_size", 0)
        self._flush = torch.empty(2 * (l2 or 64 * 1024**2), dtype=torch.int8, device=device)

    def __call__(self, run: Callable[[], Any], calls: int) -> float:
        torch = self._torch
        events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
                  for _ in range(calls)]
        for start, end in events:
            self._flush.zero_()
            start.record()
            run()
            end.record()
        torch.cuda.synchronize()
        return sum(s.elapsed_time(e) for s, e in events) / calls / 1e3


@dataclass(frozen=True)
class Plan:
    """How many calls and samples a measurement takes.

    Args:
        samples: samples to take at most.
        min_samples: samples always taken (unless pruned).
        min_sample_time: seconds a sample lasts at least (calls are repeated to get there).
        max_time: seconds after which no new sample starts (once ``min_samples`` are in).
        warmup: untimed calls first (they absorb compilation and first-touch costs).
        prune_ratio: stop when even the fastest sample so far is this many times slower
            than the best median so far; None never stops early.
    """

    samples: int = 7
    min_samples: int = 3
    min_sample_time: float = 0.02
    max_time: float = 10.0
    warmup: int = 1
    prune_ratio: float | None = 1.5

    def __post_init__(self) -> None:
        if not 1 <= self.min_samples <= self.samples:
            raise ValueError(f"need 1 <= min_samples <= samples, got {self.min_samples},"
                             f" {self.samples}")
        if self.prune_ratio is not None and self.prune_ratio <= 1:
            raise ValueError(f"prune_ratio must be > 1, got {self.prune_ratio}")


def measure_call(run: Callable[[], Any], sampler: Sampler, plan: Plan = Plan(), *,
                 best: float | None = None, first_call: float = math.nan) -> Timing:
    """Time ``run`` with ``sampler`` following ``plan``.

    Args:
        run: one call of the kernel (it may rotate through buffers itself).
        sampler: CPU or CUDA timer (or a deterministic one in tests).
        plan: warm-up, samples and early stopping.
        best: the best median so far, for early stopping; None disables it.
        first_call: seconds of a first call made before (e.g. the validation run), reported
            as ``first_call`` when ``plan.warmup`` is 0.
    """
    for i in range(plan.warmup):
        t0 = time.perf_counter()
        run()
        if i == 0:
            first_call = time.perf_counter() - t0
    once = max(sampler(run, 1), 1e-9)
    times: list[float] = []
    calls = 1
    if once >= plan.min_sample_time:
        times.append(once)  # a single call is a long enough sample
    else:
        calls = math.ceil(plan.min_sample_time / once)

    def far_slower() -> bool:
        return (best is not None and plan.prune_ratio is not None
                and min(times) > plan.prune_ratio * best)

    start = time.perf_counter()
    while not (times and far_slower()) and len(times) < plan.samples and (
            len(times) < plan.min_samples or time.perf_counter() - start < plan.max_time):
        times.append(sampler(run, calls))
    return Timing.of(times, calls=calls, first_call=first_call, policy=sampler.policy,
                     pruned=far_slower())


def interleaved(runs: Sequence[Callable[[], Any]], sampler: Sampler, calls: Sequence[int], *,
                rounds: int = 5, min_rounds: int = 2, max_time: float = math.inf) -> list[Timing]:
    """Re-time ``runs`` in turns, one sample each per round (A B A B ...), so that slow
    phases of a shared machine hit every candidate alike; one Timing per run.

    Stops after ``rounds`` rounds, or after ``min_rounds`` once ``max_time`` seconds passed.
    """
    times: list[list[float]] = [[] for _ in runs]
    start = time.perf_counter()
    for r in range(rounds):
        if r >= min_rounds and time.perf_counter() - start > max_time:
            break
        for i, run in enumerate(runs):
            times[i].append(sampler(run, calls[i]))
    return [Timing.of(t, calls=c, policy=sampler.policy) for t, c in zip(times, calls, strict=True)]


def measure(fn: Callable[[], object], *, samples: int = 7, min_sample_time: float = 0.02,
            max_time: float = 10.0) -> Timing:
    """Time ``fn`` on the CPU after one warm-up call, in ``samples`` samples of at least
    ``min_sample_time`` seconds each, stopping early (with at least 3 samples) past
    ``max_time`` seconds. Used by `atrous bench` and the tuner's PyTorch comparison."""
    plan = Plan(samples=samples, min_samples=min(3, samples), min_sample_time=min_sample_time,
                max_time=max_time, warmup=1, prune_ratio=None)
    return measure_call(fn, CpuSampler(), plan)
