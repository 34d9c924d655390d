"""Benchmark rows: one implementation timed on one problem, in tidy long format.

Every row carries everything needed to read it alone (the machine's fingerprint id, the
run, versions, the timing policy), so rows from many runs and machines can sit in one
table. A baseline that could not run (PyTorch or ONNX Runtime not installed, a mode it
lacks) is a row whose times are empty and whose ``note`` says why: a report shows the gap
instead of failing.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, fields
from typing import Any

from atrous.report.csvsafe import csv_cell

FORMAT = "atrous-bench"
#: Version 2 added OpenVINO, the conv rows' plain and prepared calls, ``first_call_ms``,
#: ``isolation`` and ``command``, and made ``work_flops`` the executed work (Winograd's
#: multiplies); version 1 files are still read, their new fields empty.
SCHEMA_VERSION = 2
READABLE_VERSIONS = (1, 2)

#: Implementation names, in the order reports show them. "atrous-<backend>" runs the
#: config the tuning database gives this machine through the backend's launcher on
#: prepared inputs (the tuner's timed call); "-default" the spec's heuristic default
#: config; for convolutions "-plain" is the plain call ``atrous.dilated_conv2d(x, w, ...)``
#: from its second call on, and "-prepared" ``atrous.prepare_conv(w, ...)(x)``.
ORDER = ("atrous-numba", "atrous-triton", "atrous-numba-plain", "atrous-triton-plain",
         "atrous-numba-prepared", "atrous-triton-prepared", "atrous-numba-default",
         "atrous-triton-default", "torch", "onnxruntime", "openvino", "numpy-reference")
LABELS = {
    "atrous-numba": "atrous (tuned)", "atrous-triton": "atrous (tuned)",
    "atrous-numba-plain": "atrous plain call", "atrous-triton-plain": "atrous plain call",
    "atrous-numba-prepared": "atrous prepare_conv", "atrous-triton-prepared":
    "atrous prepare_conv",
    "atrous-numba-default": "atrous (default config)",
    "atrous-triton-default": "atrous (default config)",
    "torch": "PyTorch", "onnxruntime": "ONNX Runtime", "openvino": "OpenVINO",
    "numpy-reference": "NumPy reference",
}


@dataclass
class BenchRow:
    """One implementation timed on one problem.

    Times are milliseconds per call; ``gbps`` and ``gflops`` count the problem's fewest
    bytes and its dense-equivalent FLOPs (``flops``: every tap of the window; the same
    numerator for every implementation, so they rank like speed: ``gflops`` is an
    *effective* rate); ``work_flops`` is the work the implementation executed (atrous's
    convolution: valid taps only for "gemm"/"tile", the GEMM multiplies of "winograd";
    a baseline: the dense work, its algorithm being unknown), used against the compute
    ceiling. ``bound`` ("memory" or "compute") and ``ceiling_fraction`` place the row on
    the roofline of the machine's measured ceilings: the fastest time the ceilings allow
    for the executed work over the measured time (above 1 only by noise or cache reuse).
    Empty (None) when the implementation could not run: see ``note``.

    ``first_call_ms``: the first call's time (for a plain convolution call, the call that
    meets its weights first; for the tuned kernel, compilation included). ``isolation``:
    "process" when the row was timed in a worker process of its library's own, "shared"
    when beside other libraries. ``command``: the one-line command that times it again.
    """

    run: str
    timestamp: str
    fingerprint: str
    device: str
    name: str
    op: str
    backend: str
    implementation: str
    shape: str
    out_shape: str
    layout: str
    dtype: str
    problem_key: str
    config: str
    config_source: str
    median_ms: float | None
    p20_ms: float | None
    p80_ms: float | None
    gbps: float | None
    gflops: float | None
    bound: str
    ceiling_fraction: float | None
    flops: int
    work_flops: int
    bytes: int
    policy: str
    note: str
    atrous_version: str
    numba_version: str
    triton_version: str
    torch_version: str
    onnxruntime_version: str
    openvino_version: str = ""
    first_call_ms: float | None = None
    isolation: str = ""
    command: str = ""

    @property
    def ok(self) -> bool:
        """True when the row holds a measurement."""
        return self.median_ms is not None

    @property
    def label(self) -> str:
        """The implementation's name for people."""
        return LABELS.get(self.implementation, self.implementation)

    @property
    def config_dict(self) -> dict[str, Any]:
        try:
            value = json.loads(self.config) if self.config else {}
        except json.JSONDecodeError:
            return {}
        return value if isinstance(value, dict) else {}

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: Any) -> BenchRow:
        """Check ``data`` field by field (a rows file is data); ValueError names the field."""
        if not isinstance(data, dict):
            raise ValueError("a bench row must be an object")
        values: dict[str, Any] = {}
        for f in fields(cls):
            values[f.name] = _field(f.name, str(f.type), data.get(f.name))
        return cls(**values)


