"""`atrous tune`'s job: tune a list of suite entries, skipping those already tuned, and
gather one result row each (with PyTorch's time on the same problem where it is cheap).

Each problem is seeded with the winners of its neighbours (``seeds``: problems tuned
earlier in the run, and the database's records of this machine and its family), and with
a total budget each gets a share of the time left by its expected cost (``allot``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from atrous.autotune import seeds as neighbours
from atrous.autotune.allot import Allotment, fixed_s, weight
from atrous.autotune.database import Database
from atrous.autotune.hardware import fingerprint
from atrous.autotune.lookup import source_hash
from atrous.autotune.records import Record
from atrous.autotune.search import Budget, Trial
from atrous.autotune.timing import Sampler, measure
from atrous.autotune.tuner import Outcome, Settings, TuningError, policy_name, tune_problem
from atrous.core.op import Problem
from atrous.core.registry import op
from atrous.core.space import Config
from atrous.jobs.suite import Entry

#: A total budget's candidate timing: two samples and 0.3 s suffice to rank candidates,
#: since the finalists are re-timed interleaved before one is chosen.
LEAN_PLAN = {"samples": 5, "min_samples": 2, "max_time": 0.3}


@dataclass
class Row:
    """The outcome of one suite entry: ``status`` is "tuned", "resumed" (finished from the
    trial log), "cached" (already in the database, not re-tuned) or "failed"."""

    name: str
    problem: Problem
    backend: str
    status: str
    config: Config | None = None
    median_s: float | None = None
    default_median_s: float | None = None
    torch_median_s: float | None = None
    strategy: str = ""
    trials: int = 0
    failed: int = 0
    pruned: int = 0
    seconds: float = 0.0
    note: str = ""
    #: the fastest measured median of each variant (ops with a "variant" key), and whether
    #: that variant's best was stopped early (so its time is a lower bound)
    variants: dict[str, float] = field(default_factory=dict)
    pruned_variants: frozenset[str] = frozenset()
    seeds: int = 0  # neighbour winners measured first
    budget_s: float | None = None  # the share of a total budget this problem got

    @property
    def variant(self) -> str | None:
        """The winning config's variant, for ops that have variants."""
        return None if not self.config else self.config.get("variant")

    @property
    def margin(self) -> tuple[str, float] | None:
        """(the best other variant, how much slower its best was than the winning
        variant's best: 0.18 = 18 %), from the search's medians; None with one variant."""
        mine = self.variants.get(self.variant) if self.variant else None
        others = {v: t for v, t in self.variants.items() if v != self.variant}
        if not mine or not others:
            return None
        other = min(others, key=others.__getitem__)
        return other, others[other] / mine - 1

    @property
    def speedup(self) -> float | None:
        """The default config's median over the tuned one's."""
        if self.median_s and self.default_median_s:
            return self.default_median_s / self.median_s
        return None

    @property
    def vs_torch(self) -> float | None:
        """PyTorch's median over the tuned one's (above 1: atrous is faster)."""
        if self.median_s and self.torch_median_s:
            return self.torch_median_s / self.median_s
        return None


def fresh_record(database: Database, problem: Problem, backend: str, device: str,
                 policy: str) -> Record | None:
    """This machine's record for ``problem`` when it was tuned for the installed kernel
    source under the same timing policy, else None."""
    machine = database.read().machines.get(fingerprint(backend, device)["id"])
    rec = machine.records.get(f"{backend}|{problem.key}") if machine else None
    if rec is None or rec.source_hash != source_hash(problem.op, backend) or rec.policy != policy:
        return None
    return rec


def torch_time(problem: Problem, seed: int = 0) -> float | None:
    """Median seconds of PyTorch's own op on the CPU (warm), or None without torch or an
    equivalent op."""
    from atrous.autotune.validate import random_inputs
    from atrous.jobs.bench import torch_baseline

    inputs = {k: None if v is None else v.astype(problem.dtype)
              for k, v in random_inputs(problem, seed).items()}
    fn = torch_baseline(problem, inputs)
    return None if fn is None else measure(fn, samples=3, max_time=0.5).median


def _row(entry: Entry, backend: str, status: str, rec: Record, seconds: float) -> Row:
    return Row(entry.name, entry.problem, backend, status, dict(rec.config), rec.median_s,
               rec.default_median_s, None, rec.strategy, rec.trials, rec.failed, rec.pruned,
               seconds)


