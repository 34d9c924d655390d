"""The append-only trial log (JSON lines beside the database): every measured candidate is
appended as it finishes, so an interrupted `atrous tune` resumes where it stopped.

A *run* tunes one problem: lines ``{"type": "trial", "run": ..., ...}`` for each candidate
and ``{"type": "done", "run": ...}`` at the end. A later tuning of the same (machine,
backend, problem key, kernel source hash, timing policy) whose last run has no "done" line
resumes that run: its candidates are not measured again (and those that passed the
validation gate are validated again before they can win, see tuner.py). Lines a killed
writer cut short, and any line or trial that is not valid data, are skipped.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from filelock import FileLock

from atrous.autotune import untrusted
from atrous.autotune.search import FAILED, OK, PRUNED, Trial, config_key
from atrous.autotune.untrusted import BadData, parse_json


@dataclass(frozen=True)
class RunKey:
    """What a resumed run must share with the interrupted one."""

    machine: str
    backend: str
    key: str
    source_hash: str
    policy: str

    def matches(self, line: dict[str, Any]) -> bool:
        return all(line.get(k) == v for k, v in self.__dict__.items())


@dataclass
class Run:
    """One problem's tuning run: its id and the trials already measured (by config key)."""

    id: str
    done: dict[str, Trial] = field(default_factory=dict)

    @property
    def resumed(self) -> bool:
        return bool(self.done)


_LONGEST_S = 1e7  # seconds: no measured call or compile takes months


def parse_trial(data: Any) -> Trial:
    """The Trial of a trial-log line's ``"trial"`` object, every field checked as data
    first (finite numbers of sane size, text, a flat config); ValueError otherwise."""
    if not isinstance(data, dict):
        raise BadData("a trial must be an object")
    if not isinstance(data.get("status"), str) or data["status"] not in (OK, PRUNED, FAILED):
        raise BadData("a trial's status must be ok, pruned or failed")
    config = data.get("config")
    if not isinstance(config, dict) or len(config) > 64 or not all(
            untrusted.scalar(k) and untrusted.scalar(v) for k, v in config.items()):
        raise BadData("a trial's config must be a flat object of scalars")
    if data.get("error") is not None:
        untrusted.number(data["error"], "error", minimum=0.0)
    if data.get("compile_s") is not None:
        untrusted.number(data["compile_s"], "compile_s", minimum=0.0, maximum=_LONGEST_S)
    untrusted.text(data.get("reason", ""), "reason")
    timing = data.get("timing")
    if timing is None and data.get("status") != FAILED:
        raise BadData("a measured trial needs its timing")
    if timing is not None:
        if not isinstance(timing, dict) or not isinstance(timing.get("times"), list) or not (
                0 < len(timing["times"]) <= 10_000):
            raise BadData("a trial's timing needs a list of 1 to 10000 times")
        for t in timing["times"]:
            if untrusted.number(t, "time", minimum=0.0, maximum=_LONGEST_S) == 0:
                raise BadData("a time must be > 0")  # plots and ratios divide by times
        untrusted.count(timing.get("calls"), "calls", minimum=1, maximum=1 << 32)
        if timing.get("first_call") is not None:
            untrusted.number(timing["first_call"], "first_call", minimum=0.0,
                             maximum=_LONGEST_S)
        untrusted.text(timing.get("policy"), "policy", 200)
        if not isinstance(timing.get("pruned", False), bool):
            raise BadData("pruned must be true or false")
    return Trial.from_json(data)


class TrialLog:
    """The JSON-lines trial log at ``path``."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)

    def _lock(self) -> FileLock:
        from atrous.autotune.database import target

        path = target(self.path)  # a linked log: lock beside the shared target
        path.parent.mkdir(parents=True, exist_ok=True)
        return FileLock(str(path) + ".lock", timeout=120)

    def _lines(self) -> list[dict[str, Any]]:
        try:
            with self.path.open("rb") as f:
                raw = f.read().splitlines()
        except (FileNotFoundError, IsADirectoryError):
            return []
        lines = []
        for text in raw:
            try:
                line = parse_json(text)
            except BadData:
                continue  # cut short by a killed writer, or not a line atrous wrote
            if isinstance(line, dict):
                lines.append(line)
        return lines

    def start(self, key: RunKey) -> Run:
        """The unfinished run of ``key`` to resume, or a new run."""
        lines = [line for line in self._lines() if key.matches(line)]
        last = next((ln.get("run") for ln in reversed(lines) if ln.get("type") == "trial"), None)
        if last is None or any(ln.get("type") == "done" and ln.get("run") == last for ln in lines):
            return Run(uuid.uuid4().hex[:12])
        if not isinstance(last, str) or not last.isalnum() or len(last) > 64:
            return Run(uuid.uuid4().hex[:12])  # not a run id atrous wrote
        run = Run(last)
        for line in lines:
            if line.get("run") == last and line.get("type") == "trial":
                try:
                    trial = parse_trial(line.get("trial"))
                except (ValueError, RecursionError):  # not a trial atrous wrote
                    continue
                run.done[config_key(trial.config)] = trial
        return run

    def append(self, key: RunKey, run: Run, trial: Trial) -> None:
        """Log one measured candidate of ``run``."""
        self._write({"type": "trial", "run": run.id, **key.__dict__, "at": time.time(),
                     "trial": trial.to_json()})

    def finish(self, key: RunKey, run: Run) -> None:
        """Mark ``run`` complete: a later tuning of the same problem starts afresh."""
        self._write({"type": "done", "run": run.id, **key.__dict__, "at": time.time()})

    def extend(self, lines: list[dict[str, Any]]) -> None:
        """Append lines another process logged (a fleet worker's), in order, under the lock
        (the caller checks them first: see atrous.fleet.results)."""
        if lines:
            self._write(*lines)

    def _write(self, *lines: dict[str, Any]) -> None:
        text = "".join(json.dumps(line, separators=(",", ":")) + "\n" for line in lines)
        with self._lock(), self.path.open("ab") as f:
            if f.tell() > 0:  # a killed writer may have left a line without its newline
                with self.path.open("rb") as r:
                    r.seek(-1, os.SEEK_END)
                    if r.read(1) != b"\n":
                        text = "\n" + text
            f.write(text.encode())
            f.flush()
            os.fsync(f.fileno())