COLUMNS = tuple(f.name for f in fields(BenchRow))
_NUMBERS = {f.name for f in fields(BenchRow) if "float" in str(f.type)}
_COUNTS = {f.name for f in fields(BenchRow) if str(f.type) == "int"}


def _field(name: str, kind: str, value: Any) -> Any:
    if name in _NUMBERS:
        if value in (None, ""):
            return None
        try:
            number = float(value)
        except (TypeError, ValueError, OverflowError) as exc:
            raise ValueError(f"bench row field {name!r}: not a number: {value!r}") from exc
        if not math.isfinite(number):
            raise ValueError(f"bench row field {name!r}: not finite: {value!r}")
        return number
    if name in _COUNTS:
        try:
            return int(value or 0)
        except (TypeError, ValueError, OverflowError) as exc:
            raise ValueError(f"bench row field {name!r}: not an integer: {value!r}") from exc
    if value is None:
        return ""
    if not isinstance(value, str | int | float):
        raise ValueError(f"bench row field {name!r}: not text: {type(value).__name__}")
    return str(value)[:4000]


def to_csv(rows: Iterable[BenchRow]) -> str:
    """The rows as CSV text: a header of :data:`COLUMNS`, empty cells for missing values."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(COLUMNS), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: csv_cell("" if v is None else v) for k, v in row.to_json().items()})
    return buf.getvalue()


def from_csv(text: str) -> list[BenchRow]:
    """Rows from :func:`to_csv`'s text (ValueError on a malformed row)."""
    return [BenchRow.from_json(r) for r in csv.DictReader(io.StringIO(text))]


def to_document(rows: Iterable[BenchRow]) -> dict[str, Any]:
    """The JSON document of a rows file."""
    return {"format": FORMAT, "schema_version": SCHEMA_VERSION,
            "rows": [r.to_json() for r in rows]}


def from_document(data: Any) -> tuple[list[BenchRow], list[str]]:
    """Rows of a parsed rows file and the problems found (bad rows are skipped, listed).

    Raises ValueError when the document itself is not a rows file of this schema."""
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ValueError(f"not an atrous bench file (no \"format\": \"{FORMAT}\")")
    if data.get("schema_version") not in READABLE_VERSIONS:
        raise ValueError(f"bench file schema version {data.get('schema_version')!r}; this"
                         f" atrous reads versions {', '.join(map(str, READABLE_VERSIONS))}")
    if not isinstance(data.get("rows"), list):
        raise ValueError("bench file: \"rows\" must be a list")
    rows, problems = [], []
    for i, raw in enumerate(data["rows"]):
        try:
            rows.append(BenchRow.from_json(raw))
        except ValueError as exc:
            problems.append(f"row {i}: {exc}")
    return rows, problems


def runs(rows: Iterable[BenchRow]) -> dict[str, list[BenchRow]]:
    """Rows grouped by run id, runs in the order of their first timestamp."""
    grouped: dict[str, list[BenchRow]] = {}
    for row in sorted(rows, key=lambda r: r.timestamp):
        grouped.setdefault(row.run, []).append(row)
    return grouped
