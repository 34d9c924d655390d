"""The append-only trial log (JSON lines beside the database): every measured candidate is
appended as it finishes, so an interrupted `atrous tune` resumes where it stopped.

A *run* tunes one problem: lines ``{"type": "trial", "run": ..., ...}`` for each candidate
and ``{"type": "done", "run": ...}`` at the end. A later tuning of the same (machine,
backend, problem key, kernel source hash, timing policy) whose last run has no "done" line
resumes that run: its candidates are not measured again. Lines a killed writer cut short
are skipped.
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

from atrous.autotune.search import Trial, config_key


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


class TrialLog:
    """The JSON-lines trial log at ``path``."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)

    def _lock(self) -> FileLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        return FileLock(str(self.path) + ".lock", timeout=120)

    def _lines(self) -> list[dict[str, Any]]:
        try:
            raw = self.path.read_text(errors="replace").splitlines()
        except FileNotFoundError:
            return []
        lines = []
        for text in raw:
            try:
                line = json.loads(text)
            except json.JSONDecodeError:
                continue  # cut short by a killed writer
            if isinstance(line, dict):
                lines.append(line)
        return lines

    def start(self, key: RunKey) -> Run:
        """The unfinished run of ``key`` to resume, or a new run."""
        lines = [line for line in self._lines() if key.matches(line)]
        last = next((ln.get("run") for ln in reversed(lines) if ln.get("type") == "trial"), None)
        if last is None or any(ln.get("type") == "done" and ln.get("run") == last for ln in lines):
            return Run(uuid.uuid4().hex[:12])
        run = Run(last)
        for line in lines:
            if line.get("run") == last and line.get("type") == "trial":
                try:
                    trial = Trial.from_json(line["trial"])
                except (KeyError, ValueError):
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

    def _write(self, line: dict[str, Any]) -> None:
        text = json.dumps(line, separators=(",", ":")) + "\n"
        with self._lock(), self.path.open("ab") as f:
            if f.tell() > 0:  # a killed writer may have left a line without its newline
                with self.path.open("rb") as r:
                    r.seek(-1, os.SEEK_END)
                    if r.read(1) != b"\n":
                        text = "\n" + text
            f.write(text.encode())
            f.flush()
            os.fsync(f.fileno())
