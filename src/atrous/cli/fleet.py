"""`atrous tune --cluster`, `atrous bench --cluster` and `atrous report --fleet`: their
options and what they print (``atrous.cli`` hands over to these when the option is
given; the work is done by ``atrous.fleet`` and ``atrous.report.fleet``).

Nothing here imports Ray at import time: without Ray, ``--cluster`` fails with one line
saying how to install it.
"""

from __future__ import annotations

import argparse
from typing import Any

from rich.markup import escape


def add_cluster_option(p: argparse.ArgumentParser) -> None:
    """`--cluster ADDRESS` (and its start timeout) on `atrous tune` or `atrous bench`."""
    p.add_argument("--cluster", metavar="ADDRESS",
                   help="run on a Ray cluster: auto (the cluster this machine joined),"
                        " ray://HOST:PORT, or local (start Ray here); every machine type"
                        " gets its own records (pip install 'atrous[cluster]')")
    p.add_argument("--start-timeout", type=float, default=None, metavar="SECONDS",
                   help="with --cluster: seconds a node's worker may take to start"
                        " (default 120)")


def add_fleet_option(p: argparse.ArgumentParser) -> None:
    """`--fleet` on `atrous report`."""
    p.add_argument("--fleet", action="store_true",
                   help="one page comparing every machine in the tuning database")


def _fail(console: Any, command: str, why: object) -> int:
    console.print(f"[red]atrous {command}:[/red] {escape(str(why))}", highlight=False,
                  soft_wrap=True)
    return 2


def _entries(args: argparse.Namespace) -> list[Any]:
    """The problems `atrous tune` and `atrous bench` select (the suite or --shapes, then
    --op and --case); a --case that names no case is an error naming it."""
    from atrous.jobs.shapes import load_shapes
    from atrous.jobs.suite import SUITES

    if getattr(args, "shapes", None):
        entries = load_shapes(args.shapes, args.layout, args.dtype)
    else:
        entries = [e for layout in args.layout for dtype in args.dtype
                   for e in SUITES[args.suite](layout, dtype, tuple(args.batch))]
    entries = [e for e in entries if not args.op or e.problem.op in args.op]
    cases = getattr(args, "case", None)
    if cases:
        unknown = sorted(set(cases) - {e.name for e in entries})
        if unknown:
            raise ValueError(f"--case {unknown[0]!r} is not a case of the selected suite")
        entries = [e for e in entries if e.name in cases]
    return entries


def tune_command(args: argparse.Namespace, console: Any) -> int:
    """`atrous tune --cluster ADDRESS`: tune on every machine type of a Ray cluster; exit
    status 1 when a problem failed or was left untuned."""
    from atrous.autotune.database import Database, DatabaseError
    from atrous.autotune.search import Budget
    from atrous.autotune.tuner import Settings
    from atrous.cli.report import print_wide
    from atrous.fleet.cluster import ClusterError, require_ray
    from atrous.fleet.driver import tune_fleet
    from atrous.fleet.progress import FleetProgress, summary_lines, tables

    try:
        require_ray()
        if args.device != "auto":
            raise ValueError("--device does not apply with --cluster: each node's workers"
                             " tune its GPUs (one worker each) or else its CPUs")
        if args.total_budget:
            raise ValueError("--total-budget does not apply with --cluster: give --budget"
                             " per problem")
        settings = Settings(strategy=args.strategy, budget=Budget.parse(args.budget),
                            seed=args.seed, cache=args.cache)
        entries = _entries(args)
    except (ClusterError, OSError, ValueError, TypeError, KeyError, RecursionError) as exc:
        return _fail(console, "tune", exc)
    db = Database(args.db)
    console.print(f"tuning {len(entries)} problems on the Ray cluster {args.cluster}"
                  f" ({args.backend}), budget {settings.budget} per problem; database"
                  f" {db.path}", highlight=False, markup=False, soft_wrap=True)
    try:
        with FleetProgress(console) as progress:
            run = tune_fleet(args.cluster, entries, database=db, settings=settings,
                             backend=args.backend, force=args.force,
                             with_torch=not args.no_torch, on_event=progress.event,
                             on_groups=progress.groups, start_timeout_s=args.start_timeout)
    except (ClusterError, DatabaseError, OSError) as exc:
        return _fail(console, "tune", exc)
    for table in tables(run):
        print_wide(console, table)
    for line in summary_lines(run):
        console.print(line, highlight=False, markup=False, soft_wrap=True)
    console.print(f"{len(run.groups)} machine types tuned in {run.seconds:.0f} s; results in"
                  f" {db.path}", highlight=False, markup=False, soft_wrap=True)
    return 1 if run.failed or run.untuned else 0


def bench_command(args: argparse.Namespace, console: Any) -> int:
    """`atrous bench --cluster ADDRESS`: benchmark on every machine type of a Ray cluster
    against its own records; rows and ceilings are stored beside the tuning database."""
    from atrous.autotune.database import Database
    from atrous.cli.report import print_wide
    from atrous.fleet.cluster import ClusterError, require_ray
    from atrous.fleet.driver import bench_fleet
    from atrous.fleet.progress import FleetProgress, bench_table
    from atrous.jobs.bench import Settings
    from atrous.report.summary import summarize

    try:
        require_ray()
        if args.device != "cpu":
            raise ValueError("--device does not apply with --cluster: GPU nodes benchmark"
                             " their GPUs, the others their CPUs")
        entries = _entries(args)
    except (ClusterError, OSError, ValueError, TypeError, KeyError) as exc:
        return _fail(console, "bench", exc)
    settings = Settings(numpy=not args.no_numpy, torch=not args.no_torch,
                        onnx=not args.no_onnx, openvino=not args.no_openvino,
                        cache=args.cache, isolate=not args.shared_process, suite=args.suite)
    db = Database(args.db)
    try:
        with FleetProgress(console, "benchmarking") as progress:
            result = bench_fleet(args.cluster, entries, db=db, settings=settings,
                                 on_event=progress.event, on_groups=progress.groups,
                                 start_timeout_s=args.start_timeout)
    except (ClusterError, OSError) as exc:
        return _fail(console, "bench", exc)
    for gid, rows in result.rows.items():
        print_wide(console, bench_table(gid, rows))
        for s in summarize(rows):
            console.print(f"{gid} {s.line()}", highlight=False, markup=False, soft_wrap=True)
        console.print(f"{gid}: run {rows[0].run if rows else '-'}, {len(rows)} rows",
                      highlight=False, markup=False)
    for line in result.failures + [f"not benchmarked: {u}" for u in result.untuned] + [
            f"worker not started: {n}" for n in result.notes]:
        console.print(line, highlight=False, markup=False, soft_wrap=True)
    return 1 if result.failures or result.untuned else 0


def report_command(args: argparse.Namespace, console: Any) -> int:
    """`atrous report --fleet`: one page comparing every machine beside the database."""
    from atrous.report.data import SelectionError
    from atrous.report.fleet import fleet

    try:
        index, lines = fleet(args.db, args.out)
    except (SelectionError, OSError, ValueError, TypeError, RecursionError) as exc:
        return _fail(console, "report", exc)
    for line in lines:
        console.print(line, highlight=False, markup=False, soft_wrap=True)
    console.print(f"report: {index.resolve()}", highlight=False, markup=False, soft_wrap=True)
    return 0
