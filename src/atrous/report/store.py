"""Where benchmark rows and ceilings live: files beside the tuning database.

For a database ``<dir>/tuning.json`` (``atrous.autotune.database``'s default or ``--db``):

- ``<dir>/tuning.bench.json``: every benchmark row, all runs and machines (tidy, long
  format), and ``<dir>/tuning.bench.csv``, the same rows as CSV;
- ``<dir>/tuning.ceilings.json``: each machine's measured ceilings, by fingerprint id.

Files are written atomically (a temporary file renamed over the old one) under a lock, so
two writers both land. Reading is lenient and treats the content as untrusted data
(atrous.autotune.untrusted): a missing file is empty, a corrupt file or bad row is
reported (a warning naming the file) and skipped, never raised.
"""

from __future__ import annotations

import contextlib
import json
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from atrous.autotune import untrusted
from atrous.autotune.records import machine_id_ok
from atrous.autotune.untrusted import BadData, read_json
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
    """Write ``text`` to a temporary file beside ``path``, then rename it over ``path``
    (atrous.autotune.database.write_text: a symlink stays a link, an existing file keeps
    its mode, a new one gets the umask's)."""
    from atrous.autotune.database import write_text

    write_text(path, text)


@contextlib.contextmanager
def _locked(path: Path):
    """Hold ``<path>.lock`` (filelock, when installed; writers are rare and short, so
    without it the atomic rename alone keeps the file whole)."""
    try:
        from filelock import FileLock
    except ImportError:
        yield
        return
    from atrous.autotune.database import target

    path = target(path)  # a linked file: every writer locks beside the shared target
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".lock", timeout=120):
        yield


def _read_json(path: Path) -> tuple[Any, bool]:
    """(the parsed document or None, whether the file is there but corrupt)."""
    try:
        return read_json(path), False
    except FileNotFoundError:
        return None, False
    except BadData as exc:
        warnings.warn(f"{path}: unreadable, corrupt ({exc}); ignored", ReportDataWarning,
                      stacklevel=3)
        return None, True
    except OSError as exc:
        warnings.warn(f"{path}: unreadable ({exc}); ignored", ReportDataWarning, stacklevel=3)
        return None, False


def _keep_corrupt(path: Path) -> None:
    """Move a corrupt file aside (under a name no earlier backup has) before it is
    replaced, so its content is not lost."""
    from atrous.autotune.database import move_aside, target

    backup = move_aside(target(path))
    warnings.warn(f"{path}: corrupt; moved to {backup}", ReportDataWarning, stacklevel=3)


_TIMES = ("median_ms", "p20_ms", "p80_ms", "gbps", "gflops")


def _row_problem(row: BenchRow) -> str | None:
    """Why ``row`` cannot be shown (None when it can): text that is not valid UTF-8, a
    time that is not positive (reports divide by them), a count out of range, or a config
    that is not a flat JSON object."""
    if not all(untrusted.scalar(v) for v in row.to_json().values()):
        return "text that is not valid UTF-8 or a number out of range"
    for name in _TIMES:
        value = getattr(row, name)
        if value is not None and not value > 0:
            return f"{name} must be > 0, got {value!r}"
    if row.ceiling_fraction is not None and not row.ceiling_fraction >= 0:
        return f"ceiling_fraction must be >= 0, got {row.ceiling_fraction!r}"
    if any(not 0 <= getattr(row, n) <= untrusted.MAX_ABS_INT
           for n in ("flops", "work_flops", "bytes")):
        return "flops, work_flops and bytes must be integers >= 0"
    if row.config:
        try:
            config = untrusted.parse_json(row.config)
        except BadData as exc:
            return f"config: {exc}"
        if not isinstance(config, dict) or not all(
                untrusted.scalar(k) and untrusted.scalar(v) for k, v in config.items()):
            return "config must be a flat JSON object"
    return None


# ---------------------------------------------------------------------------- bench rows


def read_rows(path: Path) -> list[BenchRow]:
    """Every row of the rows file at ``path`` (bad rows skipped with a warning)."""
    return _rows(path)[0]


