"""Where benchmark rows and ceilings live: files beside the tuning database.

For a database ``<dir>/tuning.json`` (``atrous.autotune.database``'s default or ``--db``):

- ``<dir>/tuning.bench.json``: every benchmark row, all runs and machines (tidy, long
  format), and ``<dir>/tuning.bench.csv``, the same rows as CSV;
- ``<dir>/tuning.ceilings.json``: each machine's measured ceilings, by fingerprint id.

Files are written atomically (a temporary file renamed over the old one) under a lock, so
two writers both land. Reading is lenient: a missing file is empty, a corrupt file or bad
row is reported (a warning naming the file) and skipped.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from atrous.report.ceilings import Ceilings
from atrous.report.rows import BenchRow, from_document, to_csv, to_document

CEILINGS_FORMAT = "atrous-ceilings"


class ReportDataWarning(UserWarning):
    """A benchmark or ceilings file could not be (fully) used."""


def database_path(db: str | Path | None) -> Path:
    """The tuning database file: ``db``, or the tuner's default location."""
    from atrous.autotune.database import Database

    return Database(db).path


def sidecar(db: str | Path | None, suffix: str) -> Path:
    """``<database stem><suffix>`` beside the database (e.g. ``tuning.bench.json``)."""
    path = database_path(db)
    return path.with_name(path.name.removesuffix(".json") + suffix)


def bench_path(db: str | Path | None) -> Path:
    return sidecar(db, ".bench.json")


def ceilings_path(db: str | Path | None) -> Path:
    return sidecar(db, ".ceilings.json")


def trial_log_path(db: str | Path | None) -> Path:
    """The tuner's append-only trial log beside the database."""
    from atrous.autotune.database import Database

    return Database(database_path(db)).log_path


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` to a temporary file beside ``path``, then rename it over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(tmp, 0o644)  # mkstemp makes it private; these files are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def _locked(path: Path):
    """Hold ``<path>.lock`` (filelock, when installed; writers are rare and short, so
    without it the atomic rename alone keeps the file whole)."""
    try:
        from filelock import FileLock
    except ImportError:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".lock", timeout=120):
        yield


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, json.JSONDecodeError) as exc:
        warnings.warn(f"{path}: unreadable ({exc}); ignored", ReportDataWarning, stacklevel=3)
        return None


# ---------------------------------------------------------------------------- bench rows


def read_rows(path: Path) -> list[BenchRow]:
    """Every row of the rows file at ``path`` (bad rows skipped with a warning)."""
    data = _read_json(path)
    if data is None:
        return []
    try:
        rows, problems = from_document(data)
    except ValueError as exc:
        warnings.warn(f"{path}: {exc}; ignored", ReportDataWarning, stacklevel=2)
        return []
    if problems:
        warnings.warn(f"{path}: {len(problems)} bad rows skipped, first: {problems[0]}",
                      ReportDataWarning, stacklevel=2)
    return rows


def append_rows(path: Path, rows: Iterable[BenchRow]) -> None:
    """Add ``rows`` to the rows file at ``path`` and rewrite its CSV twin (``.csv``)."""
    new = list(rows)
    with _locked(path):
        everything = read_rows(path) + new
        write_text_atomic(path, json.dumps(to_document(everything), indent=0))
        write_text_atomic(path.with_suffix(".csv"), to_csv(everything))


# ------------------------------------------------------------------------------ ceilings


def read_ceilings(path: Path) -> dict[str, Ceilings]:
    """Stored ceilings by fingerprint id (bad entries skipped with a warning)."""
    data = _read_json(path)
    if data is None:
        return {}
    if not isinstance(data, dict) or data.get("format") != CEILINGS_FORMAT or not isinstance(
            data.get("machines"), dict):
        warnings.warn(f"{path}: not an atrous ceilings file; ignored", ReportDataWarning,
                      stacklevel=2)
        return {}
    out = {}
    for machine, body in data["machines"].items():
        try:
            out[str(machine)] = Ceilings.from_json(body)
        except (ValueError, TypeError) as exc:
            warnings.warn(f"{path}: machine {machine!r}: {exc}; ignored", ReportDataWarning,
                          stacklevel=2)
    return out


def write_ceilings(path: Path, ceilings: Ceilings) -> None:
    """Store ``ceilings`` under its machine's fingerprint id (replacing older ones)."""
    with _locked(path):
        machines = {k: v.to_json() for k, v in read_ceilings(path).items()}
        machines[ceilings.machine] = ceilings.to_json()
        doc = {"format": CEILINGS_FORMAT, "schema_version": 1, "machines": machines}
        write_text_atomic(path, json.dumps(doc, indent=1))


def ensure_ceilings(db: str | Path | None, device: str = "cpu", *, remeasure: bool = False,
                    **sizes: Any) -> Ceilings:
    """This machine's ceilings for ``device`` from the ceilings file beside ``db``,
    measured (and stored) first when missing or when ``remeasure``."""
    from atrous.autotune.hardware import fingerprint
    from atrous.report.ceilings import measure

    fp = fingerprint("triton" if device.startswith("cuda") else "numba", device)
    path = ceilings_path(db)
    stored = read_ceilings(path).get(fp["id"])
    if stored is not None and stored.entries and not remeasure:
        return stored
    fresh = measure(fp, device, **sizes)
    write_ceilings(path, fresh)
    return fresh
