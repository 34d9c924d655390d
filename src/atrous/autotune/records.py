"""The tuning database's content as data: records, machines and snapshots, checked field by
field when read (an imported file is data, never code), and merged.

On disk (JSON)::

    {"format": "atrous-tuning", "schema_version": 1,
     "machines": {"<fingerprint id>": {"fingerprint": {...},
                                       "records": {"<backend>|<problem key>": {...}}}}}
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

FORMAT = "atrous-tuning"
SCHEMA_VERSION = 1
_SCALARS = (str, int, float, bool, type(None))


class SchemaError(ValueError):
    """A tuning file that is not valid data for this schema version."""


class UnknownSchemaError(SchemaError):
    """A tuning file of another schema version (e.g. written by a newer atrous)."""


def _scalar_dict(value: Any, what: str, limit: int = 64) -> dict[str, Any]:
    if not isinstance(value, dict) or len(value) > limit:
        raise SchemaError(f"{what} must be an object of at most {limit} entries")
    for k, v in value.items():
        if not isinstance(k, str) or not isinstance(v, _SCALARS):
            raise SchemaError(f"{what}: {k!r} must map to a number, string, bool or null")
        if isinstance(v, float) and not math.isfinite(v):
            raise SchemaError(f"{what}: {k!r} is not finite")
    return dict(value)


def _seconds(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not (
            math.isfinite(value) and value >= 0):
        raise SchemaError(f"{what} must be a finite number >= 0, got {value!r}")
    return float(value)


def _optional_seconds(value: Any, what: str) -> float | None:
    return None if value is None else _seconds(value, what)


def _string(value: Any, what: str) -> str:
    if not isinstance(value, str) or len(value) > 2000:
        raise SchemaError(f"{what} must be a string, got {type(value).__name__}")
    return value


def _count(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise SchemaError(f"{what} must be an integer >= 0, got {value!r}")
    return value


@dataclass(frozen=True)
class Record:
    """The tuned config of one (op, backend, problem key) on one machine, and its evidence.

    Times are seconds per call under ``policy``; ``default_median_s`` is the heuristic
    default config's, measured in the same run; ``runner_up_gap`` is how much slower the
    second-best finalist was (0.05 = 5 %); ``source_hash`` identifies the backend's kernel
    source the config was tuned for (a different hash makes the record stale).
    """

    op: str
    backend: str
    key: str
    dtype: str
    layout: str
    features: dict[str, Any]
    config: dict[str, Any]
    median_s: float
    p20_s: float
    p80_s: float
    default_config: dict[str, Any]
    default_median_s: float | None
    runner_up_gap: float | None
    validation_error: float
    strategy: str
    seed: int
    trials: int
    failed: int
    pruned: int
    policy: str
    source_hash: str
    tuned_at: str
    atrous_version: str
    compile_s: float | None = None

    @property
    def slot(self) -> str:
        """Where the record lives inside its machine: ``"<backend>|<problem key>"``."""
        return f"{self.backend}|{self.key}"

    @property
    def speedup(self) -> float | None:
        """Default config's median over the tuned one's (1.0 when the default was kept)."""
        if self.default_median_s is None or self.median_s <= 0:
            return None
        return self.default_median_s / self.median_s

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Any) -> Record:
        """Check ``data`` field by field; SchemaError names the first bad field."""
        if not isinstance(data, dict):
            raise SchemaError("a record must be an object")
        known = {f.name for f in fields(cls)}
        missing = sorted(known - set(data) - {"compile_s"})
        if missing:
            raise SchemaError(f"record misses {missing}")
        text = {k: _string(data[k], k) for k in ("op", "backend", "key", "dtype", "layout",
                                                 "strategy", "policy", "source_hash",
                                                 "tuned_at", "atrous_version")}
        return cls(
            **text,
            features=_scalar_dict(data["features"], "features"),
            config=_scalar_dict(data["config"], "config"),
            default_config=_scalar_dict(data["default_config"], "default_config"),
            median_s=_seconds(data["median_s"], "median_s"),
            p20_s=_seconds(data["p20_s"], "p20_s"),
            p80_s=_seconds(data["p80_s"], "p80_s"),
            default_median_s=_optional_seconds(data["default_median_s"], "default_median_s"),
            runner_up_gap=_optional_seconds(data["runner_up_gap"], "runner_up_gap"),
            validation_error=_seconds(data["validation_error"], "validation_error"),
            seed=_count(data["seed"], "seed"),
            trials=_count(data["trials"], "trials"),
            failed=_count(data["failed"], "failed"),
            pruned=_count(data["pruned"], "pruned"),
            compile_s=_optional_seconds(data.get("compile_s"), "compile_s"),
        )


@dataclass
class Machine:
    """One fingerprinted machine (or GPU) and its records by slot."""

    fingerprint: dict[str, Any]
    records: dict[str, Record] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return self.fingerprint["id"]

    @property
    def family(self) -> str:
        return self.fingerprint["family"]


def _fingerprint(data: Any, machine_id: str) -> dict[str, Any]:
    if not isinstance(data, dict) or len(data) > 64:
        raise SchemaError("fingerprint must be an object")
    for k, v in data.items():
        nested = isinstance(v, dict) and all(
            isinstance(a, str) and isinstance(b, _SCALARS) for a, b in v.items())
        if not isinstance(k, str) or not (isinstance(v, _SCALARS) or nested):
            raise SchemaError(f"fingerprint field {k!r} must be a scalar or a flat object")
    if data.get("id") != machine_id or not isinstance(data.get("family"), str):
        raise SchemaError(f"machine {machine_id!r}: fingerprint id/family missing or mismatched")
    return dict(data)


@dataclass
class Snapshot:
    """The whole database in memory: machines by fingerprint id."""

    machines: dict[str, Machine] = field(default_factory=dict)

    def put(self, fingerprint: Mapping[str, Any], record: Record) -> None:
        """Store ``record`` for the machine of ``fingerprint`` (replacing its slot)."""
        machine = self.machines.setdefault(fingerprint["id"], Machine(dict(fingerprint)))
        machine.fingerprint = dict(fingerprint)
        machine.records[record.slot] = record

    def records(self) -> list[tuple[Machine, Record]]:
        """Every (machine, record) pair, machines and slots in sorted order."""
        return [(m, m.records[s]) for _, m in sorted(self.machines.items())
                for s in sorted(m.records)]

    def merged(self, other: Snapshot) -> Snapshot:
        """A new snapshot with both machines' records; for a slot in both, the record tuned
        last (``tuned_at``) wins."""
        out = Snapshot({k: Machine(dict(m.fingerprint), dict(m.records))
                        for k, m in self.machines.items()})
        for mid, machine in other.machines.items():
            mine = out.machines.setdefault(mid, Machine(dict(machine.fingerprint)))
            for slot, rec in machine.records.items():
                if slot not in mine.records or rec.tuned_at >= mine.records[slot].tuned_at:
                    mine.records[slot] = rec
        return out

    def only(self, keep: Callable[[Machine], bool]) -> Snapshot:
        """The machines for which ``keep`` is true."""
        return Snapshot({k: m for k, m in self.machines.items() if keep(m)})

    def to_json(self) -> dict[str, Any]:
        return {"format": FORMAT, "schema_version": SCHEMA_VERSION, "machines": {
            mid: {"fingerprint": m.fingerprint,
                  "records": {s: r.to_json() for s, r in sorted(m.records.items())}}
            for mid, m in sorted(self.machines.items())}}

    @classmethod
    def from_json(cls, data: Any, *, strict: bool = True) -> tuple[Snapshot, list[str]]:
        """Check a parsed file. Returns the snapshot and the problems found.

        The envelope (format, schema version) must be right in any case: SchemaError
        otherwise. A bad machine or record is a SchemaError when ``strict``; otherwise it
        is dropped and listed in the problems.
        """
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise SchemaError(f"not an atrous tuning file (no \"format\": \"{FORMAT}\")")
        version = data.get("schema_version")
        if version != SCHEMA_VERSION:
            raise UnknownSchemaError(f"schema version {version!r}; this atrous reads version"
                                     f" {SCHEMA_VERSION}")
        machines = data.get("machines")
        if not isinstance(machines, dict):
            raise SchemaError("\"machines\" must be an object")
        snapshot, problems = cls(), []
        for mid, body in machines.items():
            try:
                if not isinstance(body, dict) or not isinstance(body.get("records"), dict):
                    raise SchemaError("a machine needs \"fingerprint\" and \"records\" objects")
                machine = Machine(_fingerprint(body.get("fingerprint"), mid))
            except SchemaError as exc:
                if strict:
                    raise
                problems.append(f"machine {mid!r}: {exc}")
                continue
            for slot, raw in body["records"].items():
                try:
                    record = Record.from_json(raw)
                    if record.slot != slot:
                        raise SchemaError(f"slot {slot!r} does not match its record")
                except SchemaError as exc:
                    if strict:
                        raise SchemaError(f"machine {mid!r}, {slot!r}: {exc}") from exc
                    problems.append(f"machine {mid!r}, {slot!r}: {exc}")
                    continue
                machine.records[slot] = record
            snapshot.machines[mid] = machine
        return snapshot, problems
