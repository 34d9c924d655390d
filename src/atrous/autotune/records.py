"""The tuning database's content as data: records, machines and snapshots, checked field by
field when read (an imported file is data, never code), and merged.

On disk (JSON)::

    {"format": "atrous-tuning", "schema_version": 1,
     "machines": {"<fingerprint id>": {"fingerprint": {...},
                                       "records": {"<backend>|<problem key>": {...}}}}}
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from atrous.autotune import untrusted
from atrous.autotune.untrusted import BadData

FORMAT = "atrous-tuning"
SCHEMA_VERSION = 1


class SchemaError(ValueError):
    """A tuning file that is not valid data for this schema version."""


class UnknownSchemaError(SchemaError):
    """A tuning file of another schema version (e.g. written by a newer atrous)."""


def _checked(check: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run one of atrous.autotune.untrusted's checks, its BadData as a SchemaError."""
    try:
        return check(*args, **kwargs)
    except BadData as exc:
        raise SchemaError(str(exc)) from None


def _scalar_dict(value: Any, what: str, limit: int = 64) -> dict[str, Any]:
    if not isinstance(value, dict) or len(value) > limit:
        raise SchemaError(f"{what} must be an object of at most {limit} entries")
    for k, v in value.items():
        _checked(untrusted.text, k, f"{what} key", 200)
        if not untrusted.scalar(v):
            raise SchemaError(f"{what}: {k!r} must map to a finite number, string, bool or"
                              " null")
    return dict(value)


def _seconds(value: Any, what: str) -> float:
    return _checked(untrusted.number, value, what, minimum=0.0)


def _optional_seconds(value: Any, what: str) -> float | None:
    return None if value is None else _seconds(value, what)


def _string(value: Any, what: str) -> str:
    return _checked(untrusted.text, value, what)


def _count(value: Any, what: str) -> int:
    return _checked(untrusted.count, value, what)


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
        nested = isinstance(v, dict) and len(v) <= 64 and all(
            isinstance(a, str) and untrusted.scalar(a) and untrusted.scalar(b)
            for a, b in v.items())
        if not (isinstance(k, str) and untrusted.scalar(k)) or not (
                untrusted.scalar(v) or nested):
            raise SchemaError(f"fingerprint field {k!r} must be a scalar or a flat object")
    if data.get("id") != machine_id or not isinstance(data.get("family"), str):
        raise SchemaError(f"machine {machine_id!r}: fingerprint id/family missing or mismatched")
    return dict(data)


def machine_id_ok(value: Any) -> bool:
    """True for a machine id atrous can show and use in a file name after slugging: text
    of 1 to 200 characters without control characters."""
    return (isinstance(value, str) and 0 < len(value) <= 200 and untrusted.scalar(value)
            and value.isprintable())


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
        if version != SCHEMA_VERSION or isinstance(version, bool):
            newer = isinstance(version, int) and not isinstance(version, bool) and (
                SCHEMA_VERSION < version <= untrusted.MAX_ABS_INT)
            # only a newer atrous's file is kept from being overwritten; anything else is corrupt
            error = UnknownSchemaError if newer else SchemaError
            raise error(f"schema version {untrusted.short(version)}; this atrous reads"
                        f" version {SCHEMA_VERSION}")
        machines = data.get("machines")
        if not isinstance(machines, dict):
            raise SchemaError("\"machines\" must be an object")
        snapshot, problems = cls(), []
        for mid, body in machines.items():
            try:
                if not machine_id_ok(mid):
                    raise SchemaError("a machine id must be printable text of 1 to 200"
                                      " characters")
                if not isinstance(body, dict) or not isinstance(body.get("records"), dict):
                    raise SchemaError("a machine needs \"fingerprint\" and \"records\" objects")
                machine = Machine(_fingerprint(body.get("fingerprint"), mid))
            except SchemaError as exc:
                if strict:
                    raise
                problems.append(f"machine {untrusted.short(mid)}: {exc}")
                continue
            for slot, raw in body["records"].items():
                try:
                    record = Record.from_json(raw)
                    if record.slot != slot:
                        raise SchemaError(f"slot {slot!r} does not match its record")
                except SchemaError as exc:
                    if strict:
                        raise SchemaError(f"machine {mid!r}, {untrusted.short(slot)}: {exc}")\
                            from exc
                    problems.append(f"machine {mid!r}, {untrusted.short(slot)}: {exc}")
                    continue
                machine.records[slot] = record
            snapshot.machines[mid] = machine
        return snapshot, problems
