"""Tune one problem on one backend: gate, time, search, confirm, store.

1. The float64 reference is computed once (validate.Checker), before the clock starts.
2. The heuristic default config is measured first: it is the baseline every result is
   compared with, and its cost picks the strategy when asked for "auto" (exhaustive when
   the whole Space fits the budget, else a local search from the best measured config).
   Then the seeds (winners of neighbouring problems, ``seeds.nearest``) and each variant's
   default, so a good config sets the early-stopping bar before the search starts.
3. Every candidate first runs once on the problem into a NaN-poisoned output and is
   compared with the reference (the validation gate): a wrong result or any exception
   (compile failure, out of resources) marks it failed, with the reason, and it is never
   timed. That run is also its warm-up, so compile time stays out of its samples.
4. Candidates are timed by timing.measure_call, stopping early once their fastest sample
   is 25 % slower than the best median so far (it cannot win: the confirmation keeps the
   default unless a winner beats it by more than the noise); each is appended to the trial
   log, so an interrupted run resumes.
5. The best few and the default are re-timed interleaved; a winner that does not beat the
   default by more than the noise keeps the default.
6. The result goes into the database under this machine's fingerprint.
"""

from __future__ import annotations

import datetime
import math
import time
from collections.abc import Callable, Container, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from atrous.autotune import search
from atrous.autotune.candidate import Call, buffer_sets, copies_for, memory_bound
from atrous.autotune.database import Database
from atrous.autotune.hardware import fingerprint, last_level_cache, version
from atrous.autotune.lookup import problem_features, source_hash
from atrous.autotune.records import Record
from atrous.autotune.search import FAILED, OK, PRUNED, Budget, Trial, config_key
from atrous.autotune.timing import (
    CPU_COLD,
    POLICY,
    CpuSampler,
    CudaSampler,
    Plan,
    Sampler,
    Timing,
    interleaved,
    measure_call,
)
from atrous.autotune.triallog import RunKey, TrialLog
from atrous.autotune.validate import Checker
from atrous.core.op import Problem
from atrous.core.registry import op
from atrous.core.space import Config

CACHE_POLICIES = ("auto", "cold", "warm")
#: A candidate whose fastest sample is this many times the best median stops being timed.
PRUNE_RATIO = 1.25


class TuningError(RuntimeError):
    """No config of a problem passed the validation gate."""


@dataclass(frozen=True)
class Settings:
    """How one problem is tuned.

    Args:
        strategy: "auto", "exhaustive", "random" or "tpe".
        budget: trials and seconds for the default plus the search (the reference and the
            confirmation are extra; the confirmation is capped by ``confirm_s``).
        seed: seeds the inputs and the random strategies.
        cache: "auto" (cold for memory-bound problems on the CPU), "cold" or "warm".
        plan: samples per candidate and early stopping (warm-up is the validation run).
        finalists: configs re-timed interleaved at the end, the default included.
        confirm_s: seconds of interleaved re-timing, after at least two rounds.
        noise: the least relative gain for a winner to replace the default.
    """

    strategy: str = "auto"
    budget: Budget = field(default_factory=lambda: Budget(max_seconds=15.0))
    seed: int = 0
    cache: str = "auto"
    plan: Plan = field(default_factory=lambda: Plan(samples=7, min_samples=3, max_time=1.0,
                                                    warmup=0, prune_ratio=PRUNE_RATIO))
    finalists: int = 3
    confirm_s: float = 3.0
    noise: float = 0.03

    def __post_init__(self) -> None:
        if self.strategy != "auto":
            search.strategy(self.strategy)
        if self.cache not in CACHE_POLICIES:
            raise ValueError(f"cache must be one of {CACHE_POLICIES}, got {self.cache!r}")
        if self.finalists < 2:
            raise ValueError(f"finalists must be >= 2 (the default and a challenger), got"
                             f" {self.finalists}")


@dataclass
class Outcome:
    """What tuning one problem gave."""

    problem: Problem
    backend: str
    record: Record
    trials: list[Trial]
    default: Trial
    kept_default: bool
    resumed: int  # trials replayed from the trial log
    seconds: float  # wall time, reference included
    reference_s: float


