"""The report's PNG plots, drawn with matplotlib's Agg backend (no display needed).

- time per shape against every baseline, one figure per op;
- a roofline: every benchmarked kernel against the measured bandwidth and compute ceilings;
- the tuning landscape of each op from the trial log: median time over two tunable
  parameters as a heat map, failed candidates marked; for the convolution one panel per
  CPU variant over its own keys, and one of variant against variant;
- the validation error of every candidate and tuned winner per op, against the tolerance.

matplotlib is optional (the ``report`` extra): :func:`available` says whether plots can be
drawn, and a report without it has tables only, with a note.
"""

from __future__ import annotations

import io
import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from atrous.report.ceilings import BANDWIDTH, Ceilings
from atrous.report.page import Plot
from atrous.report.rows import LABELS, ORDER, BenchRow

COLORS = {"atrous-numba": "#1b6ca8", "atrous-triton": "#1b6ca8",
          "atrous-numba-default": "#7fb3d5", "atrous-triton-default": "#7fb3d5",
          "torch": "#e67e22", "onnxruntime": "#8e44ad", "numpy-reference": "#95a5a6",
          "atrous-numba-plain": "#117a65", "atrous-triton-plain": "#117a65",
          "atrous-numba-prepared": "#48c9b0", "atrous-triton-prepared": "#48c9b0",
          "openvino": "#d4ac0d"}
OP_COLORS = {"global_avg_pool": "#16a085", "dilated_conv2d": "#c0392b",
             "upsample_bilinear": "#2c3e50"}
DPI = 110