def _rows(path: Path) -> tuple[list[BenchRow], bool]:
    """(the usable rows, whether the whole file is corrupt)."""
    data, corrupt = _read_json(path)
    if data is None:
        return [], corrupt
    try:
        rows, problems = from_document(data)
    except (ValueError, TypeError, OverflowError, RecursionError) as exc:
        warnings.warn(f"{path}: {exc}; ignored", ReportDataWarning, stacklevel=3)
        return [], True
    kept = []
    for row in rows:
        why = _row_problem(row)
        if why is None:
            kept.append(row)
        else:
            problems.append(f"row of {untrusted.short(row.name)}: {why}")
    rows = kept
    if problems:
        warnings.warn(f"{path}: {len(problems)} bad rows skipped, first: {problems[0]}",
                      ReportDataWarning, stacklevel=3)
    return rows, False


def append_rows(path: Path, rows: Iterable[BenchRow]) -> None:
    """Add ``rows`` to the rows file at ``path`` and rewrite its CSV twin (``.csv``); a
    corrupt rows file is moved aside first."""
    new = list(rows)
    with _locked(path):
        old, corrupt = _rows(path)
        if corrupt:
            _keep_corrupt(path)
        everything = old + new
        write_text_atomic(path, json.dumps(to_document(everything), indent=0))
        write_text_atomic(path.with_suffix(".csv"), to_csv(everything))


# ------------------------------------------------------------------------------ ceilings


def read_ceilings(path: Path) -> dict[str, Ceilings]:
    """Stored ceilings by fingerprint id (bad entries skipped with a warning)."""
    return _ceilings(path)[0]


def _ceilings(path: Path) -> tuple[dict[str, Ceilings], bool]:
    """(the usable ceilings by fingerprint id, whether the whole file is corrupt)."""
    data, corrupt = _read_json(path)
    if data is None:
        return {}, corrupt
    if not isinstance(data, dict) or data.get("format") != CEILINGS_FORMAT or not isinstance(
            data.get("machines"), dict):
        warnings.warn(f"{path}: not an atrous ceilings file; ignored", ReportDataWarning,
                      stacklevel=3)
        return {}, True
    out = {}
    for machine, body in data["machines"].items():
        try:
            if not machine_id_ok(machine):
                raise ValueError("not a machine id")
            ceilings = Ceilings.from_json(body)
            _check_ceilings(ceilings)
            out[machine] = ceilings
        except (ValueError, TypeError, OverflowError, RecursionError) as exc:
            warnings.warn(f"{path}: machine {untrusted.short(machine)}: {exc}; ignored",
                          ReportDataWarning, stacklevel=3)
    return out, False


def _check_ceilings(c: Ceilings) -> None:
    """ValueError unless every stored value of ``c`` is printable, finite data."""
    texts = [c.machine, c.device, c.measured_at, *(e.name for e in c.entries),
             *(e.method for e in c.entries), *(e.dtype or "" for e in c.entries)]
    if not all(untrusted.scalar(t) for t in texts) or not untrusted.is_number(c.seconds):
        raise ValueError("ceilings hold text that is not valid UTF-8 or a number not finite")
    for k, v in c.fingerprint.items():
        flat = isinstance(v, dict) and len(v) <= 64 and all(
            untrusted.scalar(a) and untrusted.scalar(b) for a, b in v.items())
        if not (untrusted.scalar(k) and (untrusted.scalar(v) or flat)):
            raise ValueError(f"fingerprint field {untrusted.short(k)} is not flat, finite data")


def write_ceilings(path: Path, ceilings: Ceilings) -> None:
    """Store ``ceilings`` under its machine's fingerprint id (replacing older ones)."""
    with _locked(path):
        stored, corrupt = _ceilings(path)
        if corrupt:
            _keep_corrupt(path)
        machines = {k: v.to_json() for k, v in stored.items()}
        machines[ceilings.machine] = ceilings.to_json()
        doc = {"format": CEILINGS_FORMAT, "schema_version": 1, "machines": machines}
        write_text_atomic(path, json.dumps(doc, indent=1))