def default_sampler(backend: str, device: str, cold: bool) -> Sampler:
    """CUDA events with an L2 flush on a GPU; wall clock on the CPU (named by cache policy)."""
    if backend == "triton" and device.startswith("cuda"):
        return CudaSampler(device)
    return CpuSampler(CPU_COLD if cold else POLICY)


def cold_cache(problem: Problem, backend: str, device: str, cache: str) -> bool:
    """Whether CPU timing rotates buffers ("auto": for memory-bound problems)."""
    if backend == "triton" and device.startswith("cuda"):
        return False  # the CUDA sampler flushes L2 itself
    return cache == "cold" or (cache == "auto" and memory_bound(problem))


def policy_name(problem: Problem, backend: str, device: str, settings: Settings,
                sampler: Sampler | None = None) -> str:
    """The timing policy a tuning of ``problem`` records."""
    if sampler is not None:
        return sampler.policy
    if backend == "triton" and device.startswith("cuda"):
        return CudaSampler.policy
    return CPU_COLD if cold_cache(problem, backend, device, settings.cache) else POLICY


def _trial_cost(trial: Trial) -> float:
    """Seconds a candidate like ``trial`` takes to validate and time, compile excluded."""
    t = trial.timing
    if t is None:
        return 0.0
    return t.median * (t.samples * t.calls_per_sample + 2)


def _pick_strategy(settings: Settings, size: int, per_trial_s: float) -> str:
    if settings.strategy != "auto":
        return settings.strategy
    b = settings.budget
    fits = (b.max_trials is None or size <= b.max_trials) and (
        b.max_seconds is None or size * per_trial_s <= b.max_seconds)
    return "exhaustive" if fits else "local"


