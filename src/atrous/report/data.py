"""Everything a report shows, read from files only (nothing is measured here): the tuning
database's records, the trial log, the benchmark rows and the measured ceilings of one
machine, selected by fingerprint id or benchmark run id.

The tuning database is read through ``atrous.autotune.database.Database`` (leniently: a
corrupt or foreign file reads as empty, with a warning) and trial-log lines through
``atrous.autotune.search.Trial.from_json``; the log itself is JSON lines whose format is
documented in ``atrous.autotune.triallog``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from atrous.report.ceilings import Ceilings
from atrous.report.rows import BenchRow, runs
from atrous.report.store import (
    bench_path,
    ceilings_path,
    database_path,
    read_ceilings,
    read_rows,
    trial_log_path,
)


class SelectionError(LookupError):
    """Asked for a machine or run the files do not hold."""


@dataclass(frozen=True)
class TrialEntry:
    """One measured candidate from the trial log."""

    run: str
    backend: str
    key: str
    at: float
    trial: Any  # atrous.autotune.search.Trial

    @property
    def op(self) -> str:
        return self.key.split(":", 1)[0]


@dataclass
class ReportData:
    """One machine's records, trials, benchmark rows (one run) and ceilings."""

    machine: str
    fingerprint: dict[str, Any]
    records: list[Any] = field(default_factory=list)  # atrous.autotune.records.Record
    trials: list[TrialEntry] = field(default_factory=list)
    rows: list[BenchRow] = field(default_factory=list)
    run: str | None = None
    ceilings: Ceilings | None = None
    sources: dict[str, str] = field(default_factory=dict)

    @property
    def label(self) -> str:
        """The machine in a few words: its id, and its CPU or GPU name."""
        fp = self.fingerprint
        what = fp.get("brand") or fp.get("name") or fp.get("family") or ""
        return f"{self.machine} ({what})" if what else self.machine

    def tuning_seconds(self) -> float | None:
        """Wall time the tuning runs in the trial log took (None without a log).

        A run lasts from its first to its last logged trial, plus the first trial's own
        measurement (a trial is logged when it ends); the float64 reference computed
        before the first trial is not logged and not counted."""
        spans: dict[str, list[TrialEntry]] = {}
        for t in self.trials:
            spans.setdefault(t.run, []).append(t)
        if not spans:
            return None
        total = 0.0
        for entries in spans.values():
            first = min(entries, key=lambda e: e.at)
            total += max(e.at for e in entries) - first.at + _trial_seconds(first.trial)
        return total


def _trial_seconds(trial: Any) -> float:
    t = trial.timing
    if t is None:
        return 0.0
    first = 0.0 if math.isnan(t.first_call) else t.first_call
    return sum(t.times) * t.calls_per_sample + first


def read_trials(path: Path, machine: str) -> list[TrialEntry]:
    """The trial-log entries of ``machine`` (lines cut short, malformed or not valid data
    are skipped: the log is read as untrusted data, see atrous.autotune.triallog)."""
    from atrous.autotune.triallog import parse_trial
    from atrous.autotune.untrusted import BadData, number, parse_json, text

    try:
        with path.open("rb") as f:
            lines = f.read().splitlines()
    except (FileNotFoundError, IsADirectoryError):
        return []
    out = []
    for raw in lines:
        try:
            line = parse_json(raw)
            if not isinstance(line, dict) or line.get("type") != "trial" or line.get(
                    "machine") != machine:
                continue
            out.append(TrialEntry(text(line.get("run"), "run", 64),
                                  text(line.get("backend"), "backend", 64),
                                  text(line.get("key"), "key"),
                                  number(line.get("at"), "at", minimum=0.0, maximum=1e11),
                                  parse_trial(line.get("trial"))))
        except (BadData, ValueError, RecursionError):  # not a line atrous wrote
            continue
    return out


def this_machine_ids() -> list[str]:
    """Fingerprint ids of this machine: its GPU (when torch sees one) and its CPU."""
    from atrous.autotune.hardware import cpu_fingerprint, cuda_device, fingerprint

    ids = []
    if cuda_device() is not None:
        ids.append(fingerprint("triton", "cuda")["id"])
    ids.append(cpu_fingerprint()["id"])
    return ids


def machines(db: str | Path | None = None) -> dict[str, str]:
    """Every machine id with data beside ``db`` -> the time of its latest data (ISO)."""
    from atrous.autotune.database import Database

    latest: dict[str, str] = {}
    for machine, rec in Database(database_path(db)).read().records():
        latest[machine.id] = max(latest.get(machine.id, ""), rec.tuned_at)
    for row in read_rows(bench_path(db)):
        latest[row.fingerprint] = max(latest.get(row.fingerprint, ""), row.timestamp)
    return latest


def load(db: str | Path | None = None, *, machine: str | None = None,
         run: str | None = None) -> ReportData:
    """The report data of one machine beside the tuning database ``db``.

    Args:
        db: the tuning database (default: the tuner's default file).
        machine: a fingerprint id; default: this machine when it has data, else the
            machine with the most recent data.
        run: a benchmark run id (its machine is then implied); default: the machine's
            latest run.

    Raises:
        SelectionError: no such machine or run, or no data at all.
    """
    from atrous.autotune.database import Database

    db_file = database_path(db)
    snapshot = Database(db_file).read()
    all_rows = read_rows(bench_path(db))
    by_run = runs(all_rows)
    if run is not None:
        if run not in by_run:
            raise SelectionError(f"no benchmark run {run!r} in {bench_path(db)}; runs:"
                                 f" {', '.join(by_run) or 'none'}")
        run_machine = by_run[run][0].fingerprint
        if machine is not None and machine != run_machine:
            raise SelectionError(f"run {run!r} was measured on {run_machine}, not {machine}")
        machine = run_machine
    known = machines(db)
    if machine is None:
        here = [m for m in this_machine_ids() if m in known]
        if here:
            machine = here[0]
        elif known:
            machine = max(known, key=known.__getitem__)
        else:
            raise SelectionError(f"nothing to report: no tuning records in {db_file} and no"
                                 f" benchmark rows in {bench_path(db)} (run `atrous tune`"
                                 " and/or `atrous bench` first)")
    elif machine not in known:
        raise SelectionError(f"no data for machine {machine!r} beside {db_file}; machines:"
                             f" {', '.join(sorted(known)) or 'none'}")
    mine = [rows for rows in by_run.values() if rows[0].fingerprint == machine]
    rows = by_run[run] if run is not None else (mine[-1] if mine else [])
    entry = snapshot.machines.get(machine)
    ceilings = read_ceilings(ceilings_path(db)).get(machine)
    fp = dict(entry.fingerprint) if entry else dict(ceilings.fingerprint) if ceilings else {}
    fp.setdefault("id", machine)
    return ReportData(
        machine=machine, fingerprint=fp,
        records=[] if entry is None else [entry.records[s] for s in sorted(entry.records)],
        trials=read_trials(trial_log_path(db), machine), rows=rows,
        run=rows[0].run if rows else None, ceilings=ceilings,
        sources={"tuning database": str(db_file), "benchmark rows": str(bench_path(db)),
                 "ceilings": str(ceilings_path(db)), "trial log": str(trial_log_path(db))})
