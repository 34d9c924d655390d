"""Shared by the reliability tests: valid tuning data for this machine, and ways to spoil
a file (each a class of bad content the readers must survive, not a list of exploits)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from atrous.autotune.hardware import cpu_fingerprint
from atrous.autotune.lookup import problem_features, source_hash
from atrous.autotune.records import Record, Snapshot
from atrous.kernels.gap.spec import make_problem as gap_problem

GAP = gap_problem((1, 8, 6, 6), "float32", keepdims=True)
GAP_CONFIG = {"ROWS": 1, "SPLIT": 1, "threads": 1}


def gap(h: int):
    """A global-average-pool problem of height and width ``h``."""
    return gap_problem((1, 8, h, h), "float32", keepdims=True)


def tuned(problem: Any = GAP, config: dict | None = None, **over: Any) -> Record:
    """A fresh record for ``problem`` (this atrous's source hash)."""
    fields = dict(
        op=problem.op, backend="numba", key=problem.key, dtype=problem.dtype,
        layout=problem.layout, features=problem_features(problem),
        config=dict(config or GAP_CONFIG), median_s=1e-4, p20_s=9e-5, p80_s=1.1e-4,
        default_config=dict(GAP_CONFIG), default_median_s=2e-4, runner_up_gap=0.1,
        validation_error=1e-7, strategy="exhaustive", seed=0, trials=4, failed=0, pruned=0,
        policy="cpu-warm-median-v1", source_hash=source_hash(problem.op, "numba"),
        tuned_at="2026-01-01T00:00:00+00:00", atrous_version="test")
    fields.update(over)
    return Record(**fields)


def document(*records: Record, fingerprint: dict | None = None) -> dict:
    """A tuning file's JSON holding ``records`` for one machine (default: this one)."""
    snap = Snapshot()
    for rec in records:
        snap.put(fingerprint or cpu_fingerprint(), rec)
    return snap.to_json()


def first_record(doc: dict) -> dict:
    """The JSON of the first record of the first machine in ``doc`` (to spoil in place)."""
    machine = next(iter(doc["machines"].values()))
    return next(iter(machine["records"].values()))


def spoiled_files() -> dict[str, bytes]:
    """A tuning file per kind of bad content, by name."""
    good = json.dumps(document(tuned())).encode()
    huge_int = json.dumps(document(tuned())).replace('"median_s": 0.0001',
                                                     '"median_s": ' + "9" * 5000)
    overflow = json.dumps(document(tuned())).replace('"median_s": 0.0001', '"median_s": 1e400')
    big_int = json.dumps(document(tuned())).replace('"median_s": 0.0001',
                                                    '"median_s": ' + str(10 ** 400))
    return {
        "invalid utf-8": b"\xff\xfe" + good[:40] + b"\x80\x81" + good[40:],
        "nested 100000 deep": b"[" * 100_000 + b"]" * 100_000,
        "5000-digit integer": huge_int.encode(),
        "1e400": overflow.encode(),
        "10**400": big_int.encode(),
        "NaN": good.replace(b'"median_s": 0.0001', b'"median_s": NaN'),
        "lone surrogate": good.replace(b'"strategy": "exhaustive"',
                                       b'"strategy": "\\ud800"'),
        "nested 900 deep in a record": good.replace(b'"trials": 4',
                                                    b'"trials": ' + b"[" * 900 + b"]" * 900),
        "truncated": good[: len(good) // 2],
        "empty": b"",
        "a list": b"[1, 2, 3]",
    }


def private_default(monkeypatch, folder: Path) -> None:
    """Point the default tuning database (and so its trial log, bench rows and ceilings)
    into ``folder``: a test never touches the user's real files."""
    from atrous.autotune import database, lookup

    path = folder / "default-cache" / "tuning.json"
    monkeypatch.setattr(database, "default_path", lambda: path)
    monkeypatch.setattr(lookup, "default_path", lambda: path)


def write(path: Path, content: bytes | str | dict | list) -> Path:
    """Write ``content`` (bytes, text or a JSON document) to ``path``; returns it."""
    if isinstance(content, dict | list):
        content = json.dumps(content)
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return path
