"""`atrous report --fleet`: every machine beside one tuning database on one page.

For each machine (fingerprint id): its summary lines (tuned problems, the tuned configs'
speedup over the default, and the benchmark summary of its latest run); then, per op, the
tuned median and config of every machine side by side for each problem; then the latest
benchmark of every machine side by side per shape; and plots of both. Nothing is measured.
"""

from __future__ import annotations

import datetime
import math
from collections.abc import Sequence
from pathlib import Path

from atrous.report import plots
from atrous.report.data import ReportData, SelectionError, load, machines
from atrous.report.page import Cell, Page, Plot, Section, Table, num, slug
from atrous.report.render import REPORTS_DIR, write_page
from atrous.report.rows import to_csv
from atrous.report.store import database_path
from atrous.report.summary import Ratios, summarize, times, tuned_row
from atrous.report.tables import config_text

#: Distinct bar colours for up to eight machines (then they repeat).
_PALETTE = ("#1b6ca8", "#c0392b", "#16a085", "#8e44ad", "#d35400", "#2c3e50", "#7f8c8d",
            "#b7950b")


def load_all(db: str | Path | None = None) -> list[ReportData]:
    """The report data of every machine with data beside ``db`` (oldest data first)."""
    known = machines(db)
    if not known:
        raise SelectionError(f"nothing to report: no machine has records or benchmark rows"
                             f" beside {database_path(db)} (run `atrous tune --cluster` first)")
    return [load(db, machine=m) for m in sorted(known, key=known.__getitem__)]


def machine_lines(data: ReportData) -> list[str]:
    """One machine's summary lines."""
    speedups = [r.default_median_s / r.median_s for r in data.records
                if r.default_median_s and r.median_s]
    head = f"{data.label}: {len(data.records)} tuned problems"
    if speedups:
        r = Ratios(tuple(speedups))
        head += (f", tuned configs run {times(r.geomean)} as fast as the defaults (geometric"
                 f" mean, {times(r.low)} to {times(r.high)})")
    return [head] + [f"{data.machine} {s.line()}" for s in summarize(data.rows)]


def _problem(key: str) -> str:
    return key.split(":", 1)[-1]


def tuning_tables(fleet: Sequence[ReportData]) -> tuple[list[Table], list[tuple]]:
    """Per op: each problem's tuned median and config on every machine; and the plot's
    (op, problem, [median ms per machine]) points."""
    slots: dict[tuple[str, str, str], dict[str, object]] = {}
    for data in fleet:
        for rec in data.records:
            slots.setdefault((rec.op, rec.backend, rec.key), {})[data.machine] = rec
    tables: dict[str, Table] = {}
    points = []
    for (op, backend, key), by_machine in sorted(slots.items()):
        table = tables.setdefault(op, Table(
            f"fleet-tuning-{op}", f"{op}: tuned median ms per call on each machine",
            ["problem", "backend"] + [c for d in fleet for c in (
                f"{d.machine} ms", f"{d.machine} vs default", f"{d.machine} config")],
            note="Each machine's own tuning run; '–': not tuned there. Times of machines "
                 "that shared one host (a simulated fleet) are not comparable."))
        cells = [Cell(_problem(key), "name"), Cell(backend)]
        medians = []
        for d in fleet:
            rec = by_machine.get(d.machine)
            if rec is None:
                cells += [num(None), num(None), Cell("–", "muted")]
                medians.append(None)
                continue
            speed = rec.default_median_s / rec.median_s if rec.default_median_s and \
                rec.median_s else None
            cells += [num(rec.median_s * 1e3), num(speed, "{:.2f}x"),
                      Cell(config_text(rec.config), "config")]
            medians.append(rec.median_s * 1e3)
        table.rows.append(cells)
        points.append((op, _problem(key), medians))
    return list(tables.values()), points


def bench_tables(fleet: Sequence[ReportData]) -> list[Table]:
    """Per op: each benchmarked shape's tuned atrous and PyTorch medians on every machine
    (each machine's latest run)."""
    cases: dict[tuple[str, str, str], dict[str, dict]] = {}
    for data in fleet:
        for row in data.rows:
            cases.setdefault((row.name, row.layout, row.dtype), {}).setdefault(
                data.machine, {})[row.implementation] = row
    tables: dict[str, Table] = {}
    for (name, layout, dtype), by_machine in cases.items():
        ours = {m: tuned_row(cells) for m, cells in by_machine.items()}
        op = next((r.op for r in ours.values() if r is not None), None)
        if op is None:
            continue
        table = tables.setdefault(op, Table(
            f"fleet-bench-{op}", f"{op}: benchmark median ms per call on each machine",
            ["case", "layout", "dtype"] + [c for d in fleet for c in (
                f"{d.machine} atrous", f"{d.machine} PyTorch")]))
        cells = [Cell(name, "name"), Cell(layout), Cell(dtype)]
        for d in fleet:
            mine = ours.get(d.machine)
            torch = by_machine.get(d.machine, {}).get("torch")
            cells += [num(mine.median_ms if mine is not None and mine.ok else None),
                      num(torch.median_ms if torch is not None and torch.ok else None)]
        table.rows.append(cells)
    return list(tables.values())