def tune_problem(problem: Problem, backend: str = "numba", *, device: str = "cpu",
                 settings: Settings | None = None, database: Database | None = None,
                 sampler: Sampler | None = None,
                 on_trial: Callable[[Any, Trial], None] | None = None,
                 seeds: Sequence[Config] = ()) -> Outcome:
    """Tune ``problem`` on ``backend`` and store the winner in ``database``.

    Args:
        problem: a Problem from a spec's ``make_problem``.
        backend: "numba" (CPU) or "triton" (CUDA, or the interpreter on the CPU).
        device: "cpu" or "cuda[:N]".
        settings: strategy, budget, timing plan (defaults: :class:`Settings`).
        database: where results and the trial log go (default: the user cache file).
        sampler: the timer (default: :func:`default_sampler`); tests inject one.
        on_trial: called after every measured (or replayed) candidate.
        seeds: configs to measure right after the default (the winners of neighbouring
            problems, ``seeds.nearest``); those outside the Space are skipped.

    Raises:
        TuningError: when no config passes the validation gate.
    """
    settings = settings or Settings()
    database = database or Database()
    started = time.perf_counter()
    spec = op(problem.op)
    space = spec.space(problem, backend)
    default = spec.default_config(problem, backend)
    fp = fingerprint(backend, device)
    cold = cold_cache(problem, backend, device, settings.cache)
    sampler = sampler or default_sampler(backend, device, cold)

    checker = Checker(problem, backend, seed=settings.seed, device=device)
    _ = checker.reference  # the slow float64 reference, once, outside the budget
    reference_s = time.perf_counter() - started
    sets = buffer_sets(problem, backend, checker.inputs,
                       copies_for(problem, last_level_cache()) if cold else 1)

    runkey = RunKey(fp["id"], backend, problem.key, source_hash(problem.op, backend),
                    sampler.policy)
    log = TrialLog(database.log_path)
    run = log.start(runkey)
    measured: dict[str, Trial] = {}
    best = [math.inf]

    def evaluate(config: Config) -> Trial:
        try:
            t0 = time.perf_counter()
            out = checker.run(config)
            first = time.perf_counter() - t0
            result = checker.compare(out)
        except Exception as exc:  # a crashing candidate is a result, not an error
            return Trial(dict(config), FAILED, reason=f"{type(exc).__name__}: {exc}"[:500])
        error = result.rel_error if math.isfinite(result.rel_error) else None
        if not result.ok:
            return Trial(dict(config), FAILED, error=error, reason=str(result))
        try:
            call = Call(problem, backend, config, sets)
            # the next candidates start from these prepared inputs (packed weights and the
            # transformed filters made so far): preparing them again costs almost nothing
            sets[:] = call.sets
            timing = measure_call(call, sampler, settings.plan,
                                  best=best[0] if math.isfinite(best[0]) else None,
                                  first_call=first)
        except Exception as exc:
            return Trial(dict(config), FAILED, error=error,
                         reason=f"{type(exc).__name__} while timing: {exc}"[:500])
        return Trial(dict(config), PRUNED if timing.pruned else OK, timing, error,
                     max(0.0, first - timing.median))

    def revalidate(trial: Trial) -> Trial:
        try:
            result = checker.compare(checker.run(trial.config))
        except Exception as exc:  # as in evaluate: a crashing candidate is a result
            return Trial(dict(trial.config), FAILED, reason=f"replayed from the trial log,"
                         f" then {type(exc).__name__}: {exc}"[:500])
        error = result.rel_error if math.isfinite(result.rel_error) else None
        if not result.ok:
            return Trial(dict(trial.config), FAILED, error=error, reason="replayed from the"
                         f" trial log, then failed the validation gate: {result}"[:500])
        return replace(trial, error=error)

    def measure(config: Config) -> Trial:
        key = config_key(config)
        if key not in measured:
            trial = run.done.get(key)
            if trial is None:
                trial = evaluate(config)
                log.append(runkey, run, trial)
            measured[key] = trial
            if trial.ok:
                best[0] = min(best[0], trial.median)
            if on_trial is not None:
                on_trial(problem, trial)
        return measured[key]

    meter = settings.budget.meter()
    default_trial = measure(default)
    # Then the neighbours' winners, then each variant's own default (the op's
    # ``seed_configs``), so a search that cannot cover the Space starts from good configs
    # and still compares the algorithms before it refines their keys.
    firsts = [c for c in seeds if space.allows(c)]
    firsts += spec.seed_configs(problem, backend)
    for config in firsts:
        meter.trials = len(measured)
        if meter.spent:
            break
        measure(config)
    name = _pick_strategy(settings, len(space), _trial_cost(default_trial))
    b = settings.budget  # what is left of it after the default and the seeds
    trials_left = None if b.max_trials is None else b.max_trials - len(measured)
    seconds_left = None if b.max_seconds is None else b.max_seconds - meter.elapsed
    if (trials_left is None or trials_left > 0) and (seconds_left is None or seconds_left > 0):
        rest = replace(b, max_trials=trials_left, max_seconds=seconds_left)
        if name == "local":  # it starts from the best config measured so far
            search.local(space, measure, rest, settings.seed,
                         start=[t.config for t in measured.values()])
        else:
            search.strategy(name)(space, measure, rest, settings.seed)
    _regate_replayed(measured, run.done, default, settings.finalists, revalidate,
                     lambda t: log.append(runkey, run, t))
    default_trial = measured[config_key(default)]
    trials = list(measured.values())
    chosen, timings = _confirm(problem, backend, sets, sampler, settings, default_trial, trials,
                               run.done)
    record = _record(problem, backend, fp, settings, name, sampler.policy, trials, default_trial,
                     chosen, timings)
    database.put(fp, record)
    log.finish(runkey, run)
    return Outcome(problem, backend, record, trials, default_trial,
                   config_key(chosen.config) == config_key(default) and default_trial.ok,
                   len(run.done), time.perf_counter() - started, reference_s)


