"""`atrous report --compare A B`: two machines or two benchmark runs side by side.

A and B are each a fingerprint id (that machine's latest run), a benchmark run id, or the
path of another tuning database file (its most recent machine). Shapes are matched by
case name, layout and dtype; tuned configs by op, backend and problem key. Ratios are A's
time over B's: above 1, B is faster.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from pathlib import Path

from atrous.report import plots
from atrous.report.data import ReportData, SelectionError, load, machines
from atrous.report.page import Cell, Page, Plot, Section, Table, num, ratio, slug
from atrous.report.render import REPORTS_DIR, write_page
from atrous.report.rows import BenchRow, runs, to_csv
from atrous.report.store import bench_path, read_rows
from atrous.report.summary import Ratios, times, tuned_row
from atrous.report.tables import config_text


def resolve(selector: str, db: str | Path | None = None) -> ReportData:
    """The report data ``selector`` names: a benchmark run id or a fingerprint id beside
    ``db``, or a path to another tuning database file."""
    path = Path(selector)
    if path.suffix == ".json" and path.is_file():
        return load(path)
    if selector in runs(read_rows(bench_path(db))):
        return load(db, run=selector)
    if selector in machines(db):
        return load(db, machine=selector)
    raise SelectionError(f"{selector!r} is neither a benchmark run, a machine with data beside"
                         f" the tuning database, nor a tuning database file")


def _key(r: BenchRow) -> tuple[str, str, str]:
    return (r.name, r.layout, r.dtype)


def _cases(rows: Sequence[BenchRow]) -> dict[tuple[str, str, str], dict[str, BenchRow]]:
    out: dict[tuple[str, str, str], dict[str, BenchRow]] = {}
    for r in rows:
        out.setdefault(_key(r), {})[r.implementation] = r
    return out


def _over(a: BenchRow | None, b: BenchRow | None) -> float | None:
    if a is None or b is None or not a.ok or not b.ok:
        return None
    return a.median_ms / b.median_ms


def side_by_side(a: ReportData, b: ReportData) -> tuple[list[str], list[Table], list[tuple]]:
    """Summary lines, one table per op, and (op, case, atrous ratio, torch ratio) points."""
    ca, cb = _cases(a.rows), _cases(b.rows)
    shared = [k for k in ca if k in cb]
    tables: dict[str, Table] = {}
    points: list[tuple] = []
    ratios: dict[str, list[float]] = {}
    for key in shared:
        ours_a, ours_b = tuned_row(ca[key]), tuned_row(cb[key])
        if ours_a is None or ours_b is None:
            continue
        op = ours_a.op
        table = tables.setdefault(op, Table(
            f"compare-{op}", f"{op}: median ms per call, A and B",
            ["case", "layout", "dtype", "A atrous", "B atrous", "A / B", "A PyTorch",
             "B PyTorch", "A / B PyTorch", "A config", "B config", "config"],
            note="A / B above 1: B is faster."))
        mine, torch = _over(ours_a, ours_b), _over(ca[key].get("torch"), cb[key].get("torch"))
        if mine is not None:
            ratios.setdefault(op, []).append(mine)
        points.append((op, f"{key[0]} · {key[1]}", mine, torch))
        changed = ours_a.config_dict != ours_b.config_dict
        table.rows.append([
            Cell(key[0], "name"), Cell(key[1]), Cell(key[2]), num(ours_a.median_ms),
            num(ours_b.median_ms), ratio(mine), num(_ms(ca[key].get("torch"))),
            num(_ms(cb[key].get("torch"))), ratio(torch),
            Cell(config_text(ours_a.config), "config"), Cell(config_text(ours_b.config), "config"),
            Cell("changed" if changed else "same", "bad" if changed else "muted")])
    summary = []
    for op, values in ratios.items():
        r = Ratios(tuple(values))
        summary.append(f"{op}: B runs {times(r.geomean)} as fast as A (geometric mean over"
                       f" {len(values)} shared shapes, {times(r.low)} to {times(r.high)})")
    return summary, list(tables.values()), points


def _ms(row: BenchRow | None) -> float | None:
    return row.median_ms if row is not None and row.ok else None


def config_changes(a: ReportData, b: ReportData) -> Table:
    """Tuned configs of problems tuned on both sides."""
    table = Table("compare-tuning", "Tuned configs on both sides (tuning databases)",
                  ["op", "backend", "problem", "A config", "B config", "A ms", "B ms", "A / B",
                   "config"], note="Times from each side's own tuning run.")
    theirs = {(r.op, r.backend, r.key): r for r in b.records}
    for ra in a.records:
        rb = theirs.get((ra.op, ra.backend, ra.key))
        if rb is None:
            continue
        changed = ra.config != rb.config
        table.rows.append([
            Cell(ra.op), Cell(ra.backend), Cell(ra.key.split(":", 3)[-1], "config"),
            Cell(config_text(ra.config), "config"), Cell(config_text(rb.config), "config"),
            num(ra.median_s * 1e3), num(rb.median_s * 1e3),
            ratio(ra.median_s / rb.median_s if rb.median_s > 0 else None),
            Cell("changed" if changed else "same", "bad" if changed else "muted")])
    return table


def speedup_plot(points: list[tuple]) -> Plot | None:
    """Bars of A / B per shared shape, for atrous and for PyTorch, on a log axis."""
    drawn = [p for p in points if p[2] is not None]
    if not drawn or not plots.available():
        return None
    plt = plots.pyplot()
    with plots.style():
        fig, ax = plt.subplots(figsize=(7.5, 1.0 + 0.3 * len(drawn)))
        ys = range(len(drawn))
        ax.barh([y - 0.2 for y in ys], [p[2] for p in drawn], height=0.4,
                color=plots.COLORS["atrous-numba"], label="atrous (tuned)")
        torch = [(y + 0.2, p[3]) for y, p in zip(ys, drawn, strict=True) if p[3] is not None]
        if torch:
            ax.barh([y for y, _ in torch], [v for _, v in torch], height=0.4,
                    color=plots.COLORS["torch"], label="PyTorch")
        ax.axvline(1.0, color="black", lw=0.8)
        ax.set_yticks(list(ys))
        ax.set_yticklabels([plots.plain(f"{p[0]} · {p[1]}") for p in drawn])
        ax.invert_yaxis()
        ax.set_xscale("log")
        ax.set_xlabel("A's time / B's time (log; above 1: B is faster)")
        ax.set_title("B against A per shape")
        ax.legend(fontsize=7, loc="lower right")
        return Plot("compare-speedup", "B against A per shape", plots.png(fig),
                    "Bar chart of A's time over B's for every shape benchmarked on both")


def _side(tag: str, data: ReportData) -> list[tuple[str, str]]:
    out = [(f"{tag}: machine", data.label)]
    if data.run:
        out.append((f"{tag}: benchmark run", f"{data.run} at"
                                             f" {min(r.timestamp for r in data.rows)}"))
    versions = data.rows[0] if data.rows else None
    if versions:
        out.append((f"{tag}: versions", f"atrous {versions.atrous_version}, numba"
                                        f" {versions.numba_version}, torch"
                                        f" {versions.torch_version or '–'}"))
    out.append((f"{tag}: tuned problems", str(len(data.records))))
    return out


def compare_page(a: ReportData, b: ReportData) -> Page:
    """The side-by-side page of A and B."""
    summary, tables, points = side_by_side(a, b)
    if not summary:
        summary = ["No benchmarked shape is shared by A and B."]
    bench = Section("side-by-side", "Benchmarks side by side", tables=tables,
                    intro="Shapes benchmarked on both sides, matched by case, layout and dtype.")
    plot = speedup_plot(points)
    if plot:
        bench.plots.append(plot)
    tuning = Section("configs", "Tuned configs", tables=[config_changes(a, b)])
    now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    title = f"atrous compare: A {a.machine}{f' run {a.run}' if a.run else ''} vs B" \
            f" {b.machine}{f' run {b.run}' if b.run else ''}"
    return Page(title, _side("A", a) + _side("B", b), summary, [bench, tuning], now)


def _name(selector: str) -> str:
    path = Path(selector)
    return path.stem if path.suffix == ".json" else selector


def compare(first: str, second: str, db: str | Path | None = None,
            out: str | Path | None = None) -> Path:
    """Render the comparison of ``first`` (A) and ``second`` (B) into ``out`` (default
    ``reports/compare-<A>-vs-<B>/``); returns the path of its ``index.html``."""
    a, b = resolve(first, db), resolve(second, db)
    name = slug(f"compare-{_name(first)}-vs-{_name(second)}")
    out_dir = Path(out) if out is not None else REPORTS_DIR / name
    return write_page(compare_page(a, b), out_dir, results_csv=to_csv([*a.rows, *b.rows]))
