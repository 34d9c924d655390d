"""The `atrous bench`, `atrous ceilings` and `atrous report` commands: their options and
what they print. ``atrous.cli`` registers them; the work is done by ``atrous.jobs.bench``,
``atrous.report.ceilings`` and ``atrous.report.render`` / ``compare``.

This module imports nothing heavy at import time (the CLI builds its parser from it).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterable
from typing import Any

from atrous.core.registry import OPS

SUITES = ("deeplabv3", "smoke")


def print_wide(console: Any, table: Any) -> None:
    """Print a wide table: at the terminal's width, or at least 200 columns into a file or
    pipe, where rich would otherwise assume 80 and cut the cells short (``print``'s
    ``width=`` does not widen a table, so the console's width is set for the call)."""
    if console.is_terminal:
        console.print(table)
        return
    width = console.width
    console.width = max(width, 200)
    try:
        console.print(table)
    finally:
        console.width = width


def _progress(console: Any, description: str) -> Callable[[Iterable], Iterable]:
    from rich.progress import track

    return lambda items: track(list(items), description=description, console=console,
                               transient=True)


def add_suite_options(p: argparse.ArgumentParser, *, with_op_layout: bool = True) -> None:
    """The suite selection `atrous bench` (and `atrous report --measure`) take."""
    if with_op_layout:
        p.add_argument("--op", action="append", choices=sorted(OPS), help="repeatable")
        p.add_argument("--layout", nargs="+", default=["NCHW", "NHWC"],
                       choices=["NCHW", "NHWC"])
        p.add_argument("--dtype", nargs="+", default=["float32"],
                       choices=["float16", "bfloat16", "float32", "float64"])
    p.add_argument("--suite", default="deeplabv3", choices=SUITES)
    p.add_argument("--batch", nargs="+", type=int, default=[1, 4])
    p.add_argument("--no-numpy", action="store_true", help="skip the (slow) NumPy reference")


def add_bench_options(p: argparse.ArgumentParser) -> None:
    """`atrous bench`'s options beyond the suite selection."""
    p.add_argument("--db", help="tuning database whose configs atrous runs; rows are stored"
                                " beside it (default: the user cache directory)")
    p.add_argument("--device", default="cpu", help="cpu (Numba kernels) or cuda[:N] (Triton)")
    p.add_argument("--no-torch", action="store_true", help="do not time PyTorch")
    p.add_argument("--no-onnx", action="store_true", help="do not time ONNX Runtime")
    p.add_argument("--no-openvino", action="store_true", help="do not time OpenVINO")
    p.add_argument("--cache", default="auto", choices=["auto", "cold", "warm"],
                   help="CPU timing: auto rotates inputs past the LLC for memory-bound ops")
    p.add_argument("--case", action="append", metavar="NAME",
                   help="only the suite's case of this name, e.g. \"upsample 256x1x1->33x33"
                        " b4\" (repeatable; each row's command names its case)")
    p.add_argument("--shared-process", action="store_true",
                   help="time every library in this process instead of one worker process"
                        " per library (their thread pools can then disturb each other)")
    p.add_argument("--csv", help="also write this run's rows to this CSV file")


def add_report_parsers(sub: Any) -> None:
    """Register `atrous ceilings` and `atrous report` on the CLI's subparsers."""
    c = sub.add_parser("ceilings", help="the machine's measured bandwidth and arithmetic peak")
    c.add_argument("--db", help="tuning database; ceilings are stored beside it")
    c.add_argument("--device", default="cpu", help="cpu, or cuda[:N] for a GPU's ceilings")
    c.add_argument("--measure", action="store_true", help="measure again even if stored")
    c.set_defaults(func=cmd_ceilings)

    r = sub.add_parser("report", help="HTML, Markdown, CSV and plots of tuning and benchmarks")
    r.add_argument("--db", help="tuning database (benchmark rows and ceilings beside it)")
    r.add_argument("--machine", help="fingerprint id (default: this machine, else the latest)")
    r.add_argument("--run", help="benchmark run id (default: the machine's latest)")
    r.add_argument("--out", help="output directory (default: reports/<fingerprint id>/)")
    r.add_argument("--compare", nargs=2, metavar=("A", "B"),
                   help="two fingerprint ids, run ids or tuning files, side by side")
    r.add_argument("--measure", action="store_true",
                   help="measure first: ceilings again, and `atrous bench` on the suite")
    add_suite_options(r)
    r.add_argument("--device", default="cpu", help="with --measure: cpu or cuda[:N]")
    r.set_defaults(func=cmd_report)


class CaseError(ValueError):
    """A ``--case`` that names no case of the selected suite."""


def _entries(args: argparse.Namespace) -> list[Any]:
    from atrous.jobs.suite import SUITES as BUILD

    entries = [e for layout in args.layout for dtype in args.dtype
               for e in BUILD[args.suite](layout, dtype, tuple(args.batch))]
    entries = [e for e in entries if not args.op or e.problem.op in args.op]
    cases = getattr(args, "case", None)
    if cases:
        unknown = sorted(set(cases) - {e.name for e in entries})
        if unknown:
            known = ", ".join(dict.fromkeys(e.name for e in entries))
            raise CaseError(f"--case {unknown[0]!r} is not a case of suite"
                             f" {args.suite!r} (batch {' '.join(map(str, args.batch))}"
                             f"{', op ' + ' '.join(args.op) if args.op else ''}); its cases:"
                             f" {known}")
        entries = [e for e in entries if e.name in cases]
    return entries


def run_bench(args: argparse.Namespace, console: Any, *, remeasure: bool = False) -> list[Any]:
    """Time the suite of ``args``, store the rows beside the database, print a table."""
    from atrous.jobs.bench import Settings, bench, write_csv
    from atrous.jobs.ceilings import ensure_ceilings
    from atrous.report.store import append_rows, bench_path

    device = getattr(args, "device", "cpu")
    settings = Settings(device=device, numpy=not args.no_numpy,
                        torch=not getattr(args, "no_torch", False),
                        onnx=not getattr(args, "no_onnx", False),
                        openvino=not getattr(args, "no_openvino", False),
                        cache=getattr(args, "cache", "auto"),
                        isolate=not getattr(args, "shared_process", False),
                        suite=args.suite, db=str(args.db) if args.db else "")
    entries = _entries(args)  # a bad --case fails before any measuring
    ceilings = ensure_ceilings(args.db, device, remeasure=remeasure)
    rows = bench(entries, settings=settings, ceilings=ceilings, tuning=args.db,
                 progress=_progress(console, "benchmarking"))
    append_rows(bench_path(args.db), rows)
    _bench_table(rows, console)
    console.print(f"run {rows[0].run if rows else '-'}: {len(rows)} rows added to"
                  f" {bench_path(args.db)} (and .csv)", highlight=False, soft_wrap=True)
    if getattr(args, "csv", None):
        write_csv(rows, args.csv)
        console.print(f"rows written to {args.csv}", highlight=False)
    return rows


#: Short column names for the terminal table (the report has the full ones).
_SHORT = {"atrous-numba": "atrous", "atrous-triton": "atrous", "atrous-numba-default": "default",
          "atrous-triton-default": "default", "atrous-numba-plain": "plain",
          "atrous-triton-plain": "plain", "atrous-numba-prepared": "prepared",
          "atrous-triton-prepared": "prepared", "torch": "torch", "onnxruntime": "onnxrt",
          "openvino": "openvino", "numpy-reference": "numpy"}


def _bench_table(rows: list[Any], console: Any) -> None:
    """A compact table of median ms per implementation, then the summary lines."""
    from rich.table import Table

    from atrous.report.summary import summarize, user_row

    impls = list(dict.fromkeys(r.implementation for r in rows))
    dtypes = sorted({r.dtype for r in rows})
    table = Table(title=f"atrous bench: median ms per call ({', '.join(dtypes)})")
    table.add_column("case", no_wrap=True)
    table.add_column("layout")
    for col in [*(_SHORT.get(i, i) for i in impls), "x torch", "of roof"]:
        table.add_column(col, justify="right")
    cases: dict[tuple, dict] = {}
    for r in rows:
        cases.setdefault((r.name, r.layout, r.dtype), {})[r.implementation] = r
    for (name, layout, _), cells in cases.items():
        ours = user_row(cells)  # a convolution's plain call, where it was timed
        torch = cells.get("torch")
        ok = ours is not None and ours.ok
        speedup = torch.median_ms / ours.median_ms if ok and torch and torch.ok else None
        table.add_row(name, layout, *(
            f"{cells[i].median_ms:.3g}" if i in cells and cells[i].ok else "-" for i in impls),
            f"{speedup:.2f}x" if speedup else "-",
            f"{ours.ceiling_fraction:.0%}" if ok and ours.ceiling_fraction is not None
            else "-")
    print_wide(console, table)
    for s in summarize(rows):
        console.print(s.line(), highlight=False, markup=False, soft_wrap=True)
    if rows and rows[0].command:
        console.print(f"each row again, e.g.: {rows[0].command}", highlight=False,
                      markup=False, soft_wrap=True)


def cmd_bench(args: argparse.Namespace, console: Any) -> int:
    """`atrous bench`: exit code 1 when an atrous kernel failed on some shape."""
    from rich.markup import escape

    from atrous.jobs.bench import FAILED

    try:
        rows = run_bench(args, console)
    except CaseError as exc:
        console.print(f"[red]atrous bench:[/red] {escape(str(exc))}", highlight=False)
        return 2
    failed = [r for r in rows if r.implementation.startswith("atrous") and
              r.note.startswith(FAILED)]
    for r in failed:
        console.print(f"[red]{r.implementation} failed[/red] on {escape(r.name)}"
                      f" ({r.layout}): {escape(r.note)}", highlight=False)
    return 1 if failed else 0


def cmd_ceilings(args: argparse.Namespace, console: Any | None = None) -> int:
    """`atrous ceilings`: print this machine's ceilings (measured first when missing)."""
    from rich.table import Table
    from rich.text import Text

    from atrous.jobs.ceilings import ensure_ceilings
    from atrous.report.store import ceilings_path

    console = console or _console()
    if args.device.startswith("cuda"):
        from atrous.autotune.hardware import cuda_device

        if cuda_device() is None:
            console.print("[red]atrous ceilings:[/red] no CUDA GPU is available")
            return 2
    with console.status("measuring ceilings" if args.measure else "reading ceilings"):
        c = ensure_ceilings(args.db, args.device, remeasure=args.measure)
    table = Table(title=Text(f"ceilings of {c.machine} ({c.device}), measured"
                             f" {c.measured_at}"))
    for col in ("ceiling", "dtype", "value", "how"):
        table.add_column(col, justify="right" if col == "value" else "left")
    for e in c.entries:
        table.add_row(*(Text(t) for t in (e.name, e.dtype or "-", f"{e.value:,.1f} {e.unit}",
                                          e.method)))
    console.print(table)
    console.print(f"memory roof {c.bandwidth() or 0:,.1f} GB/s; stored in"
                  f" {ceilings_path(args.db)}", highlight=False, markup=False)
    return 0


def cmd_report(args: argparse.Namespace, console: Any | None = None) -> int:
    """`atrous report`: render from stored data (measuring first only with --measure)."""
    from rich.markup import escape

    from atrous.report.data import SelectionError

    console = console or _console()
    try:
        if args.compare:
            from atrous.report.compare import compare

            index = compare(args.compare[0], args.compare[1], args.db, args.out)
        else:
            from atrous.report.data import load
            from atrous.report.render import render
            from atrous.report.summary import summarize

            if args.measure:
                rows = run_bench(args, console, remeasure=True)
                args.run = rows[0].run if rows else args.run
            data = load(args.db, machine=args.machine, run=args.run)
            index = render(data, args.out)
            if not args.measure:  # the benchmark printed them already
                for s in summarize(data.rows):
                    console.print(s.line(), highlight=False, markup=False, soft_wrap=True)
    except (SelectionError, RuntimeError, OSError, ValueError, TypeError, RecursionError,
            OverflowError) as exc:  # bad input files among them: one line, never a traceback
        console.print(f"[red]atrous report:[/red] {escape(str(exc))}", highlight=False,
                      soft_wrap=True)
        return 2
    # soft_wrap: the path stays on one line, to be copied or opened.
    console.print(f"report: {index.resolve()}", highlight=False, markup=False, soft_wrap=True)
    return 0


def _console() -> Any:
    from rich.console import Console

    return Console(width=None if sys.stdout.isatty() else 160)
