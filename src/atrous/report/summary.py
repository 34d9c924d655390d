"""One line per op: how atrous compares with each baseline and with the machine's ceilings.

"dilated_conv2d: 1.40x PyTorch, 71% of measured peak" reads: over the benchmarked shapes
of the op, PyTorch's median time divided by atrous's has a geometric mean of 1.40, and
atrous's median time reaches 71% of what the measured ceilings allow for the work it
executed (the roofline bound, compute here; Winograd's multiplies, not the dense 3x3
FLOPs), as the median over those shapes.

atrous's time is what a user's call gets: for convolutions the plain call
``atrous.dilated_conv2d(x, w, ...)`` (second call on) where the bench timed it (the line
then says "(plain call)" and gives the prepared call's ratio beside), else the tuned
config. A rate on the dense-equivalent FLOPs is labelled "effective": it can exceed the
machine's peak, since Winograd and padding skipping execute fewer.
"""

from __future__ import annotations

import json
import math
import statistics
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from atrous.report.rows import BenchRow

BASELINES = (("torch", "PyTorch"), ("onnxruntime", "ONNX Runtime"), ("openvino", "OpenVINO"),
             ("numpy-reference", "NumPy"))


def times(value: float) -> str:
    """A speed ratio to three significant digits: ``1.4x``, ``0.0028x``, ``166x``."""
    return f"{value:.3g}x"


@dataclass(frozen=True)
class Ratios:
    """Speed ratios over shapes (baseline time / atrous time: above 1, atrous is faster)."""

    values: tuple[float, ...]

    @property
    def geomean(self) -> float:
        return math.exp(sum(math.log(v) for v in self.values) / len(self.values))

    @property
    def low(self) -> float:
        return min(self.values)

    @property
    def high(self) -> float:
        return max(self.values)


@dataclass
class OpSummary:
    """An op's comparison over the benchmarked shapes of one run."""

    op: str
    shapes: int
    versus: dict[str, Ratios] = field(default_factory=dict)
    missing: dict[str, str] = field(default_factory=dict)  # baseline -> why it has no ratio
    fraction: float | None = None  # median fraction of the roofline bound
    bound: str = ""  # "compute" or "memory": the roof that bounds most shapes
    over_default: Ratios | None = None
    variants: dict[str, int] = field(default_factory=dict)  # the configs' variants that ran
    plain: bool = False  # atrous's times are the plain call's (convolutions)
    prepared: Ratios | None = None  # PyTorch over the prepared call (convolutions)
    effective_gflops: float | None = None  # median dense-equivalent rate (compute-bound ops)

    def line(self) -> str:
        """The summary line, e.g. "dilated_conv2d: 1.40x PyTorch, 71% of measured peak"."""
        head = []
        torch = self.versus.get("torch")
        how = " (plain call)" if self.plain else ""
        head.append(f"{times(torch.geomean)} PyTorch{how}" if torch else "PyTorch not measured")
        if self.fraction is not None:
            roof = "peak" if self.bound == "compute" else "bandwidth"
            head.append(f"{self.fraction:.0%} of measured {roof}")
        detail = [f"{self.shapes} shape{'s' if self.shapes != 1 else ''}"]
        if torch and len(torch.values) > 1:
            detail.append(f"geometric mean, {times(torch.low)} to {times(torch.high)}")
        if self.prepared:
            detail.append(f"prepared call {times(self.prepared.geomean)} PyTorch")
        for key, name in BASELINES[1:]:
            r = self.versus.get(key)
            if r:
                detail.append(f"{times(r.geomean)} {name}")
        if self.over_default:
            detail.append(f"{times(self.over_default.geomean)} the default config")
        if self.effective_gflops is not None:
            detail.append(f"effective {rate(self.effective_gflops)} on the dense FLOPs")
        if self.variants:
            detail.append("variants run: " + ", ".join(
                f"{name} x{count}" for name, count in sorted(self.variants.items())))
        return f"{self.op}: {', '.join(head)} ({'; '.join(detail)})"


