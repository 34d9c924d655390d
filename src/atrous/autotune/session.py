"""`atrous tune`'s job: tune a list of suite entries, skipping those already tuned, and
gather one result row each (with PyTorch's time on the same problem where it is cheap)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from atrous.autotune.database import Database
from atrous.autotune.hardware import fingerprint
from atrous.autotune.lookup import source_hash
from atrous.autotune.records import Record
from atrous.autotune.search import Trial
from atrous.autotune.space import Config
from atrous.autotune.timing import Sampler, measure
from atrous.autotune.tuner import Settings, TuningError, policy_name, tune_problem
from atrous.suite import Entry


@dataclass
class Row:
    """The outcome of one suite entry: ``status`` is "tuned", "resumed" (finished from the
    trial log), "cached" (already in the database, not re-tuned) or "failed"."""

    name: str
    problem: Any
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


def fresh_record(database: Database, problem: Any, backend: str, device: str,
                 policy: str) -> Record | None:
    """This machine's record for ``problem`` when it was tuned for the installed kernel
    source under the same timing policy, else None."""
    machine = database.read().machines.get(fingerprint(backend, device)["id"])
    rec = machine.records.get(f"{backend}|{problem.key}") if machine else None
    if rec is None or rec.source_hash != source_hash(problem.op, backend) or rec.policy != policy:
        return None
    return rec


def torch_time(problem: Any, seed: int = 0) -> float | None:
    """Median seconds of PyTorch's own op on the CPU (warm), or None without torch or an
    equivalent op."""
    from atrous.bench import torch_baseline
    from atrous.validate import random_inputs

    inputs = {k: None if v is None else v.astype(problem.dtype)
              for k, v in random_inputs(problem, seed).items()}
    fn = torch_baseline(problem, inputs)
    return None if fn is None else measure(fn, samples=5, max_time=1.0).median


def _row(entry: Entry, backend: str, status: str, rec: Record, seconds: float) -> Row:
    return Row(entry.name, entry.problem, backend, status, dict(rec.config), rec.median_s,
               rec.default_median_s, None, rec.strategy, rec.trials, rec.failed, rec.pruned,
               seconds)


def tune_entries(entries: Iterable[Entry], *, backend: str = "numba", device: str = "cpu",
                 settings: Settings | None = None, database: Database | None = None,
                 force: bool = False, with_torch: bool = True, sampler: Sampler | None = None,
                 on_entry: Callable[[Entry], None] | None = None,
                 on_trial: Callable[[Any, Trial], None] | None = None,
                 on_row: Callable[[Row], None] | None = None) -> list[Row]:
    """Tune every entry not already tuned (all of them with ``force``); one Row each.

    PyTorch is timed on the CPU only (``with_torch``), after tuning, on the same problem.
    """
    settings = settings or Settings()
    database = database or Database()
    rows = []
    if with_torch and backend == "numba":
        _torch_threads()
    for entry in entries:
        if on_entry is not None:
            on_entry(entry)
        p, t0 = entry.problem, time.perf_counter()
        policy = policy_name(p, backend, device, settings, sampler)
        rec = None if force else fresh_record(database, p, backend, device, policy)
        if rec is not None:
            row = _row(entry, backend, "cached", rec, 0.0)
        else:
            try:
                out = tune_problem(p, backend, device=device, settings=settings,
                                   database=database, sampler=sampler, on_trial=on_trial)
            except TuningError as exc:
                rows.append(Row(entry.name, p, backend, "failed", note=str(exc),
                                seconds=time.perf_counter() - t0))
                if on_row is not None:
                    on_row(rows[-1])
                continue
            row = _row(entry, backend, "resumed" if out.resumed else "tuned", out.record,
                       out.seconds)
        if with_torch and backend == "numba":
            row.torch_median_s = torch_time(p, settings.seed)
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
