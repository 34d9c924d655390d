"""Search strategies over a Space. Every strategy has one signature,

    strategy(space, measure, budget, seed) -> list[Trial]

where ``measure(config) -> Trial`` validates and times one config (or replays a recorded
table in tests) and :class:`Budget` caps the number of trials and the seconds spent. Each
strategy measures every config at most once, stops when the budget is spent or the space
is exhausted, and is deterministic for a given seed (given deterministic measurements).

- ``exhaustive``: every config, in the Space's preference order.
- ``random``: a seeded random order of the configs.
- ``tpe``: Optuna's Tree-structured Parzen Estimator, each parameter a categorical; an
  optional dependency (``pip install 'atrous[tune]'``), imported only when used.
- ``local``: best-first local search: always the unmeasured config nearest (fewest keys
  changed) to the best so far, starting from configs already measured (the default, the
  winners of neighbouring problems), so a short budget refines what is known to be good.

Early stopping of slow candidates happens inside ``measure`` (see timing.measure_call):
a strategy only sees their status, ``"pruned"``.
"""

from __future__ import annotations

import json
import math
import random
import re
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from atrous.autotune.timing import Timing
from atrous.core.space import Config, Space

OK, PRUNED, FAILED = "ok", "pruned", "failed"


@dataclass(frozen=True)
class Trial:
    """One measured config.

    ``status`` is "ok", "pruned" (stopped early: far slower than the best so far; its
    timing is partial) or "failed" (wrong result, exception, compile or resource error;
    ``reason`` says which). Only "ok" trials can win.
    """

    config: Config
    status: str
    timing: Timing | None = None
    error: float | None = None  # the validation gate's relative error
    compile_s: float | None = None
    reason: str = ""

    @property
    def ok(self) -> bool:
        return self.status == OK

    @property
    def median(self) -> float:
        """Seconds per call; infinite for a failed trial."""
        return self.timing.median if self.timing is not None else math.inf

    def to_json(self) -> dict[str, Any]:
        """A JSON-serialisable dict (for the trial log)."""
        t = self.timing
        timing = None if t is None else {
            "times": list(t.times), "calls": t.calls_per_sample,
            "first_call": None if math.isnan(t.first_call) else t.first_call,
            "policy": t.policy, "pruned": t.pruned}
        return {"config": self.config, "status": self.status, "timing": timing,
                "error": self.error, "compile_s": self.compile_s, "reason": self.reason}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Trial:
        """The Trial of :meth:`to_json`'s dict; ValueError when it is malformed."""
        try:
            status = data["status"]
            if status not in (OK, PRUNED, FAILED) or not isinstance(data["config"], dict):
                raise ValueError(f"bad status or config: {status!r}")
            t = data.get("timing")
            timing = None if t is None else Timing.of(
                [float(x) for x in t["times"]], calls=int(t["calls"]),
                first_call=math.nan if t.get("first_call") is None else float(t["first_call"]),
                policy=str(t["policy"]), pruned=bool(t.get("pruned", False)))
            error = data.get("error")
            compile_s = data.get("compile_s")
            return cls(dict(data["config"]), status, timing,
                       None if error is None else float(error),
                       None if compile_s is None else float(compile_s),
                       str(data.get("reason", "")))
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"malformed trial record: {exc}") from exc


def config_key(config: Mapping[str, Any]) -> str:
    """A canonical string for ``config`` (sorted keys), to compare and index configs."""
    return json.dumps(dict(config), sort_keys=True, separators=(",", ":"))


