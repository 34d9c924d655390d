"""The one adapter between the fleet and atrous's own tuning and benchmarking: what a node
worker runs, in terms of plain data.

Everything the fleet needs from the rest of atrous goes through this module: "the
fingerprint of this node", "tune this problem here and give back its record and its
trial-log lines", "benchmark these entries here and give back the rows and ceilings",
and the driver's side questions (which timing policy and kernel source a record needs to
be fresh). When the tuning machinery moves, only this file follows it.

A worker never opens the tuning database the user named, nor the default one: it tunes
into a scratch database in a private temporary folder, seeded with what the driver sent
(this machine's records for neighbour seeding, the trial-log lines of an interrupted run
to resume), and returns what appeared there. The driver alone writes the real files.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: Fields of a tuning row that travel back to the driver (all plain data).
ROW_FIELDS = ("status", "config", "median_s", "default_median_s", "torch_median_s",
              "strategy", "trials", "failed", "pruned", "seconds", "note", "seeds")


@dataclass
class TuneTask:
    """One problem to tune on a node.

    Args:
        entry: the suite entry (name and Problem).
        backend, device: what the worker tunes on ("numba"/"cpu", "triton"/"cuda").
        settings: atrous.autotune.tuner.Settings.
        machine: a tuning-file document (``Snapshot.to_json()``) holding the records of
            this machine (and its family) the driver has: neighbour seeds.
        resume: trial-log lines of an interrupted run of this problem, to resume.
        with_torch: also time PyTorch's op on the same problem (CPU only).
    """

    entry: Any
    backend: str
    device: str
    settings: Any
    machine: dict[str, Any] = field(default_factory=dict)
    resume: list[dict[str, Any]] = field(default_factory=list)
    with_torch: bool = False


@dataclass
class BenchTask:
    """Entries to benchmark on a node, with the tuning records of its machine.

    ``ceilings`` is the machine's stored ceilings (``Ceilings.to_json()``), or None to
    measure them here."""

    entries: list[Any]
    settings: Any  # atrous.jobs.bench.Settings
    machine: dict[str, Any] = field(default_factory=dict)
    ceilings: dict[str, Any] | None = None


def node_facts(backend: str, device: str) -> dict[str, Any]:
    """This node's fingerprint for ``backend`` on ``device``, its host name and process id
    (the driver groups workers by the fingerprint's id)."""
    from atrous.autotune.hardware import fingerprint

    return {"fingerprint": dict(fingerprint(backend, device)), "host": socket.gethostname(),
            "pid": os.getpid(), "cpus": os.cpu_count() or 1}


def supports(backend: str, dtype: str) -> bool:
    """Whether ``backend`` runs ``dtype`` (a machine type skips problems it cannot run)."""
    from atrous.dispatch import BACKEND_DTYPES

    return dtype in BACKEND_DTYPES.get(backend, ())


def policy_for(problem: Any, backend: str, device: str, settings: Any) -> str:
    """The timing policy a tuning of ``problem`` records (a stored record under another
    policy is not reused)."""
    from atrous.autotune.tuner import policy_name

    return policy_name(problem, backend, device, settings)


def source_for(op_name: str, backend: str) -> str:
    """The hash of the installed kernel source of ``op_name`` on ``backend``."""
    from atrous.autotune.lookup import source_hash

    return source_hash(op_name, backend)


@contextmanager
def _scratch() -> Iterator[Path]:
    """A private temporary folder for one task's scratch database, removed afterwards."""
    folder = Path(tempfile.mkdtemp(prefix="atrous-fleet-"))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _write_machine(db: Any, machine: dict[str, Any]) -> None:
    """Put the driver's records of this machine into the scratch database."""
    from atrous.autotune.database import write_file
    from atrous.autotune.records import Snapshot

    if machine:
        write_file(db.path, Snapshot.from_json(machine, strict=False)[0])


class LogTail:
    """Follows the scratch trial log: each call to :meth:`new` returns the complete lines
    appended since the last call (the tuner writes whole lines under its lock)."""

    def __init__(self, path: Path, offset: int = 0) -> None:
        self.path, self.offset = path, offset

    def new(self) -> list[dict[str, Any]]:
        try:
            with self.path.open("rb") as f:
                f.seek(self.offset)
                data = f.read()
        except FileNotFoundError:
            return []
        end = data.rfind(b"\n") + 1  # a line still being written waits for the next call
        self.offset += end
        return [json.loads(line) for line in data[:end].splitlines() if line.strip()]


def tune_here(task: TuneTask,
              sink: Callable[[list[dict[str, Any]]], None] | None = None) -> dict[str, Any]:
    """Tune ``task.entry`` on this node into a scratch database.

    Every trial-log line the tuning writes goes to ``sink`` as soon as its candidate is
    measured (the worker hands them to the driver while it tunes, so a lost node's
    measured candidates survive it); what ``sink`` did not get comes back in the result.

    Returns plain data: ``fingerprint`` (this node's), ``row`` (the ROW_FIELDS of the
    tuning row), ``record`` (the stored record's JSON, or None when tuning failed) and
    ``trials`` (the trial-log lines not given to ``sink``, "done" included).
    """
    from atrous.autotune.database import Database
    from atrous.autotune.hardware import fingerprint
    from atrous.jobs.tune import tune_entries

    fp = dict(fingerprint(task.backend, task.device))
    with _scratch() as folder:
        db = Database(folder / "tuning.json")
        _write_machine(db, task.machine)
        if task.resume:
            db.log_path.write_text("".join(json.dumps(line, separators=(",", ":")) + "\n"
                                           for line in task.resume), encoding="utf-8")
        tail = LogTail(db.log_path, db.log_path.stat().st_size if task.resume else 0)

        def on_trial(problem: Any, trial: Any) -> None:
            if sink is not None:
                sink(tail.new())

        rows = tune_entries([task.entry], backend=task.backend, device=task.device,
                            settings=task.settings, database=db, force=True,
                            with_torch=task.with_torch, on_trial=on_trial)
        row = rows[0]
        machine = db.read().machines.get(fp["id"])
        problem = task.entry.problem
        record = None
        if row.status != "failed" and machine is not None:
            rec = machine.records.get(f"{task.backend}|{problem.key}")
            record = None if rec is None else rec.to_json()
        trials = tail.new()
    return {"fingerprint": fp, "record": record, "trials": trials,
            "row": {k: getattr(row, k) for k in ROW_FIELDS}}


def bench_here(task: BenchTask) -> dict[str, Any]:
    """Benchmark ``task.entries`` on this node against the scratch copy of its machine's
    records. Returns ``fingerprint``, ``rows`` (``BenchRow.to_json()`` each) and
    ``ceilings`` (``Ceilings.to_json()``, measured here when the driver had none)."""
    from dataclasses import replace

    from atrous.autotune.database import Database
    from atrous.autotune.hardware import fingerprint
    from atrous.jobs.bench import bench
    from atrous.jobs.ceilings import ensure_ceilings
    from atrous.report.ceilings import Ceilings
    from atrous.report.store import ceilings_path, write_ceilings

    settings = task.settings
    backend = "triton" if settings.device.startswith("cuda") else "numba"
    fp = dict(fingerprint(backend, settings.device))
    with _scratch() as folder:
        db = Database(folder / "tuning.json")
        _write_machine(db, task.machine)
        if task.ceilings is not None:
            write_ceilings(ceilings_path(db.path), Ceilings.from_json(task.ceilings))
        ceilings = ensure_ceilings(db.path, settings.device)
        rows = bench(task.entries, settings=replace(settings, db=""), ceilings=ceilings,
                     tuning=db.path)
    return {"fingerprint": fp, "rows": [r.to_json() for r in rows],
            "ceilings": ceilings.to_json()}
