"""Which config a call runs: the tuning database, consulted at call time, never benchmarking.

For a problem and backend, in order:

1. ``exact``: this machine's fingerprint and the problem's key;
2. ``nearest``: this machine's tuned problem of the same op, backend, dtype and layout
   closest in log-distance of sizes (other parameters that differ add a penalty);
3. ``family``: the same, on machines of the same family (``x86_64:znver4:avx512``,
   ``cuda:sm_90``), exact key first;
4. ``default``: the spec's heuristic default.

A record is used only when its kernel source hash matches the installed kernel (else it
is stale) and its config is valid in the problem's Space. The database is read once and
re-read when the file changes (one ``stat`` per call); answers are memoised per problem.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from atrous.autotune.database import Database, default_path, report_once, signature
from atrous.autotune.records import Record, Snapshot
from atrous.core.op import Problem
from atrous.core.registry import op
from atrous.core.space import Config

log = logging.getLogger("atrous.tuning")
CATEGORY_PENALTY = 1.0  # distance added per differing non-size parameter (e.g. activation)
_MEMO_LIMIT = 4096


@dataclass(frozen=True)
class Choice:
    """The config a call runs and why: ``source`` is "given", "exact", "nearest", "family"
    or "default"; ``detail`` says it in words."""

    config: Config
    source: str
    detail: str
    machine: str | None = None  # fingerprint id of the record used
    key: str | None = None  # problem key of the record used
    distance: float | None = None


@dataclass
class _Settings:
    path: Path | None = None  # None: the default path
    enabled: bool = True


_settings = _Settings()


def use_tuning(path: str | Path | bool | None = None) -> Path | None:
    """Point atrous at a tuning file for the rest of this process.

    Args:
        path: a tuning file; None for the default (the user cache directory); False to
            use no tuning data at all (heuristic defaults only).

    Returns:
        The file now in use (None when tuning is off).
    """
    if path is False:
        _settings.enabled, _settings.path = False, None
        return None
    if path is True or (path is not None and not isinstance(path, str | Path)):
        raise TypeError(f"use_tuning takes a path, None or False, got {path!r}")
    _settings.enabled = True
    _settings.path = None if path is None else Path(path).expanduser()
    return tuning_path()


def tuning_path() -> Path | None:
    """The tuning file lookups read (None when tuning is off)."""
    if not _settings.enabled:
        return None
    return _settings.path or default_path()


@functools.cache
def source_hash(op_name: str, backend: str) -> str:
    """16 hex digits of a hash of every source file that decides ``backend``'s kernels for
    ``op_name``: the op's ``source_modules(backend)`` (its spec and backend module) and every
    module of the same package they import (atrous.autotune.sources; read, not imported, so
    no GPU stack is loaded). An edit to any of them changes it. Computed once per process."""
    from atrous.autotune.sources import kernel_sources

    digest = hashlib.sha256()
    for name, path in kernel_sources(op(op_name).source_modules(backend)):
        digest.update(name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def problem_features(problem: Problem) -> dict[str, Any]:
    """The problem's parameters as a flat dict (pairs flattened to ``name_0``, ``name_1``),
    without dtype and layout: numbers are sizes, the rest categories."""
    features: dict[str, Any] = {}
    for f in dataclasses.fields(problem):
        if f.name in ("dtype", "layout"):
            continue
        value = getattr(problem, f.name)
        if isinstance(value, tuple):
            features.update({f"{f.name}_{i}": v for i, v in enumerate(value)})
        else:
            features[f.name] = value
    return features


def _size(value: Any) -> float | None:
    """``value`` as a size (a finite number >= 0), or None when it is a category."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        size = float(value)
    except OverflowError:  # an integer past float range: not a size atrous can compare
        return None
    return size if math.isfinite(size) and size >= 0 else None


def distance(a: dict[str, Any], b: dict[str, Any]) -> float:
    """Sum of |log((x + 1) / (y + 1))| over sizes, plus a penalty per differing category
    (a value that is not a finite size >= 0 counts as a category)."""
    total = 0.0
    for name in a.keys() | b.keys():
        x, y = _size(a.get(name)), _size(b.get(name))
        if x is not None and y is not None:
            total += abs(math.log1p(x) - math.log1p(y))
        elif a.get(name) != b.get(name):
            total += CATEGORY_PENALTY
    return total


