"""Write a report directory: ``index.html``, ``report.md``, ``results.csv``, ``tuning.csv``
and ``plots/*.png``, from the files beside a tuning database (nothing is measured)."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from atrous.report.build import build_page
from atrous.report.data import ReportData, load
from atrous.report.html import render_html
from atrous.report.markdown import render_markdown
from atrous.report.page import Page
from atrous.report.rows import BenchRow, to_csv
from atrous.report.store import write_text_atomic

#: Where reports go by default: ``reports/<fingerprint id>/`` under the working directory.
REPORTS_DIR = Path("reports")


def records_csv(records: Sequence[Any]) -> str:
    """Tuning records as CSV (one line per tuned problem; configs as JSON)."""
    import json

    fields = ["op", "backend", "key", "layout", "dtype", "config", "median_s", "p20_s", "p80_s",
              "default_config", "default_median_s", "speedup", "validation_error", "strategy",
              "trials", "failed", "pruned", "policy", "tuned_at", "atrous_version"]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(fields)
    for rec in records:
        row = []
        for f in fields:
            value = getattr(rec, f)
            row.append(json.dumps(value, sort_keys=True) if isinstance(value, dict)
                       else "" if value is None else value)
        writer.writerow(row)
    return buf.getvalue()


def write_page(page: Page, out_dir: Path, *, rows: Sequence[BenchRow] = (),
               records: Sequence[Any] = (), results_csv: str | None = None) -> Path:
    """Write ``page`` and its data into ``out_dir``; returns the path of ``index.html``.

    PNGs left in ``plots/`` by an earlier report in the same directory are removed first,
    so the directory holds exactly this report.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    plots_dir = out_dir / "plots"
    plots_dir.mkdir(exist_ok=True)
    for old in plots_dir.glob("*.png"):
        old.unlink()
    for plot in page.plots():
        (plots_dir / f"{plot.name}.png").write_bytes(plot.png)
    write_text_atomic(out_dir / "report.md", render_markdown(page))
    write_text_atomic(out_dir / "results.csv", results_csv if results_csv is not None
                      else to_csv(rows))
    if records:
        write_text_atomic(out_dir / "tuning.csv", records_csv(records))
    index = out_dir / "index.html"
    write_text_atomic(index, render_html(page))  # last: its presence means a whole report
    return index


def render(data: ReportData, out: str | Path | None = None) -> Path:
    """Write the report of ``data`` into ``out`` (default ``reports/<fingerprint id>/``);
    returns the path of its ``index.html``."""
    out_dir = Path(out) if out is not None else REPORTS_DIR / data.machine
    return write_page(build_page(data), out_dir, rows=data.rows, records=data.records)


def report(db: str | Path | None = None, *, machine: str | None = None,
           run: str | None = None, out: str | Path | None = None) -> Path:
    """Render the report of one machine (default: this one) from the files beside the
    tuning database ``db`` (see :func:`atrous.report.data.load`); returns the path of its
    ``index.html``. Raises data.SelectionError when there is nothing to report."""
    return render(load(db, machine=machine, run=run), out)
