"""What comes back from the workers, checked as data and stored by the driver: the one
writer of the tuning database, its trial log, the benchmark rows and the ceilings.

A worker's answer is checked before anything is written (the record through
``Record.from_json``, every trial-log line through ``parse_trial`` and the machine id it
was tuned for), so a confused or foreign worker cannot put a bad entry in the file.
Records go in with the database's own locked, atomic writes; a record is stored before
its run's "done" line, so an interruption between the two resumes, never loses it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from atrous.autotune.database import Database
from atrous.autotune.records import Record, SchemaError
from atrous.autotune.triallog import TrialLog, parse_trial
from atrous.autotune.untrusted import BadData

#: The ROW_FIELDS (atrous.fleet.local) shown in tables, with their expected kinds.
_NUMBERS = ("median_s", "default_median_s", "torch_median_s", "seconds")


class ResultError(ValueError):
    """A worker's answer that is not valid data (nothing of it is stored)."""


@dataclass
class Outcome:
    """One problem on one machine type, as the driver saw it."""

    name: str
    problem: Any
    machine: str
    status: str  # "tuned", "resumed", "cached", "failed" or "untuned"
    worker: str = ""
    config: dict[str, Any] | None = None
    median_s: float | None = None
    default_median_s: float | None = None
    torch_median_s: float | None = None
    seconds: float = 0.0
    trials: int = 0
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def speedup(self) -> float | None:
        """The default config's median over the tuned one's."""
        if self.median_s and self.default_median_s:
            return self.default_median_s / self.median_s
        return None


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def check_tuning(out: Any, machine: str, backend: str, problem: Any
                 ) -> tuple[Record | None, list[dict[str, Any]], dict[str, Any]]:
    """(record or None, trial-log lines, row fields) of a worker's answer for ``problem``
    on ``machine``; ResultError when any part is not valid data or not of that problem."""
    if not isinstance(out, dict) or not isinstance(out.get("row"), dict):
        raise ResultError("a worker's answer must be an object with a row")
    fp = out.get("fingerprint")
    if not isinstance(fp, dict) or fp.get("id") != machine:
        got = fp.get("id") if isinstance(fp, dict) else None
        raise ResultError(f"the worker tuned for machine {got!r}, not {machine}")
    record = None
    if out.get("record") is not None:
        try:
            record = Record.from_json(out["record"])
        except (SchemaError, ValueError, TypeError) as exc:
            raise ResultError(f"bad record: {exc}") from None
        if (record.op, record.backend, record.key) != (problem.op, backend, problem.key):
            raise ResultError(f"the record is for {record.backend}|{record.key}, not"
                              f" {backend}|{problem.key}")
    lines = out.get("trials") or []
    check_lines(lines, machine, backend, problem.key)
    row = dict(out["row"])
    for k in _NUMBERS:
        row[k] = _number(row.get(k))
    return record, lines, row


def check_lines(lines: Any, machine: str, backend: str, key: str) -> None:
    """ResultError unless ``lines`` are trial-log lines ("trial" or "done") of problem
    ``key`` on ``backend`` and ``machine``, each trial valid data."""
    if not isinstance(lines, list):
        raise ResultError("trials must be a list of trial-log lines")
    for line in lines:
        if not isinstance(line, dict) or line.get("type") not in ("trial", "done") or (
                line.get("machine"), line.get("backend"), line.get("key")) != (
                machine, backend, key):
            raise ResultError("a trial-log line of another problem or machine")
        if not isinstance(line.get("run"), str) or not line["run"].isalnum():
            raise ResultError("a trial-log line without a run id")
        if line["type"] == "trial":
            try:
                parse_trial(line.get("trial"))
            except (BadData, ValueError, RecursionError) as exc:
                raise ResultError(f"bad trial-log line: {exc}") from None


def store_trials(db: Database, lines: list[dict[str, Any]]) -> None:
    """Append the "trial" lines a worker streamed while tuning (checked by check_lines)."""
    TrialLog(db.log_path).extend([ln for ln in lines if ln["type"] == "trial"])


def store_tuning(db: Database, fingerprint: dict[str, Any], record: Record | None,
                 lines: list[dict[str, Any]]) -> None:
    """Write one problem's results: its trials, then its record, then its "done" line."""
    log = TrialLog(db.log_path)
    log.extend([ln for ln in lines if ln["type"] == "trial"])
    if record is not None:
        db.put(fingerprint, record)
    log.extend([ln for ln in lines if ln["type"] == "done"])


def resume_lines(db: Database, machine: str, backend: str, problem_key: str, source: str,
                 policy: str) -> list[dict[str, Any]]:
    """The trial-log lines of an unfinished run of this problem on ``machine`` (empty when
    there is none), for the worker that takes it up."""
    from atrous.autotune.triallog import RunKey

    key = RunKey(machine, backend, problem_key, source, policy)
    run = TrialLog(db.log_path).start(key)
    return [{"type": "trial", "run": run.id, **key.__dict__, "at": 0.0,
             "trial": t.to_json()} for t in run.done.values()]