def rate(gflops: float) -> str:
    """``830 GFLOP/s`` or ``1.2 TFLOP/s``."""
    return f"{gflops / 1e3:.3g} TFLOP/s" if gflops >= 1e3 else f"{gflops:.3g} GFLOP/s"


def _cases(rows: Iterable[BenchRow]) -> dict[tuple[str, str, str], dict[str, BenchRow]]:
    cases: dict[tuple[str, str, str], dict[str, BenchRow]] = {}
    for r in rows:
        cases.setdefault((r.name, r.layout, r.dtype), {})[r.implementation] = r
    return cases


def tuned_row(cells: dict[str, BenchRow]) -> BenchRow | None:
    """The "atrous-<backend>" row among one case's rows (the config atrous runs here)."""
    for name in ("atrous-numba", "atrous-triton"):
        if name in cells:
            return cells[name]
    return None


def user_row(cells: dict[str, BenchRow]) -> BenchRow | None:
    """The row of what a user's call gets: a convolution's plain call where it was timed
    ("atrous-<backend>-plain"), else the tuned row."""
    ours = tuned_row(cells)
    if ours is not None:
        plain = cells.get(f"{ours.implementation}-plain")
        if plain is not None and plain.ok:
            return plain
    return ours


def _config(row: BenchRow) -> dict:
    """A row's config as a dict (rows read back from CSV hold it as JSON text)."""
    config = row.config
    if isinstance(config, str):
        try:
            config = json.loads(config) if config else {}
        except json.JSONDecodeError:
            return {}
    return config if isinstance(config, dict) else {}


def summarize(rows: Iterable[BenchRow]) -> list[OpSummary]:
    """One OpSummary per op present in ``rows``, in order of first appearance."""
    by_op: dict[str, list[tuple[BenchRow, dict[str, BenchRow]]]] = {}
    for cells in _cases(rows).values():
        ours = user_row(cells)
        if ours is not None and ours.ok:
            by_op.setdefault(ours.op, []).append((ours, cells))
    out = []
    for op_name, cases in by_op.items():
        s = OpSummary(op_name, len(cases))
        s.plain = any(ours.implementation.endswith("-plain") for ours, _ in cases)
        prepared = [c["torch"].median_ms / p.median_ms for ours, c in cases
                    if (t := tuned_row(c)) is not None and "torch" in c and c["torch"].ok
                    and (p := c.get(f"{t.implementation}-prepared")) is not None and p.ok]
        if prepared:
            s.prepared = Ratios(tuple(prepared))
        for key, _ in BASELINES:
            values = [c[key].median_ms / ours.median_ms for ours, c in cases
                      if key in c and c[key].ok]
            if values:
                s.versus[key] = Ratios(tuple(values))
            else:
                notes = Counter(c[key].note for _, c in cases if key in c and c[key].note)
                s.missing[key] = notes.most_common(1)[0][0] if notes else "not benchmarked"
        fractions = [ours.ceiling_fraction for ours, _ in cases
                     if ours.ceiling_fraction is not None]
        if fractions:
            s.fraction = statistics.median(fractions)
            s.bound = Counter(ours.bound for ours, _ in cases).most_common(1)[0][0]
        defaults = [c[d].median_ms / t.median_ms for _, c in cases
                    if (t := tuned_row(c)) is not None and t.ok
                    for d in (f"{t.implementation}-default",) if d in c and c[d].ok]
        if defaults:
            s.over_default = Ratios(tuple(defaults))
        if s.bound == "compute":
            rates = [ours.gflops for ours, _ in cases if ours.gflops is not None]
            s.effective_gflops = statistics.median(rates) if rates else None
        s.variants = dict(Counter(str(v) for ours, _ in cases
                                  if (v := _config(ours).get("variant")) is not None))
        out.append(s)
    return out