def _regate_replayed(measured: dict[str, Trial], replayed: Container[str], default: Config,
                     finalists: int, gate: Callable[[Trial], Trial],
                     on_failed: Callable[[Trial], None]) -> None:
    """Run the validation gate again on every replayed trial that could win: a trial-log
    line is no proof (an edited log must not crown a config that never passed the gate).
    Only the default and the ``finalists`` fastest ok trials can win (see _confirm); a
    replayed one that now fails is replaced (and logged), and the next in line checked."""
    checked: set[str] = set()
    dkey = config_key(default)
    while True:
        ok = sorted((t for t in measured.values() if t.ok), key=lambda t: t.median)
        contenders = ok[:finalists] + [t for t in ok if config_key(t.config) == dkey]
        pending = [k for k in dict.fromkeys(config_key(t.config) for t in contenders)
                   if k in replayed and k not in checked]
        if not pending:
            return
        for key in pending:
            checked.add(key)
            measured[key] = gate(measured[key])
            if not measured[key].ok:
                on_failed(measured[key])


def _confirm(problem: Problem, backend: str, sets: list, sampler: Sampler, settings: Settings,
             default: Trial, trials: list[Trial],
             replayed: Container[str]) -> tuple[Trial, dict[str, Timing]]:
    """Re-time the best few (and the default) interleaved; pick the winner. Returns it and
    the timings to report, by config key."""
    ok = sorted((t for t in trials if t.ok), key=lambda t: t.median)
    if not ok:
        first = next((t for t in trials if t.status == FAILED), None)
        raise TuningError(f"{problem.key} on {backend}: no config passed the validation gate"
                          + (f"; e.g. {first.config}: {first.reason}" if first else ""))
    dkey = config_key(default.config)
    challengers = [t for t in ok if config_key(t.config) != dkey]
    finalists = ([default] if default.ok else []) + challengers[
        :settings.finalists - (1 if default.ok else 0)]
    # as many finalists as two rounds fit in confirm_s (the default and one challenger at least)
    while len(finalists) > 2 and 2 * sum(
            t.timing.median * t.timing.calls_per_sample for t in finalists) > settings.confirm_s:
        finalists.pop()
    if len(finalists) < 2:
        return finalists[0], {config_key(t.config): t.timing for t in ok}
    calls = [Call(problem, backend, t.config, sets) for t in finalists]
    for call, t in zip(calls, finalists, strict=True):
        if config_key(t.config) in replayed:
            call()  # replayed from the trial log: not compiled in this process yet
    again = interleaved(calls, sampler, [t.timing.calls_per_sample for t in finalists],
                        max_time=settings.confirm_s)
    timings = {config_key(t.config): tm for t, tm in zip(finalists, again, strict=True)}
    winner, w = min(zip(finalists, again, strict=True), key=lambda p: p[1].median)
    if default.ok and winner is not default:
        d = timings[dkey]
        threshold = max(settings.noise, min(0.10, (w.spread + d.spread) / 4))
        if w.median > d.median * (1 - threshold):
            winner = default  # within noise of the default: keep it
    return winner, timings


def _record(problem: Problem, backend: str, fp: dict, settings: Settings, strategy: str,
            policy: str, trials: list[Trial], default: Trial, chosen: Trial,
            timings: dict[str, Timing]) -> Record:
    t = timings.get(config_key(chosen.config)) or chosen.timing
    d = timings.get(config_key(default.config)) if default.ok else None
    ranked = sorted(tm.median for tm in timings.values())
    gap = (ranked[1] - ranked[0]) / ranked[0] if len(ranked) > 1 and ranked[0] > 0 else None
    return Record(
        op=problem.op, backend=backend, key=problem.key, dtype=problem.dtype,
        layout=problem.layout, features=problem_features(problem), config=dict(chosen.config),
        median_s=t.median, p20_s=t.p20, p80_s=t.p80,
        default_config=dict(default.config),
        default_median_s=None if d is None else d.median, runner_up_gap=gap,
        validation_error=chosen.error or 0.0, strategy=strategy, seed=settings.seed,
        trials=len(trials), failed=sum(x.status == FAILED for x in trials),
        pruned=sum(x.status == PRUNED for x in trials), policy=policy,
        source_hash=source_hash(problem.op, backend),
        tuned_at=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        atrous_version=version("atrous") or "unknown", compile_s=chosen.compile_s)
