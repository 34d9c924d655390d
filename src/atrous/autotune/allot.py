"""One total tuning budget split over a list of problems by their expected cost.

A problem's share grows with how long one of its calls takes (a 65x65 batch-4 convolution
runs for a few hundred milliseconds, an upsample for a few microseconds) and with how many
configs are worth measuring (its Space's size, capped: a local search from good seeds
needs a few dozen at most). Shares are recomputed before every problem from the time that
is actually left, so a problem that finishes early (a small Space measured exhaustively, a
cached result) leaves its time to the rest, and one that ran long takes it from them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from atrous.core.args import cores
from atrous.core.op import Problem

#: A rough CPU speed for the first guess of a call's time: dense-equivalent FLOP/s per core
#: (Winograd and padding skipping do fewer: ~120 per core measured on Zen 4) and bytes/s.
FLOPS_PER_CORE, BYTES_PER_S = 120e9, 10e9
#: Calls one candidate takes (validation, one timing call, about two samples); a short
#: call's candidate takes up to 7 samples of 20 ms (timing.Plan) instead; overhead, seconds.
CALLS_PER_TRIAL, SHORT_TRIAL_S, TRIAL_OVERHEAD_S = 4, 0.14, 0.03
#: Configs worth measuring per problem (beyond that a local search rarely improves) and
#: the calls of the fixed costs (reference, default, confirmation).
WANTED_TRIALS, FIXED_CALLS = 24, 12
#: The least per-problem budget, seconds.
MIN_BUDGET_S = 0.5


def expected_call_s(problem: Problem) -> float:
    """A first guess of one call's seconds from the problem's FLOPs and bytes."""
    return problem.flops / (FLOPS_PER_CORE * cores()) + problem.bytes / BYTES_PER_S + 20e-6


def fixed_s(problem: Problem) -> float:
    """The expected seconds of a tuning of ``problem`` outside its search budget (the
    reference, the confirmation, PyTorch's time)."""
    return FIXED_CALLS * expected_call_s(problem)


def weight(problem: Problem, space_size: int) -> float:
    """The expected seconds of a useful tuning of ``problem``, fixed costs included
    (relative shares only)."""
    call = expected_call_s(problem)
    trial = max(CALLS_PER_TRIAL * call, SHORT_TRIAL_S) + TRIAL_OVERHEAD_S
    return max(1, min(space_size, WANTED_TRIALS)) * trial + fixed_s(problem)


@dataclass
class Allotment:
    """Search seconds for each of a list of problems out of ``total_s``, by ``weights``
    (each problem's whole expected cost), less each problem's ``fixed`` seconds (spent
    outside its search budget; none when not given).

    ``clock`` returns seconds (tests replace it); the allotment starts at ``started`` (the
    clock's value when the run began, so its set-up counts) or when created.
    """

    total_s: float
    weights: Sequence[float]
    fixed: Sequence[float] = ()
    clock: Callable[[], float] = field(default=time.monotonic, repr=False)
    started: float | None = None  # the clock when the run began (default: now)

    def __post_init__(self) -> None:
        if not self.total_s > 0:
            raise ValueError(f"total budget must be > 0 seconds, got {self.total_s}")
        self.start = self.clock() if self.started is None else self.started
        self._began: dict[int, tuple[float, float]] = {}  # index -> (clock, search budget)
        self._seen_s = self._expected_s = 0.0  # time outside the budgets: seen, predicted

    @property
    def left_s(self) -> float:
        """Seconds of the total not yet spent."""
        return self.total_s - (self.clock() - self.start)

    @property
    def fixed_scale(self) -> float:
        """How much longer than predicted the finished problems' time outside their search
        budgets was (the float64 reference, PyTorch's timing, compiles), at least 1: the
        problems still to come are expected to run as far over."""
        if self._expected_s <= 0:
            return 1.0
        return min(max(self._seen_s / self._expected_s, 1.0), 20.0)

    def budget(self, index: int) -> float:
        """Search seconds for problem ``index`` now: what is left less the fixed seconds of
        it and the problems after it (scaled by :attr:`fixed_scale`), shared by their
        search weights (weight less fixed seconds); at least ``MIN_BUDGET_S``."""
        fixed = [self.fixed[j] if j < len(self.fixed) else 0.0
                 for j in range(index, len(self.weights))]
        search = [max(w - f, 0.0) for w, f in zip(self.weights[index:], fixed, strict=True)]
        share = search[0] / sum(search) if sum(search) > 0 else 1.0
        chosen = max(MIN_BUDGET_S, (self.left_s - self.fixed_scale * sum(fixed)) * share)
        self._began[index] = (self.clock(), chosen)
        return chosen

    def finished(self, index: int) -> None:
        """Problem ``index`` is done (PyTorch's timing included): learn how far its time
        outside the search budget was from the prediction."""
        if index not in self._began:
            return
        began, chosen = self._began.pop(index)
        self._seen_s += max(0.0, self.clock() - began - chosen)
        self._expected_s += self.fixed[index] if index < len(self.fixed) else 0.0