@dataclass(frozen=True)
class Budget:
    """How much a search may spend: at most ``max_trials`` measured configs and
    ``max_seconds`` of wall time (a trial started in time may finish late). None is no cap.

    ``clock`` returns seconds; tests replace it with a deterministic one.
    """

    max_trials: int | None = None
    max_seconds: float | None = None
    clock: Callable[[], float] = field(default=time.monotonic, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.max_trials is not None and self.max_trials < 1:
            raise ValueError(f"budget: max_trials must be >= 1, got {self.max_trials}")
        if self.max_seconds is not None and not self.max_seconds > 0:
            raise ValueError(f"budget: max_seconds must be > 0, got {self.max_seconds}")

    @classmethod
    def parse(cls, text: str) -> Budget:
        """A budget from "30s", "2m", "20" (trials), "20,30s" or "none"."""
        trials, seconds = None, None
        if text.strip().lower() in ("none", "unlimited"):
            return cls()
        for part in filter(None, (p.strip() for p in text.lower().split(","))):
            m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*(s|m|min|trials?)?", part)
            if not m:
                raise ValueError(f"budget: cannot read {part!r}; use e.g. '30s', '2m', '20'"
                                 " (trials) or '20,30s'")
            value, unit = float(m.group(1)), m.group(2) or "trials"
            if unit.startswith("trial"):
                if value != int(value):
                    raise ValueError(f"budget: a trial count must be whole, got {part!r}")
                trials = int(value)
            else:
                seconds = value * (60 if unit.startswith("m") else 1)
        return cls(trials, seconds)

    def meter(self) -> Meter:
        """A running tally of this budget, started now."""
        return Meter(self, self.clock())

    def __str__(self) -> str:
        parts = ([f"{self.max_trials} trials"] if self.max_trials else []) + (
            [f"{self.max_seconds:g}s"] if self.max_seconds else [])
        return ", ".join(parts) or "unlimited"


@dataclass
class Meter:
    """Trials and seconds spent against a Budget."""

    budget: Budget
    start: float
    trials: int = 0

    @property
    def elapsed(self) -> float:
        return self.budget.clock() - self.start

    @property
    def spent(self) -> bool:
        b = self.budget
        return ((b.max_trials is not None and self.trials >= b.max_trials)
                or (b.max_seconds is not None and self.elapsed >= b.max_seconds))


Measure = Callable[[Config], Trial]
Strategy = Callable[[Space, Measure, Budget, int], list[Trial]]


def _in_order(configs: Iterable[Config], measure: Measure, budget: Budget) -> list[Trial]:
    meter, trials = budget.meter(), []
    for config in configs:
        if meter.spent:
            break
        trials.append(measure(config))
        meter.trials += 1
    return trials


def exhaustive(space: Space, measure: Measure, budget: Budget, seed: int = 0) -> list[Trial]:
    """Every config of ``space`` in its preference order, until the budget is spent."""
    return _in_order(space, measure, budget)


def random_search(space: Space, measure: Measure, budget: Budget,
                  seed: int = 0) -> list[Trial]:
    """The configs of ``space`` in a random order fixed by ``seed``, until the budget is spent."""
    configs = space.configs()
    return _in_order(random.Random(seed).sample(configs, len(configs)), measure, budget)


def tpe(space: Space, measure: Measure, budget: Budget, seed: int = 0) -> list[Trial]:
    """Optuna's TPE sampler, minimising the median time, until the budget is spent or every
    config was measured.

    Failed candidates and configs that break the Space's constraints are reported to the
    sampler with a penalty worse than any time seen. When it keeps proposing configs that
    are invalid or already measured, the next one comes from a seeded random order instead,
    so the search always progresses.
    """
    optuna = _import_optuna()
    valid = space.configs()
    if not valid:
        return []
    distributions = {name: optuna.distributions.CategoricalDistribution(list(values))
                     for name, values in space.params.items()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        sampler = optuna.samplers.TPESampler(
            seed=seed, multivariate=True, n_startup_trials=max(3, min(10, len(valid) // 4)))
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study = optuna.create_study(direction="minimize", sampler=sampler)
        return _tpe_loop(study, distributions, space, valid, measure, budget, seed)
    finally:
        optuna.logging.set_verbosity(verbosity)


def _tpe_loop(study: Any, distributions: dict[str, Any], space: Space, valid: list[Config],
              measure: Measure, budget: Budget, seed: int) -> list[Trial]:
    seen: dict[str, Trial] = {}
    fallback: Iterator[Config] = iter(random.Random(seed).sample(valid, len(valid)))
    meter, trials, misses = budget.meter(), [], 0
    worst = 1.0

    def penalty() -> float:
        return 10.0 * worst

    while not meter.spent and len(seen) < len(valid):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # enqueue_trial's experimental notices
            if misses >= 8:  # the sampler is stuck on known or invalid configs: pick for it
                study.enqueue_trial(next(c for c in fallback if config_key(c) not in seen))
                misses = 0
            ask = study.ask(distributions)
        config = dict(ask.params)
        key = config_key(config)
        if key in seen:
            previous = seen[key]
            study.tell(ask, previous.median if previous.status != FAILED else penalty())
            misses += 1
            continue
        if not space.allows(config):
            study.tell(ask, penalty())
            misses += 1
            continue
        misses = 0
        trial = measure(config)
        seen[key] = trial
        trials.append(trial)
        meter.trials += 1
        if trial.status != FAILED and math.isfinite(trial.median):
            worst = max(worst, trial.median)
            study.tell(ask, trial.median)
        else:
            study.tell(ask, penalty())
    return trials


def local(space: Space, measure: Measure, budget: Budget, seed: int = 0,
          start: Iterable[Config] = ()) -> list[Trial]:
    """Best-first local search: measure the unmeasured config of ``space`` that differs
    from the best "ok" trial so far in the fewest keys (ties in an order fixed by
    ``seed``), until the budget is spent or every config was measured.

    ``start`` are configs measured before (``measure`` returns their trials again without
    timing them; they are not counted against the budget or returned): the search begins
    from the best of them, else from a random config.
    """
    configs = space.configs()
    rank = {config_key(c): i for i, c in enumerate(random.Random(seed).sample(configs,
                                                                              len(configs)))}
    seen: dict[str, Trial] = {}
    for config in start:
        if config_key(config) in rank and config_key(config) not in seen:
            seen[config_key(config)] = measure(config)
    meter, trials = budget.meter(), []
    while not meter.spent and len(seen) < len(configs):
        centre = best(seen.values())
        unseen = [c for c in configs if config_key(c) not in seen]
        if centre is None:
            pick = min(unseen, key=lambda c: rank[config_key(c)])
        else:
            pick = min(unseen, key=lambda c: (_changed(c, centre.config), rank[config_key(c)]))
        trial = measure(pick)
        seen[config_key(pick)] = trial
        trials.append(trial)
        meter.trials += 1
    return trials


def _changed(a: Config, b: Config) -> int:
    """How many keys two configs disagree on."""
    return sum(a.get(k) != b.get(k) for k in a.keys() | b.keys())


def _import_optuna() -> Any:
    try:
        import optuna
    except ImportError as exc:
        raise ImportError("the 'tpe' strategy needs Optuna: pip install 'atrous[tune]'"
                          " (or pick --strategy exhaustive / random)") from exc
    return optuna


STRATEGIES: dict[str, Strategy] = {"exhaustive": exhaustive, "random": random_search, "tpe": tpe,
                                   "local": local}


def strategy(name: str) -> Strategy:
    """The strategy called ``name``; ValueError for an unknown one."""
    if name not in STRATEGIES:
        raise ValueError(f"unknown strategy {name!r}; known: {sorted(STRATEGIES)}")
    return STRATEGIES[name]


def best(trials: Iterable[Trial]) -> Trial | None:
    """The fastest "ok" trial, or None when none passed."""
    ok = [t for t in trials if t.ok]
    return min(ok, key=lambda t: t.median) if ok else None