def available() -> bool:
    """True when matplotlib can be imported."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight")
    pyplot().close(fig)
    return buf.getvalue()


def style() -> Any:
    """Small fonts and light grids for every figure."""
    import matplotlib

    return matplotlib.rc_context({"font.size": 8, "axes.titlesize": 9, "axes.grid": True,
                                  "grid.alpha": 0.3})


def plain(text: object) -> str:
    """``text`` shown literally: a ``$`` in an op or shape name must not start mathtext
    (matplotlib's log-axis tick labels need mathtext, so it stays on for them)."""
    return str(text).replace("$", r"\$")


# ------------------------------------------------------------------------ time per shape


def time_per_shape(op: str, rows: Sequence[BenchRow]) -> Plot | None:
    """Horizontal bars of median time (p20-p80 whiskers) per shape and implementation."""
    mine = [r for r in rows if r.op == op and r.ok]
    if not mine:
        return None
    cases = list(dict.fromkeys((r.name, r.layout, r.dtype) for r in mine))
    impls = [i for i in ORDER if any(r.implementation == i for r in mine)]
    impls += sorted({r.implementation for r in mine} - set(impls))
    cell = {(r.name, r.layout, r.dtype, r.implementation): r for r in mine}
    several_dtypes = len({c[2] for c in cases}) > 1
    plt = pyplot()
    with style():
        height = 1.0 + 0.16 * len(cases) * max(len(impls), 2)
        fig, ax = plt.subplots(figsize=(7.5, min(height, 30)))
        bar = 0.8 / len(impls)
        for j, impl in enumerate(impls):
            ys, xs, lo, hi = [], [], [], []
            for i, case in enumerate(cases):
                r = cell.get((*case, impl))
                if r is None:
                    continue
                ys.append(i + (j - (len(impls) - 1) / 2) * bar)
                xs.append(r.median_ms)
                lo.append(r.median_ms - (r.p20_ms or r.median_ms))
                hi.append((r.p80_ms or r.median_ms) - r.median_ms)
            ax.barh(ys, xs, height=bar, xerr=[lo, hi], color=COLORS.get(impl, "#34495e"),
                    label=plain(LABELS.get(impl, impl)),
                    error_kw={"elinewidth": 0.6, "capsize": 1})
        ax.set_yticks(range(len(cases)))
        ax.set_yticklabels([plain(f"{n} · {lay}" + (f" · {d}" if several_dtypes else ""))
                            for n, lay, d in cases])
        ax.invert_yaxis()
        ax.set_xscale("log")
        ax.set_xlabel("median time per call, ms (log scale; whiskers: p20 to p80)")
        ax.set_title(plain(f"{op}: time per shape"))
        ax.legend(loc="lower right", fontsize=7, framealpha=0.9)
        return Plot(f"time-{op}", f"{op}: time per shape", png(fig),
                    f"Bar chart of the median time of every implementation on each {op} shape")


# ------------------------------------------------------------------------------ roofline


def roofline(rows: Sequence[BenchRow], ceilings: Ceilings | None) -> Plot | None:
    """Achieved GFLOP/s (on the work each implementation does) against arithmetic
    intensity, under the measured roofs."""
    ours = [r for r in rows if r.ok and r.implementation in ("atrous-numba", "atrous-triton")]
    theirs = [r for r in rows if r.ok and r.implementation in ("torch", "onnxruntime")]
    if not ours or ceilings is None or ceilings.bandwidth() is None:
        return None
    plt = pyplot()
    with style():
        fig, ax = plt.subplots(figsize=(7.5, 4.8))
        points = [(r.work_flops / r.bytes, r.work_flops / r.median_ms / 1e6)
                  for r in ours + theirs]
        x_lo = min(p[0] for p in points) / 3
        x_hi = max(p[0] for p in points) * 3
        xs = [x_lo * (x_hi / x_lo) ** (i / 200) for i in range(201)]
        bw = ceilings.bandwidth()
        top = 0.0
        for dtype in sorted({r.dtype for r in ours}):
            peak = ceilings.peak(dtype)
            if peak is None:
                continue
            top = max(top, peak)
            ax.plot(xs, [min(peak, bw * x) for x in xs], color="black", lw=1.5,
                    label=f"roof: {dtype} peak {peak:,.0f} GFLOP/s, {bw:,.0f} GB/s")
            for c in ceilings.entries:
                if c.kind != BANDWIDTH and c.dtype == dtype and c.value < peak:
                    ax.plot(xs, [c.value] * len(xs), ls=":", lw=1, color="#555",
                            label=f"{dtype} {c.name} {c.value:,.0f} GFLOP/s")
        others = [c for c in ceilings.entries if c.kind == BANDWIDTH and c.value < bw]
        for c, dashes in zip(others, ("--", "-.", (0, (1, 3))), strict=False):
            reach = [x for x in xs if not top or c.value * x <= top]
            ax.plot(reach, [c.value * x for x in reach], ls=dashes, lw=0.9, color="#7f8c8d",
                    label=f"{c.name} bandwidth {c.value:,.0f} GB/s")
        for op in dict.fromkeys(r.op for r in ours):
            color = OP_COLORS.get(op, "#34495e")
            for group, marker, fill in ((ours, "o", color), (theirs, "o", "none")):
                sel = [r for r in group if r.op == op]
                if not sel:
                    continue
                label = plain(f"{op} (atrous)" if group is ours
                               else f"{op} (PyTorch / ONNX Runtime)")
                ax.scatter([r.work_flops / r.bytes for r in sel],
                           [r.work_flops / r.median_ms / 1e6 for r in sel], marker=marker,
                           facecolors=fill, edgecolors=color, s=22, label=label, zorder=3)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("arithmetic intensity, FLOP per byte of the fewest bytes moved")
        ax.set_ylabel("GFLOP/s on the work done")
        ax.set_title("Roofline: kernels against the measured ceilings")
        ax.legend(fontsize=6.5, loc="upper left", bbox_to_anchor=(1.01, 1.0), framealpha=0.9)
        return Plot("roofline", "Roofline: atrous is credited with the FLOPs it computes"
                    " (its convolution skips taps in the padding), PyTorch and ONNX Runtime with"
                    " the full window's", png(fig),
                    "Log-log roofline chart of every benchmarked kernel against the measured"
                    " memory bandwidth and arithmetic peak")


# ----------------------------------------------------------------------------- landscape


def _varied(configs: Iterable[dict[str, Any]]) -> dict[str, set]:
    """The parameters that take more than one value among ``configs``, with their values."""
    values: dict[str, set] = {}
    for c in configs:
        for k, v in c.items():
            values.setdefault(k, set()).add(v)
    return {k: v for k, v in values.items() if len(v) > 1}


def _axes_params(varied: dict[str, set]) -> list[str]:
    """The (at most two) parameters to draw: block sizes first, then by how many values
    they take."""
    return sorted(varied, key=lambda k: (not k.upper().startswith(("BLOCK", "ROWS")),
                                         -len(varied[k]), k))[:2]


def _sort_values(values: Iterable[Any]) -> list[Any]:
    """Distinct values in order: numbers, then strings, then None (a key that a problem's
    config lacks, e.g. GAP's ROWS in NHWC)."""
    return sorted(set(values), key=lambda v: (v is None, isinstance(v, str), 0 if v is None
                                              else v))


@dataclass(frozen=True)
class Panel:
    """One heat map of a landscape: ``grid[y][x]`` is the geometric mean over problems of
    the best median in the cell relative to each problem's best (NaN: no timed trial);
    ``tried`` and ``failed`` count candidates per (x, y) cell."""

    title: str
    px: str
    py: str | None
    xs: list[Any]
    ys: list[Any]
    grid: list[list[float]]
    tried: dict[tuple, int]
    failed: dict[tuple, int]
    others: list[str]


def _panel(title: str, mine: Sequence[Any], bests: dict[str, float],
           params: list[str] | None = None) -> Panel | None:
    """The panel of ``mine`` over ``params`` (default: the two most varied), each cell
    relative to its problem's best in ``bests`` (by problem key)."""
    varied = _varied(t.trial.config for t in mine)
    params = params if params is not None else _axes_params(varied)
    if not params:
        return None
    px, py = params[0], params[1] if len(params) > 1 else None
    xs = _sort_values(t.trial.config.get(px) for t in mine)
    ys = _sort_values(t.trial.config.get(py) for t in mine) if py else [None]
    rel: dict[tuple, list[float]] = {}
    failed: Counter = Counter()
    tried: Counter = Counter()
    for key in {t.key for t in mine}:
        cells: dict[tuple, float] = {}
        best = bests.get(key)
        for t in (t for t in mine if t.key == key):
            c = (t.trial.config.get(px), t.trial.config.get(py) if py else None)
            tried[c] += 1
            if t.trial.status == "failed" or t.trial.timing is None:
                failed[c] += 1
            elif best:
                cells[c] = min(cells.get(c, math.inf), t.trial.median / best)
        for c, v in cells.items():
            rel.setdefault(c, []).append(v)
    grid = [[math.nan] * len(xs) for _ in ys]
    for (x, y), values in rel.items():
        grid[ys.index(y)][xs.index(x)] = math.exp(sum(map(math.log, values)) / len(values))
    others = sorted(set(varied) - set(params))
    return Panel(title, px, py, xs, ys, grid, dict(tried), dict(failed), others)


def landscape_panels(op: str, trials: Sequence[Any]) -> tuple[str, list[Panel]]:
    """(backend, panels) of ``op``'s tuning trials on its most tuned backend: for an op
    with variants (a "variant" key) one panel per variant over that variant's own keys,
    then one of variant against variant; else one panel over the two most varied keys.
    Every cell is relative to its problem's best config over all variants."""
    mine = [t for t in trials if t.op == op]
    if not mine:
        return "", []
    backend = Counter(t.backend for t in mine).most_common(1)[0][0]
    mine = [t for t in mine if t.backend == backend]
    bests: dict[str, float] = {}
    for t in mine:
        if t.trial.timing is not None and t.trial.status != "failed":
            bests[t.key] = min(bests.get(t.key, math.inf), t.trial.median)
    variants = _sort_values(v for t in mine if (v := t.trial.config.get("variant")) is not None)
    if not variants:
        panel = _panel(f"{op} ({backend})", mine, bests)
        return backend, [panel] if panel else []
    panels = []
    for variant in variants:
        own = [t for t in mine if t.trial.config.get("variant") == variant]
        varied = _varied(t.trial.config for t in own)
        panel = _panel(f'variant "{variant}"', own, bests,
                       _axes_params(varied) or ["variant"])
        if panel:
            panels.append(panel)
    versus = _panel("variant against variant", mine, bests, ["variant"])
    if versus:  # each cell is that variant's best config: naming every key says nothing
        versus = replace(versus, others=[])
    return backend, panels + ([versus] if versus else [])


def landscape(op: str, trials: Sequence[Any]) -> Plot | None:
    """Heat maps of tuning trials of ``op`` (:func:`landscape_panels`): for each pair of
    values of a panel's two parameters, the best median over the other parameters relative
    to each problem's best config, as a geometric mean over the tuned problems; cells where
    every candidate failed are marked with a cross, cells never tried left blank."""
    backend, panels = landscape_panels(op, trials)
    if not panels:
        return None
    problems = len({t.key for t in trials if t.op == op and t.backend == backend})
    count = sum(1 for t in trials if t.op == op and t.backend == backend)
    plt = pyplot()
    with style():
        import numpy as np
        from matplotlib.colors import LogNorm

        grids = [np.array(p.grid, dtype=float) for p in panels]
        finite = np.concatenate([g[np.isfinite(g)] for g in grids])
        vmax = max(float(finite.max()) if finite.size else 2.0, 1.01)
        widths = [1.2 + 0.9 * len(p.xs) for p in panels]
        height = 1.4 + 0.55 * max(len(p.ys) for p in panels)
        fig, axes = plt.subplots(1, len(panels), figsize=(sum(widths) + 1.2, height),
                                 gridspec_kw={"width_ratios": widths}, squeeze=False)
        for ax, panel, grid in zip(axes[0], panels, grids, strict=True):
            image = ax.imshow(grid, cmap="viridis_r", norm=LogNorm(vmin=1.0, vmax=vmax),
                              aspect="auto")
            _label_cells(ax, panel, grid, vmax)
            ax.set_title(plain(panel.title + (f"\n(best over {', '.join(panel.others)})"
                                              if panel.others else "")))
        bar = fig.colorbar(image, ax=list(axes[0]), label="time / problem's best (log scale)")
        ticks = sorted({1.0, vmax, *(v for v in (1.1, 1.25, 1.5, 2, 3, 5, 10, 30, 100, 300, 1000)
                                     if v < vmax / 1.05)})
        bar.set_ticks(ticks, labels=[f"{t:.3g}x" for t in ticks])
        bar.minorticks_off()
        fig.suptitle(plain(f"{op} ({backend}): tuning landscape over {problems} problem"
                           f"{'s' if problems != 1 else ''}, {count} trials"), y=1.12)
        names = ", ".join(p.title for p in panels)
        return Plot(f"landscape-{op}", f"{op}: tuning landscape ({names}); each cell is the"
                    " best over the keys not drawn, relative to each problem's best config;"
                    " blank cells were never tried, ✗ marks cells where every candidate"
                    " failed", png(fig),
                    f"Heat maps of {op}'s median time: {len(panels)} panels ({names}),"
                    " failed candidates marked")


def _label_cells(ax: Any, panel: Panel, grid: Any, vmax: float) -> None:
    """Each tried cell's value (or a failure mark), and the panel's axes."""
    import numpy as np

    for x, y in panel.tried:
        i, j = panel.ys.index(y), panel.xs.index(x)
        value = grid[i, j]
        failed = panel.failed.get((x, y), 0)
        if np.isfinite(value):
            text = f"{value:.2f}x" + (f"\n{failed} failed" if failed else "")
            color = "white" if value > math.sqrt(vmax) else "black"
        else:
            text, color = f"✗ failed ({failed})", "#c0392b"
        ax.text(j, i, text, ha="center", va="center", fontsize=7, color=color)
    ax.set_xticks(range(len(panel.xs)))
    ax.set_xticklabels([plain(v) for v in panel.xs])
    ax.set_yticks(range(len(panel.ys)))
    ax.set_yticklabels([plain(v) for v in panel.ys] if panel.py else [""])
    ax.set_xlabel(plain(panel.px))
    if panel.py:
        ax.set_ylabel(plain(panel.py))
    ax.grid(False)


# ---------------------------------------------------------------------------- validation


def validation(records: Sequence[Any], trials: Sequence[Any]) -> Plot | None:
    """Relative error of every validated candidate (grey) and tuned winner (by dtype) per op,
    with each dtype's tolerance; failed candidates with a measured error in red."""
    from atrous.core.tolerance import TOLERANCE

    if not records and not any(t.trial.error is not None for t in trials):
        return None
    present = {r.op for r in records} | {t.op for t in trials}
    ops = [o for o in OP_COLORS if o in present] + sorted(present - set(OP_COLORS))
    floor = 1e-17  # an exact result (error 0) is drawn at the bottom of the log axis
    plt = pyplot()
    with style():
        fig, ax = plt.subplots(figsize=(7.5, 3.8))
        labelled: set[str] = set()
        for i, op in enumerate(ops):
            errors = [(t.trial.error, t.trial.status == "failed") for t in trials
                      if t.op == op and t.trial.error is not None]
            for failed, color, label in ((False, "#bdc3c7", "candidates"),
                                         (True, "#c0392b", "failed candidates")):
                values = [e for e, f in errors if f == failed]
                if values:
                    jitter = [i - 0.25 + 0.5 * ((k * 0.618) % 1) for k in range(len(values))]
                    ax.scatter(jitter, [max(v, floor) for v in values], s=8, color=color,
                               label=None if label in labelled else label, zorder=2)
                    labelled.add(label)
        dtypes = sorted({r.dtype for r in records})
        palette = ["#1b6ca8", "#e67e22", "#16a085", "#8e44ad", "#c0392b"]
        for d, dtype in enumerate(dtypes):
            sel = [(ops.index(r.op), r.validation_error) for r in records if r.dtype == dtype]
            ax.scatter([x + 0.05 * d for x, _ in sel], [max(e, floor) for _, e in sel], s=28,
                       marker="D", color=palette[d % len(palette)],
                       label=f"tuned winners, {dtype}", zorder=3)
            if dtype in TOLERANCE:
                ax.axhline(TOLERANCE[dtype], ls="--", lw=0.8, color=palette[d % len(palette)])
                ax.annotate(f"{dtype} tolerance {TOLERANCE[dtype]:.0e}",
                            (len(ops) - 0.5, TOLERANCE[dtype]), ha="right", va="bottom",
                            fontsize=7)
        ax.set_xticks(range(len(ops)))
        ax.set_xticklabels([plain(o) for o in ops])
        ax.set_xlim(-0.6, len(ops) - 0.4)
        ax.set_yscale("log")
        ax.set_ylabel("max |out - ref| / max |ref|")
        ax.set_title("Validation error against the float64 reference")
        ax.legend(fontsize=7, loc="upper left", framealpha=0.9)
        return Plot("validation", "Validation error", png(fig),
                    "Scatter plot of the validation error of every candidate and tuned config"
                    " per op, with the tolerance per dtype")
