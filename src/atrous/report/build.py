"""One machine's report page: header facts, summary lines, tables and plots, from ReportData."""

from __future__ import annotations

import datetime
import re
from collections.abc import Iterable

from atrous.report import plots, tables
from atrous.report.data import ReportData
from atrous.report.page import Page, Section
from atrous.report.summary import summarize

#: What each timing policy name means (atrous.autotune.timing's names).
POLICIES = {
    "cpu-warm-median-v1": "CPU wall clock, warm caches: a warm-up call, samples of at least"
                          " 20 ms, median and p20/p80 of up to 7 samples",
    "cpu-cold-rotate-v1": "CPU wall clock, cold caches: as warm, with inputs and outputs"
                          " rotated through copies larger than twice the last-level cache",
    "cuda-events-l2flush-v1": "GPU time between CUDA events around each call, the L2 cache"
                              " flushed before it; median and p20/p80",
}
OPS = ("global_avg_pool", "dilated_conv2d", "upsample_bilinear")


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def _ordered_ops(names: Iterable[str]) -> list[str]:
    """The known ops first, then other names found in the data that could be op names
    (short identifiers: they name plot files)."""
    present = set(names)
    other = {n for n in present - set(OPS) if re.fullmatch(r"[a-z][a-z0-9_]{0,63}", n)}
    return [o for o in OPS if o in present] + sorted(other)


def duration(seconds: float | None) -> str:
    """``3725`` as ``1 h 2 min``; ``None`` as ``–``."""
    if seconds is None:
        return "–"
    if seconds < 90:
        return f"{seconds:.0f} s"
    minutes = round(seconds / 60)
    return f"{minutes // 60} h {minutes % 60} min" if minutes >= 60 else f"{minutes} min"


def facts(data: ReportData) -> list[tuple[str, str]]:
    """The header: machine, versions, timing policies, dates, tuning time, sources."""
    fp = data.fingerprint
    out = [("machine", f"{data.machine}" + (f" (family {fp['family']})" if "family" in fp
                                            else ""))]
    if fp.get("kind") == "cuda":
        out.append(("GPU", f"{fp.get('name', '?')}, compute capability"
                           f" {fp.get('capability', '?')}, {fp.get('sms', '?')} SMs"))
    elif fp:
        caches = fp.get("caches") or {}
        shown = ", ".join(f"{k} {v // 1024} KiB" for k, v in caches.items()
                          if isinstance(v, int))
        out.append(("CPU", f"{fp.get('brand', '?')} (LLVM {fp.get('llvm_cpu', '?')}),"
                           f" {fp.get('cores', '?')} cores" + (f"; {shown}" if shown else "")))
    versions: dict[str, str] = {}
    for row in data.rows[:1]:
        versions.update({"atrous": row.atrous_version, "numba": row.numba_version,
                         "triton": row.triton_version, "torch": row.torch_version,
                         "onnxruntime": row.onnxruntime_version})
    for key in ("numba", "llvmlite", "triton", "torch", "cuda"):
        if fp.get(key) and not versions.get(key):
            versions[key] = str(fp[key])
    if data.records and not versions.get("atrous"):
        versions["atrous"] = data.records[0].atrous_version
    out.append(("versions", ", ".join(f"{k} {v}" for k, v in versions.items() if v) or "–"))
    policies = sorted({r.policy for r in data.rows if r.policy}
                      | {r.policy for r in data.records})
    out.append(("timing policy", "; ".join(f"{p}: {POLICIES.get(p, 'see atrous.autotune.timing')}"
                                           for p in policies) or "–"))
    out.append(("report generated", _now()))
    if data.rows:
        out.append(("benchmark run", f"{data.run} at {min(r.timestamp for r in data.rows)}"))
    if data.records:
        first = min(r.tuned_at for r in data.records)
        last = max(r.tuned_at for r in data.records)
        out.append(("tuned", f"{len(data.records)} problems, {first}"
                             + (f" to {last}" if last != first else "")))
        out.append(("tuning time", f"{duration(data.tuning_seconds())} ({len(data.trials)}"
                                   " trials in the trial log)"))
    out.append(("sources", "; ".join(f"{k}: {v}" for k, v in data.sources.items())))
    return out


def build_page(data: ReportData) -> Page:
    """The report page of ``data`` (plots only when matplotlib is installed)."""
    drawing = plots.available()
    summaries = summarize(data.rows)
    summary = [s.line() for s in summaries]
    if not summary:
        summary = ["No benchmark rows for this machine yet: run `atrous bench` (tables of"
                   " tuned configs below come from the tuning database)."]
    ops = _ordered_ops([r.op for r in data.rows] + [r.op for r in data.records]
                       + [t.op for t in data.trials])
    bench = Section("benchmarks", "Time per shape against every baseline",
                    intro="Each implementation on the same inputs, timed under the same policy"
                          " in one run. atrous runs the config the tuning database gives this"
                          " machine (source in brackets: exact, nearest, family or default).")
    for op in ops:
        if any(r.op == op for r in data.rows):
            bench.tables.append(tables.bench_table(op, data.rows))
            plot = plots.time_per_shape(op, data.rows) if drawing else None
            if plot:
                bench.plots.append(plot)
    missing = tables.notes_table(data.rows)
    if missing:
        bench.tables.append(missing)
    if not data.rows:
        bench.notes.append("No benchmark rows: run `atrous bench` on this machine.")

    roof = Section("roofline", "Against the machine's measured ceilings",
                   intro="Ceilings measured by atrous on this machine (`atrous ceilings`):"
                         " memory bandwidth by parallel read, copy and fill; arithmetic peak"
                         " by a register-blocked FMA loop and a large GEMM.")
    roof.tables.append(tables.ceilings_table(data.ceilings))
    plot = plots.roofline(data.rows, data.ceilings) if drawing else None
    if plot:
        roof.plots.append(plot)

    tuning = Section("tuning", "Tuning", intro="The configs `atrous tune` chose, and the"
                     " landscape it searched (from the trial log).")
    if data.records:
        tuning.tables.append(tables.tuning_table(data.records, data.rows))
    else:
        tuning.notes.append("No tuning records for this machine: run `atrous tune`.")
    for op in ops:
        plot = plots.landscape(op, data.trials) if drawing else None
        if plot:
            tuning.plots.append(plot)

    validation = Section("validation", "Validation error",
                         intro="Every candidate ran once on seeded inputs into a NaN-poisoned"
                               " output and was compared with the float64 NumPy reference"
                               " before it was timed; a wrong one can never win.")
    plot = plots.validation(data.records, data.trials) if drawing else None
    if plot:
        validation.plots.append(plot)
    sections = [bench, roof, tuning, validation]
    if not drawing:
        bench.notes.append("matplotlib is not installed: no plots (pip install"
                           " 'atrous[report]').")
    return Page(f"atrous report: {data.label}", facts(data), summary, sections, _now())
