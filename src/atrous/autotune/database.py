"""The tuning database on disk: one JSON file, read leniently, written atomically under a lock.

- Where: ``tuning.json`` in the user's cache directory (platformdirs; ``~/.cache/atrous``
  where platformdirs is missing), or any path given by argument, ``atrous.use_tuning`` or
  ``--db``. Beside it: ``<name>.lock`` (the writers' lock) and ``<name>.trials.jsonl``
  (the append-only trial log, see triallog.py).
- Reading for lookups never fails: a missing file is empty; a corrupt file, a file of
  another schema version or a bad record is reported once (a ``TuningFileWarning`` and a
  log line) and treated as empty, or the bad record as absent.
- Writing: under a file lock, the current file is re-read, changed and written to a
  temporary file that replaces the old one (``os.replace``), so two tuners writing at once
  both land, and a writer killed mid-write leaves the old file intact. A corrupt file is
  moved aside (``<name>.corrupt``) before it is replaced; a file of another schema version
  is never overwritten.
- Export, import and merge read other files strictly (every field checked as data).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
import warnings
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from atrous.autotune.records import Record, SchemaError, Snapshot, UnknownSchemaError

if TYPE_CHECKING:
    from filelock import FileLock

log = logging.getLogger("atrous.tuning")
FILE_NAME = "tuning.json"
LOCK_TIMEOUT_S = 120.0
_reported: set[tuple[str, str]] = set()


class TuningFileWarning(UserWarning):
    """A tuning file could not be used (corrupt, other schema, bad records)."""


class DatabaseError(RuntimeError):
    """A tuning file that must not be written or cannot be read as asked."""


def default_path() -> Path:
    """``tuning.json`` in the user's cache directory (platformdirs' ``user_cache_dir``), or
    ``$XDG_CACHE_HOME/atrous`` / ``~/.cache/atrous`` when platformdirs is not installed."""
    try:
        import platformdirs
    except ImportError:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "atrous"
    else:
        base = Path(platformdirs.user_cache_dir("atrous", appauthor=False))
    return base / FILE_NAME


def report_once(path: Path | str, message: str) -> None:
    """Warn about a tuning file once per process (per path and message)."""
    key = (str(path), message)
    if key in _reported:
        return
    _reported.add(key)
    log.warning("tuning file %s: %s", path, message)
    warnings.warn(f"tuning file {path}: {message}", TuningFileWarning, stacklevel=3)


def signature(path: Path) -> tuple[int, int, int] | None:
    """(inode, size, mtime in ns) of ``path``, or None when it does not exist: a change
    means the file was rewritten."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


def read_file(path: Path | str) -> Snapshot:
    """Read a tuning file strictly (for import and merge): SchemaError or OSError on any
    problem, with the file named."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise SchemaError(f"{path}: not valid JSON ({exc})") from exc
    try:
        return Snapshot.from_json(data, strict=True)[0]
    except SchemaError as exc:
        raise type(exc)(f"{path}: {exc}") from exc


def write_file(path: Path | str, snapshot: Snapshot) -> None:
    """Write ``snapshot`` to ``path`` atomically: a temporary file in the same directory,
    flushed to disk, then renamed over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(snapshot.to_json(), indent=1)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