def times_plot(fleet: Sequence[ReportData], points: list[tuple]) -> Plot | None:
    """Grouped bars: each problem's tuned median on every machine (log axis)."""
    drawn = [p for p in points if any(v is not None for v in p[2])]
    if not drawn or not plots.available():
        return None
    plt = plots.pyplot()
    n = len(fleet)
    height = 0.8 / n
    with plots.style():
        fig, ax = plt.subplots(figsize=(8.0, 1.2 + 0.25 * len(drawn) * max(1, n / 2)))
        for k, d in enumerate(fleet):
            ys = [y + (k - (n - 1) / 2) * height for y in range(len(drawn))]
            vals = [p[2][k] for p in drawn]
            ax.barh([y for y, v in zip(ys, vals, strict=True) if v is not None],
                    [v for v in vals if v is not None], height=height,
                    color=_PALETTE[k % len(_PALETTE)], label=plots.plain(d.label)[:60])
        ax.set_yticks(list(range(len(drawn))))
        ax.set_yticklabels([plots.plain(f"{p[0]} · {p[1]}")[:60] for p in drawn], fontsize=6)
        ax.invert_yaxis()
        positive = [v for p in drawn for v in p[2] if v is not None and v > 0]
        if positive and max(positive) / min(positive) > 20 and all(
                math.isfinite(v) for v in positive):
            ax.set_xscale("log")
        ax.set_xlabel("tuned median ms per call")
        ax.set_title("Tuned time per problem on each machine")
        ax.legend(fontsize=6, loc="lower right")
        return Plot("fleet-tuned-times", "Tuned time per problem on each machine",
                    plots.png(fig), "Grouped bar chart of each problem's tuned median on"
                                    " every machine")


def fleet_page(fleet: Sequence[ReportData]) -> Page:
    """The page comparing every machine of ``fleet``."""
    summary = [line for d in fleet for line in machine_lines(d)]
    facts = [(f"machine {d.machine}", f"{d.label}, family {d.fingerprint.get('family', '?')},"
                                      f" {len(d.records)} records"
              + (f", benchmark run {d.run}" if d.run else "")) for d in fleet]
    tuning, points = tuning_tables(fleet)
    tuned = Section("fleet-tuning", "Tuned problems, every machine side by side",
                    tables=tuning, intro="Problems matched by op, backend and problem key.")
    plot = times_plot(fleet, points)
    if plot:
        tuned.plots.append(plot)
    sections = [tuned]
    bench = bench_tables(fleet)
    if bench:
        sections.append(Section("fleet-bench", "Benchmarks, every machine side by side",
                                tables=bench, intro="Each machine's latest benchmark run."))
    sections[0].plots += [p for d in fleet if d.rows
                          for op in dict.fromkeys(r.op for r in d.rows)
                          if (p := _renamed(plots.time_per_shape(op, d.rows), d.machine))]
    now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    return Page(f"atrous fleet: {len(fleet)} machines", facts, summary, sections, now)


def _renamed(plot: Plot | None, machine: str) -> Plot | None:
    """A per-machine plot under a name of its own (two machines' plots must not collide)."""
    if plot is None:
        return None
    return Plot(f"{machine}-{plot.name}", f"{machine}: {plot.title}", plot.png, plot.alt)


def fleet(db: str | Path | None = None, out: str | Path | None = None) -> tuple[Path, list[str]]:
    """Render the fleet page of every machine beside ``db`` into ``out`` (default
    ``reports/fleet/``); returns the path of its ``index.html`` and the summary lines."""
    data = load_all(db)
    page = fleet_page(data)
    out_dir = Path(out) if out is not None else REPORTS_DIR / slug("fleet")
    rows = [r for d in data for r in d.rows]
    records = [r for d in data for r in d.records]
    return write_page(page, out_dir, rows=rows, records=records,
                      results_csv=to_csv(rows)), page.summary