def variant_times(trials: Iterable[Trial]) -> tuple[dict[str, float], frozenset[str]]:
    """The fastest median of each variant among timed trials (pruned ones included: their
    partial time bounds the variant from below), and the variants whose best was pruned."""
    best: dict[str, Trial] = {}
    for t in trials:
        variant = t.config.get("variant")
        if t.timing is None or t.status == "failed" or not isinstance(variant, str):
            continue
        if variant not in best or t.median < best[variant].median:
            best[variant] = t
    return ({v: t.median for v, t in best.items()},
            frozenset(v for v, t in best.items() if not t.ok))


def _tuned_row(entry: Entry, backend: str, out: Outcome, seeds: int,
               budget_s: float | None) -> Row:
    row = _row(entry, backend, "resumed" if out.resumed else "tuned", out.record, out.seconds)
    row.variants, row.pruned_variants = variant_times(out.trials)
    row.seeds, row.budget_s = seeds, budget_s
    return row


def tune_entries(entries: Iterable[Entry], *, backend: str = "numba", device: str = "cpu",
                 settings: Settings | None = None, database: Database | None = None,
                 force: bool = False, with_torch: bool = True, sampler: Sampler | None = None,
                 on_entry: Callable[[Entry], None] | None = None,
                 on_trial: Callable[[Any, Trial], None] | None = None,
                 on_row: Callable[[Row], None] | None = None,
                 total_s: float | None = None, seed_neighbours: bool = True) -> list[Row]:
    """Tune every entry not already tuned (all of them with ``force``); one Row each.

    Each problem first measures the winners of its nearest already tuned neighbours
    (``seed_neighbours``). With ``total_s``, the per-problem budget is each problem's
    share of the time left (``allot.Allotment``), replacing ``settings.budget``, the
    confirmation takes at most a quarter of it and candidates take fewer samples
    (``LEAN_PLAN``). PyTorch is timed on the CPU only
    (``with_torch``), after tuning, on the same problem.
    """
    began = time.monotonic()  # the total budget covers the set-up below too
    settings = settings or Settings()
    database = database or Database()
    entries = list(entries)
    rows = []
    if with_torch and backend == "numba":
        _torch_threads()
    fp = fingerprint(backend, device)
    snapshot = database.read()
    known = [k for name in {e.problem.op for e in entries}
             for k in neighbours.from_snapshot(snapshot, fp, name, backend)]
    policies = [policy_name(e.problem, backend, device, settings, sampler) for e in entries]
    cached = [None if force else fresh_record(database, e.problem, backend, device, pol)
              for e, pol in zip(entries, policies, strict=True)]
    allot = None
    if total_s is not None:
        todo = [rec is None for rec in cached]
        allot = Allotment(total_s, [weight(e.problem, len(op(e.problem.op).space(
            e.problem, backend))) if t else 0.0 for e, t in zip(entries, todo, strict=True)],
            [fixed_s(e.problem) if t else 0.0 for e, t in zip(entries, todo, strict=True)],
            started=began)
    for i, entry in enumerate(entries):
        if on_entry is not None:
            on_entry(entry)
        p, t0 = entry.problem, time.perf_counter()
        rec = None if force else fresh_record(database, p, backend, device, policies[i])
        if rec is not None:
            row = _row(entry, backend, "cached", rec, 0.0)
        else:
            mine, budget_s = settings, None
            if allot is not None:
                budget_s = allot.budget(i)
                mine = replace(settings, budget=Budget(max_seconds=budget_s),
                               confirm_s=min(settings.confirm_s, budget_s / 4),
                               plan=replace(settings.plan, **LEAN_PLAN))
            space = op(p.op).space(p, backend)
            seeds = neighbours.nearest(p, backend, space, known) if seed_neighbours else []
            try:
                out = tune_problem(p, backend, device=device, settings=mine,
                                   database=database, sampler=sampler, on_trial=on_trial,
                                   seeds=seeds)
            except TuningError as exc:
                rows.append(Row(entry.name, p, backend, "failed", note=str(exc),
                                seconds=time.perf_counter() - t0))
                if on_row is not None:
                    on_row(rows[-1])
                continue
            known += neighbours.from_trials(p, backend, [
                t for t in out.trials if t.config == out.record.config]) + \
                neighbours.from_trials(p, backend, out.trials)
            row = _tuned_row(entry, backend, out, len(seeds), budget_s)
        if with_torch and backend == "numba":
            row.torch_median_s = torch_time(p, settings.seed)
        if allot is not None:
            allot.finished(i)
        rows.append(row)
        if on_row is not None:
            on_row(row)
    return rows


def _torch_threads() -> None:
    """Let PyTorch use every core, as the Numba kernels may."""
    import os

    try:
        import torch
    except ImportError:
        return
    torch.set_num_threads(os.cpu_count() or 1)