class Database:
    """The tuning database at ``path`` (default: :func:`default_path`)."""

    def __init__(self, path: Path | str | None = None) -> None:
        self.path = Path(path) if path is not None else default_path()

    def __repr__(self) -> str:
        return f"Database({str(self.path)!r})"

    @property
    def log_path(self) -> Path:
        """The append-only trial log beside the database."""
        return self.path.with_name(self.path.name.removesuffix(".json") + ".trials.jsonl")

    def lock(self) -> FileLock:
        """The writers' lock (a ``.lock`` file beside the database)."""
        from filelock import FileLock  # imported here: lookups never need it

        self.path.parent.mkdir(parents=True, exist_ok=True)
        return FileLock(str(self.path) + ".lock", timeout=LOCK_TIMEOUT_S)

    def read(self) -> Snapshot:
        """The database, leniently: problems are reported once and read as absent."""
        return self._read(report=True)[0]

    def _read(self, report: bool) -> tuple[Snapshot, str | None]:
        """(snapshot, why the whole file was unusable or None)."""
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return Snapshot(), None
        except OSError as exc:
            return self._unusable(f"cannot be read ({exc})", report)
        try:
            snapshot, problems = Snapshot.from_json(json.loads(text), strict=False)
        except json.JSONDecodeError as exc:
            return self._unusable(f"corrupt, not valid JSON ({exc}); ignored", report)
        except UnknownSchemaError as exc:
            return self._unusable(f"{exc}; ignored", report, "schema")
        except SchemaError as exc:
            return self._unusable(f"corrupt ({exc}); ignored", report)
        if problems and report:
            report_once(self.path, f"{len(problems)} bad entr{'y' if len(problems) == 1 else 'ies'}"
                                   f" ignored, first: {problems[0]}")
        return snapshot, None

    def _unusable(self, message: str, report: bool,
                  why: str = "corrupt") -> tuple[Snapshot, str]:
        if report:
            report_once(self.path, message)
        return Snapshot(), why

    def update(self, change: Callable[[Snapshot], Snapshot | None]) -> Snapshot:
        """Apply ``change`` to the current file under the lock and write the result atomically.

        ``change`` may modify the snapshot in place (returning None) or return a new one.
        A corrupt file is moved aside to ``<name>.corrupt`` first; a file of another schema
        version raises DatabaseError and is left alone.
        """
        with self.lock():
            current, unusable = self._read(report=True)
            if unusable == "schema":
                raise DatabaseError(f"{self.path} has another schema version; not overwriting"
                                    " it (move it away, or `atrous db clear` to delete it)")
            if unusable == "corrupt":
                backup = self.path.with_name(self.path.name + ".corrupt")
                os.replace(self.path, backup)
                log.warning("moved the corrupt tuning file %s to %s", self.path, backup)
            result = change(current)
            snapshot = current if result is None else result
            write_file(self.path, snapshot)
            return snapshot

    def put(self, fingerprint: Mapping[str, Any], record: Record) -> None:
        """Store one tuned record for the machine of ``fingerprint``."""
        self.update(lambda s: s.put(fingerprint, record))

    def export(self, dest: Path | str, machines: Iterable[str] | None = None) -> Snapshot:
        """Write the machines with ids in ``machines`` (all when None) to ``dest``."""
        wanted = None if machines is None else set(machines)
        snapshot = self.read().only(lambda m: wanted is None or m.id in wanted)
        write_file(dest, snapshot)
        return snapshot

    def import_files(self, sources: Iterable[Path | str]) -> int:
        """Merge tuning files into the database (each read strictly: nothing is written
        when one is invalid); returns the number of records imported."""
        incoming = Snapshot()
        for source in sources:
            incoming = incoming.merged(read_file(source))
        self.update(lambda s: s.merged(incoming))
        return len(incoming.records())

    def clear(self, machine: str | None = None) -> int:
        """Delete the records of ``machine`` (an id), or, when None, the whole database and
        its trial log; returns the number of records removed."""
        if machine is not None:
            removed = 0

            def drop(s: Snapshot) -> None:
                nonlocal removed
                gone = s.machines.pop(machine, None)
                removed = len(gone.records) if gone else 0

            self.update(drop)
            return removed
        with self.lock():
            removed = len(self._read(report=False)[0].records())
            for p in (self.path, self.log_path):
                with contextlib.suppress(FileNotFoundError):
                    p.unlink()
        return removed


def merge_files(dest: Path | str, sources: Iterable[Path | str]) -> Snapshot:
    """Merge tuning files (read strictly) into a new file ``dest``; for the same machine and
    slot the record tuned last wins."""
    merged = Snapshot()
    for source in sources:
        merged = merged.merged(read_file(source))
    write_file(dest, merged)
    return merged
