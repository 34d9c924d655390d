"""The report's tables, built from rows, records and ceilings as plain-text cells."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from typing import Any

from atrous.report.ceilings import Ceilings
from atrous.report.page import Cell, Table, num, ratio
from atrous.report.rows import LABELS, BenchRow
from atrous.report.summary import tuned_row, user_row

BENCH_COLUMNS = ["case", "layout", "atrous", "default config", "PyTorch", "ONNX Runtime",
                 "OpenVINO", "NumPy", "× PyTorch", "× ONNX RT", "× OpenVINO",
                 "GB/s", "GFLOP/s effective", "of roofline", "config (source)", "command"]
#: The user-level convolution calls, shown after "atrous" where the bench timed them.
CALL_COLUMNS = ["plain call", "first call", "prepare_conv"]
BASELINE_KEYS = ("torch", "onnxruntime", "openvino")


def config_text(config: dict[str, Any] | str) -> str:
    """``{"BLOCK_CO": 16, "threads": 2}`` as ``BLOCK_CO=16 threads=2``."""
    if isinstance(config, str):
        try:
            config = json.loads(config) if config else {}
        except json.JSONDecodeError:
            return config
    if not isinstance(config, dict) or not config:
        return "–"
    return " ".join(f"{k}={v}" for k, v in config.items())


def _time(row: BenchRow | None) -> Cell:
    if row is None:
        return Cell("–", "muted")
    if not row.ok:
        return Cell("n/a", "muted")
    return num(row.median_ms, "{:.3f}" if row.median_ms < 100 else "{:.1f}")


def _speedup(base: BenchRow | None, ours: BenchRow) -> Cell:
    if base is None or not base.ok or not ours.ok:
        return Cell("–", "muted")
    return ratio(base.median_ms / ours.median_ms)


def bench_table(op: str, rows: Sequence[BenchRow]) -> Table:
    """One row per benchmarked shape of ``op``: every implementation's median time, the
    speedups of what a user's call gets (a convolution's plain call where it was timed,
    else the tuned config), its rates, its fraction of the roofline bound and the command
    that times the case again."""
    cases: dict[tuple[str, str, str], dict[str, BenchRow]] = {}
    for r in rows:
        if r.op == op:
            cases.setdefault((r.name, r.layout, r.dtype), {})[r.implementation] = r
    dtypes = sorted({k[2] for k in cases})
    several = len(dtypes) > 1  # one dtype: named in the caption, not in a column
    calls = any(r.implementation.endswith(("-plain", "-prepared")) for c in cases.values()
                for r in c.values())
    columns = (BENCH_COLUMNS[:2] + ["dtype"] * several + BENCH_COLUMNS[2:3]
               + CALL_COLUMNS * calls + BENCH_COLUMNS[3:])
    table = Table(f"bench-{op}", f"{op}: median ms per call"
                  + ("" if several else f", {', '.join(dtypes)}"), columns, note=_NOTE
                  + (_CALLS_NOTE if calls else ""))
    for (name, layout, dtype), cells in cases.items():
        ours = tuned_row(cells)
        if ours is None:
            continue
        user = user_row(cells) or ours
        default = cells.get(f"{ours.implementation}-default")
        plain = cells.get(f"{ours.implementation}-plain")
        first = None if plain is None else plain.first_call_ms
        fraction = user.ceiling_fraction
        table.rows.append([
            Cell(name, "name"), Cell(layout), *([Cell(dtype)] * several), _time(ours),
            *([_time(plain), num(first, "{:.3f}" if (first or 0) < 100 else "{:.1f}"),
               _time(cells.get(f"{ours.implementation}-prepared"))] if calls else []),
            _time(default), *(_time(cells.get(k)) for k in BASELINE_KEYS),
            _time(cells.get("numpy-reference")),
            *(_speedup(cells.get(k), user) for k in BASELINE_KEYS),
            num(user.gbps, "{:.1f}"), num(user.gflops, "{:.1f}"),
            Cell("–", "muted") if fraction is None else Cell(f"{fraction:.0%} {user.bound}",
                                                             "num"),
            Cell(f"{config_text(user.config)} ({user.config_source})" if user.config else "–",
                 "config"),
            Cell(ours.command or "–", "config"),
        ])
    return table


_NOTE = ("× columns: the baseline's median over atrous's (above 1: atrous is faster). GB/s"
         " and \"GFLOP/s effective\" count the fewest bytes and the dense-equivalent FLOPs of"
         " the op (every tap of the window), the same for every implementation; \"of"
         " roofline\" is the fastest time the measured ceilings allow for the work atrous"
         " executed (valid taps; Winograd's multiplies), over its measured time (above 100%"
         " only by noise, or data a cache held). Each library was timed in a process of its"
         " own; the command times the case again.")
_CALLS_NOTE = (" \"plain call\" is atrous.dilated_conv2d(x, w, ...) from its second call on"
               " (\"first call\": its first, on weights it had not seen, kernels compiled),"
               " \"prepare_conv\" is atrous.prepare_conv(w, ...)(x); the × columns, rates,"
               " roofline and config are the plain call's.")


def notes_table(rows: Sequence[BenchRow]) -> Table | None:
    """Why some implementations have no time: one line per (implementation, reason)."""
    counts = Counter((r.implementation, r.note) for r in rows if not r.ok and r.note)
    if not counts:
        return None
    table = Table("missing", "Implementations without a time", ["implementation", "why",
                                                                "shapes"])
    for (impl, note), n in sorted(counts.items()):
        table.rows.append([Cell(LABELS.get(impl, impl)), Cell(note), num(n, "{:d}")])
    return table


def _short_key(key: str) -> str:
    """A problem key without its op, layout and dtype (shown in their own columns)."""
    parts = key.split(":")
    return ":".join(parts[3:]) if len(parts) > 3 else key


def tuning_table(records: Sequence[Any], rows: Sequence[BenchRow]) -> Table:
    """One row per tuned problem: the winner, its time and the default's, the search."""
    from atrous.core.tolerance import TOLERANCE

    names = {r.problem_key: r.name for r in rows}
    backends = sorted({rec.backend for rec in records})
    several = len(backends) > 1  # one backend: named in the caption
    table = Table("tuning", "Tuned configs (tuning database)"
                  + ("" if several or not backends else f", {backends[0]} backend"),
                  ["case", "op", "layout", "dtype", *["backend"] * several, "config",
                   "tuned ms", "default ms", "speedup", "trials", "strategy",
                   "validation error"],
                  note="Times are from the tuning run (its own timing policy); speedup is the"
                       " default config's median over the tuned one's. Validation error is"
                       " max|out - ref| / max|ref| against the float64 reference.")
    for rec in records:
        trials = f"{rec.trials}" + (f" ({rec.failed} failed, {rec.pruned} pruned)"
                                    if rec.failed or rec.pruned else "")
        bound = TOLERANCE.get(rec.dtype)
        error = f"{rec.validation_error:.1e}" + (f" (≤ {bound:.0e})" if bound else "")
        table.rows.append([
            Cell(names.get(rec.key, _short_key(rec.key)), "name"), Cell(rec.op),
            Cell(rec.layout), Cell(rec.dtype), *([Cell(rec.backend)] * several),
            Cell(config_text(rec.config), "config"),
            num(rec.median_s * 1e3), num(None if rec.default_median_s is None
                                         else rec.default_median_s * 1e3),
            ratio(rec.speedup), Cell(trials, "num"), Cell(rec.strategy), Cell(error, "num")])
    return table


def ceilings_table(ceilings: Ceilings | None) -> Table:
    """The measured ceilings, one per line."""
    table = Table("ceilings", "Measured ceilings", ["ceiling", "dtype", "value", "how"])
    if ceilings is None:
        table.note = "Not measured on this machine: run `atrous ceilings`."
        return table
    table.note = f"Measured {ceilings.measured_at} on {ceilings.device} in" \
                 f" {ceilings.seconds:.1f} s; each is the best of its repetitions."
    for c in ceilings.entries:
        table.rows.append([Cell(c.name), Cell(c.dtype or "–"),
                           Cell(f"{c.value:,.1f} {c.unit}", "num"), Cell(c.method)])
    return table
