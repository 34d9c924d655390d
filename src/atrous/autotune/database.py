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
  both land, and a writer killed mid-write leaves the old file intact. A symbolic link is
  followed (its target is written and locked); a file keeps its mode; new files get the
  umask's mode. A corrupt file is moved aside under a name no other backup has
  (``<name>.corrupt``, ``<name>.corrupt.1``, ...) before it is replaced; a file of a newer
  schema version is never overwritten.
- Any content is data (atrous.autotune.untrusted): invalid UTF-8, deep nesting, huge
  numbers make a file corrupt or a record bad, never raise from a read.
- Export, import and merge read other files strictly (every field checked as data).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import stat
import tempfile
import warnings
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from atrous.autotune.records import Record, SchemaError, Snapshot, UnknownSchemaError
from atrous.autotune.untrusted import BadData, read_json
from atrous.core.paths import DATABASE_NAME, default_database_path

if TYPE_CHECKING:
    from filelock import FileLock

log = logging.getLogger("atrous.tuning")
FILE_NAME = DATABASE_NAME
LOCK_TIMEOUT_S = 120.0
_reported: set[tuple[str, str]] = set()


class TuningFileWarning(UserWarning):
    """A tuning file could not be used (corrupt, other schema, bad records)."""


class DatabaseError(RuntimeError):
    """A tuning file that must not be written or cannot be read as asked."""


def default_path() -> Path:
    """``tuning.json`` in the user's cache folder (see :func:`atrous.core.paths.cache_root`)."""
    return default_database_path()


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
        data = read_json(path)
    except BadData as exc:
        raise SchemaError(f"{path}: {exc}") from None
    try:
        return Snapshot.from_json(data, strict=True)[0]
    except SchemaError as exc:
        raise type(exc)(f"{path}: {exc}") from None


def target(path: Path | str) -> Path:
    """The file a write to ``path`` must change: ``path`` itself, or, when it is a
    symbolic link (a shared database linked into place), the file it points to."""
    path = Path(path)
    return path.resolve() if path.is_symlink() else path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text(path: Path | str, text: str) -> None:
    """Write ``text`` to ``path`` atomically: a temporary file in the same directory,
    flushed to disk, then renamed over ``path``.

    A symbolic link stays a link (its target is written); an existing file keeps its
    mode; a new file gets the process's usual mode (0666 less the umask), not mkstemp's
    private 0600, since tuning files and exports are meant to be shared.
    """
    path = target(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except FileNotFoundError:
        mode = 0o666 & ~_umask()
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            os.fchmod(f.fileno(), mode)
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write_file(path: Path | str, snapshot: Snapshot) -> None:
    """Write ``snapshot`` to ``path`` atomically (see :func:`write_text`)."""
    write_text(path, json.dumps(snapshot.to_json(), indent=1, allow_nan=False))


def move_aside(path: Path, suffix: str = ".corrupt") -> Path:
    """Rename ``path`` to ``<name><suffix>``, or ``<name><suffix>.<n>`` with the first
    free ``n``, never over an earlier backup; returns the new name."""
    if not path.is_file():  # a device, a folder: not a file atrous may move
        raise DatabaseError(f"{path} is not a regular file; not moving or replacing it")
    for n in range(10_000):
        backup = path.with_name(path.name + suffix + (f".{n}" if n else ""))
        try:
            os.link(path, backup)  # fails when the name is taken: no backup is overwritten
        except FileExistsError:
            continue
        except OSError:  # no hard links here: check, then rename
            if backup.exists():
                continue
            os.replace(path, backup)
            return backup
        os.unlink(path)
        return backup
    raise DatabaseError(f"{path}: too many corrupt backups beside it; remove some")


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

        path = target(self.path)  # every writer of a linked file takes the same lock
        path.parent.mkdir(parents=True, exist_ok=True)
        return FileLock(str(path) + ".lock", timeout=LOCK_TIMEOUT_S)

    def read(self) -> Snapshot:
        """The database, leniently: problems are reported once and read as absent."""
        return self._read(report=True)[0]

    def _read(self, report: bool) -> tuple[Snapshot, str | None]:
        """(snapshot, why the whole file was unusable or None): never raises for content;
        ``why`` is "corrupt", "schema" (a newer atrous's file) or "unreadable"."""
        try:
            data = read_json(self.path)
        except FileNotFoundError:
            return Snapshot(), None
        except BadData as exc:
            return self._unusable(f"corrupt, {exc}; ignored", report)
        except OSError as exc:
            return self._unusable(f"cannot be read ({exc})", report, "unreadable")
        try:
            snapshot, problems = Snapshot.from_json(data, strict=False)
        except UnknownSchemaError as exc:
            return self._unusable(f"{exc}; ignored", report, "schema")
        except (SchemaError, RecursionError) as exc:
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
        A corrupt file is moved aside first (``<name>.corrupt``, or ``.corrupt.<n>`` when
        that is taken); a newer atrous's file or one that cannot be read raises
        DatabaseError and is left alone.
        """
        with self.lock():
            current, unusable = self._read(report=True)
            if unusable == "schema":
                raise DatabaseError(f"{self.path} has another schema version; not overwriting"
                                    " it (move it away, or `atrous db clear` to delete it)")
            if unusable == "unreadable":
                raise DatabaseError(f"{self.path} cannot be read; not overwriting it")
            if unusable == "corrupt":
                backup = move_aside(target(self.path))
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