class _Index:
    """A snapshot arranged for lookups."""

    def __init__(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot
        self.buckets: dict[tuple[str, ...], list[Record]] = {}
        self.families: dict[str, list[str]] = {}
        for mid, machine in sorted(snapshot.machines.items()):
            self.families.setdefault(machine.family, []).append(mid)
            for rec in machine.records.values():
                bucket = (mid, rec.op, rec.backend, rec.dtype, rec.layout)
                self.buckets.setdefault(bucket, []).append(rec)

    def exact(self, mid: str, backend: str, key: str) -> Record | None:
        machine = self.snapshot.machines.get(mid)
        return None if machine is None else machine.records.get(f"{backend}|{key}")

    def bucket(self, mid: str, problem: Problem, backend: str) -> list[Record]:
        return self.buckets.get((mid, problem.op, backend, problem.dtype, problem.layout), [])


_loaded: dict[Path, tuple[Any, _Index]] = {}
_memo: dict[tuple[Any, ...], Choice] = {}


def _index(path: Path) -> tuple[Any, _Index] | None:
    sig = signature(path)
    if sig is None:
        return None
    cached = _loaded.get(path)
    if cached is None or cached[0] != sig:
        try:
            snapshot = Database(path).read()
        except Exception as exc:  # a lookup never fails: whatever the file holds
            report_once(path, f"unusable ({type(exc).__name__}: {exc}); ignored")
            snapshot = Snapshot()
        cached = (sig, _Index(snapshot))
        _loaded[path] = cached
    return cached


def find(problem: Problem, backend: str, device: str = "cpu") -> Choice:
    """The config to run ``problem`` on ``backend`` (arrays on ``device``), and where it
    came from. Never measures anything."""
    path = tuning_path()
    loaded = _index(path) if path is not None else None
    if loaded is None:
        return _default(problem, backend, "no tuning file" if path else "tuning is off")
    sig, index = loaded
    try:
        memo_key: tuple[Any, ...] | None = (path, sig, problem, backend, device)
        hit = _memo.get(memo_key)
    except TypeError:  # an unhashable problem: no memo
        memo_key, hit = None, None
    if hit is not None:
        return hit
    choice = _search(problem, backend, device, index)
    if memo_key is not None:
        if len(_memo) >= _MEMO_LIMIT:
            _memo.clear()
        _memo[memo_key] = choice
    log.debug("%s on %s: %s config %s (%s)", problem.key, backend, choice.source,
              choice.config, choice.detail)
    return choice


def _default(problem: Problem, backend: str, why: str) -> Choice:
    return Choice(op(problem.op).default_config(problem, backend), "default",
                  f"heuristic default ({why})")


def _listed(space: Any, config: dict[str, Any]) -> bool:
    """True when every value of ``config`` is one the Space lists, of the same type:
    ``Space.allows`` compares with ``==``, so a record's ``true`` or ``4.0`` would pass
    for 1 or 4 and reach a kernel as a bool or a float."""
    return all(any(type(v) is type(a) and v == a for a in space.params.get(k, ()))
               for k, v in config.items())


def _search(problem: Problem, backend: str, device: str, index: _Index) -> Choice:
    from atrous.autotune.hardware import fingerprint

    fp = fingerprint(backend, device)
    space = op(problem.op).space(problem, backend)
    fresh = source_hash(problem.op, backend)
    features = problem_features(problem)

    def usable(rec: Record | None) -> bool:
        return (rec is not None and rec.source_hash == fresh and space.allows(rec.config)
                and _listed(space, rec.config))

    def nearest(mids: list[str]) -> tuple[Record, str, float] | None:
        ranked = sorted(((distance(features, r.features), r.key, mid, r)
                         for mid in mids for r in index.bucket(mid, problem, backend)),
                        key=lambda item: item[:3])
        return next(((r, mid, d) for d, _, mid, r in ranked if usable(r)), None)

    rec = index.exact(fp["id"], backend, problem.key)
    if usable(rec):
        return Choice(dict(rec.config), "exact", f"tuned for this problem on this machine"
                      f" ({fp['id']})", fp["id"], rec.key, 0.0)
    near = nearest([fp["id"]])
    if near:
        rec, mid, d = near
        return Choice(dict(rec.config), "nearest", f"tuned for {rec.key} on this machine"
                      f" (distance {d:.2f})", mid, rec.key, d)
    kin = [m for m in index.families.get(fp["family"], []) if m != fp["id"]]
    for mid in kin:
        rec = index.exact(mid, backend, problem.key)
        if usable(rec):
            return Choice(dict(rec.config), "family", f"tuned for this problem on machine"
                          f" {mid} of family {fp['family']}", mid, rec.key, 0.0)
    near = nearest(kin)
    if near:
        rec, mid, d = near
        return Choice(dict(rec.config), "family", f"tuned for {rec.key} on machine {mid} of"
                      f" family {fp['family']} (distance {d:.2f})", mid, rec.key, d)
    return _default(problem, backend, f"no usable record for this op, dtype and layout on"
                    f" this machine or its family {fp['family']}")
