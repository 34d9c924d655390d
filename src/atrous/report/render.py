"""Write a report directory: ``index.html``, ``report.md``, ``results.csv``, ``tuning.csv``
and ``plots/*.png``, from the files beside a tuning database (nothing is measured)."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from atrous.report.build import build_page
from atrous.report.csvsafe import csv_cell
from atrous.report.data import ReportData, load
from atrous.report.html import render_html
from atrous.report.markdown import render_markdown
from atrous.report.page import Page, slug
from atrous.report.rows import BenchRow, to_csv
from atrous.report.store import write_text_atomic

#: Where reports go by default: ``reports/<fingerprint id>/`` under the working directory.
REPORTS_DIR = Path("reports")


def records_csv(records: Sequence[Any]) -> str:
    """Tuning records as CSV (one line per tuned problem; configs as JSON; text a
    spreadsheet would evaluate neutralised, see :func:`csv_cell`)."""
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
            row.append(csv_cell(json.dumps(value, sort_keys=True) if isinstance(value, dict)
                                else "" if value is None else value))
        writer.writerow(row)
    return buf.getvalue()


#: Written last into a report folder: the files this report wrote there (relative paths),
#: so the next report into the same folder removes only files atrous wrote.
MANIFEST = ".atrous-report.json"
_OWN_FILE = re.compile(r"plots/[A-Za-z0-9][A-Za-z0-9_.-]{0,150}\.png")


def folder_name(machine: str) -> str:
    """A machine id as one safe folder name: :func:`slug` of it, cut to 64 characters,
    with a hash of the id appended when slugging changed it (so two ids stay apart)."""
    import hashlib

    name = slug(machine)[:64]
    if name != machine:
        name = f"{name}-{hashlib.sha256(machine.encode('utf-8', 'replace')).hexdigest()[:8]}"
    return name


def _remove_old_plots(out_dir: Path, keep: set[str]) -> None:
    """Delete the plots an earlier report listed in the folder's manifest and this one
    does not write again: only names of the form ``plots/<slug>.png``, only plain files."""
    from atrous.autotune.untrusted import BadData, read_json

    if (out_dir / "plots").is_symlink():  # not a folder this report made: leave it alone
        return
    try:
        listed = read_json(out_dir / MANIFEST)
    except (OSError, BadData):
        return
    if not isinstance(listed, dict) or not isinstance(listed.get("files"), list):
        return
    for name in listed["files"]:
        if not isinstance(name, str) or not _OWN_FILE.fullmatch(name) or name in keep:
            continue
        old = out_dir / name
        if old.is_file() and not old.is_symlink():
            old.unlink()


def write_page(page: Page, out_dir: Path, *, rows: Sequence[BenchRow] = (),
               records: Sequence[Any] = (), results_csv: str | None = None) -> Path:
    """Write ``page`` and its data into ``out_dir``; returns the path of ``index.html``.

    PNGs left in ``plots/`` by an earlier report in the same directory (as its manifest,
    ``.atrous-report.json``, lists them) are removed, so the directory holds exactly this
    report; no other file is ever deleted.
    """
    import json

    out_dir.mkdir(parents=True, exist_ok=True)
    plots_dir = out_dir / "plots"
    written = [f"plots/{plot.name}.png" for plot in page.plots()]
    _remove_old_plots(out_dir, set(written))
    if written:
        plots_dir.mkdir(exist_ok=True)
    for plot in page.plots():
        (plots_dir / f"{plot.name}.png").write_bytes(plot.png)
    write_text_atomic(out_dir / "report.md", render_markdown(page))
    write_text_atomic(out_dir / "results.csv", results_csv if results_csv is not None
                      else to_csv(rows))
    written += ["report.md", "results.csv"]
    if records:
        write_text_atomic(out_dir / "tuning.csv", records_csv(records))
        written.append("tuning.csv")
    index = out_dir / "index.html"
    write_text_atomic(index, render_html(page))  # its presence means a whole report
    write_text_atomic(out_dir / MANIFEST, json.dumps({"files": [*written, "index.html"]}))
    return index


def render(data: ReportData, out: str | Path | None = None) -> Path:
    """Write the report of ``data`` into ``out`` (default ``reports/<machine>/``, the
    machine id made a safe folder name by :func:`folder_name`); returns the path of its
    ``index.html``."""
    out_dir = Path(out) if out is not None else REPORTS_DIR / folder_name(data.machine)
    return write_page(build_page(data), out_dir, rows=data.rows, records=data.records)


def report(db: str | Path | None = None, *, machine: str | None = None,
           run: str | None = None, out: str | Path | None = None) -> Path:
    """Render the report of one machine (default: this one) from the files beside the
    tuning database ``db`` (see :func:`atrous.report.data.load`); returns the path of its
    ``index.html``. Raises data.SelectionError when there is nothing to report."""
    return render(load(db, machine=machine, run=run), out)
