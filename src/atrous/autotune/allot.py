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
from typing import Any

from atrous.kernels.args import cores

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


def expected_call_s(problem: Any) -> float:
    """A first guess of one call's seconds from the problem's FLOPs and bytes."""
    return problem.flops / (FLOPS_PER_CORE * cores()) + problem.bytes / BYTES_PER_S + 20e-6


def fixed_s(problem: Any) -> float:
    """The expected seconds of a tuning of ``problem`` outside its search budget (the
    reference, the confirmation, PyTorch's time)."""
    return FIXED_CALLS * expected_call_s(problem)


def weight(problem: Any, space_size: int) -> float:
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

    ``clock`` returns seconds (tests replace it); the allotment starts when created.
    """

    total_s: float
    weights: Sequence[float]
    fixed: Sequence[float] = ()
    clock: Callable[[], float] = field(default=time.monotonic, repr=False)

    def __post_init__(self) -> None:
        if not self.total_s > 0:
            raise ValueError(f"total budget must be > 0 seconds, got {self.total_s}")
        self.start = self.clock()

    @property
    def left_s(self) -> float:
        """Seconds of the total not yet spent."""
        return self.total_s - (self.clock() - self.start)

    def budget(self, index: int) -> float:
        """Search seconds for problem ``index`` now: its share of what is left among it and
        the problems after it, less its fixed seconds (at least ``MIN_BUDGET_S``)."""
        rest = sum(self.weights[index:])
        share = self.weights[index] / rest if rest > 0 else 1.0
        fixed = self.fixed[index] if index < len(self.fixed) else 0.0
        return max(MIN_BUDGET_S, self.left_s * share - fixed)
