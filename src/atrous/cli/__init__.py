"""The `atrous` command: thin argument parsing over the modules that do the work."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from rich.console import Console
from rich.markup import escape
from rich.progress import track
from rich.table import Table
from rich.text import Text

from atrous.core.registry import OPS

# Piped output (logs, CI) gets wide tables instead of rich's 80-column default.
console = Console(width=None if sys.stdout.isatty() else 160)

#: What reading a file the user named can raise besides our own errors (json's and the
#: int-string limit's ValueError, UnicodeDecodeError, RecursionError of deep nesting, ...):
#: reported as one line and exit status 2, never a traceback.
INPUT_ERRORS = (OSError, ValueError, TypeError, KeyError, RecursionError, OverflowError)


def _fail(command: str, exc: BaseException | str) -> int:
    """Print ``atrous <command>: <why>`` (data in the message is never markup); return 2."""
    why = exc if isinstance(exc, str) else str(exc) or type(exc).__name__
    console.print(f"[red]atrous {escape(command)}:[/red] {escape(why)}", highlight=False,
                  soft_wrap=True)
    return 2


def _plain(*cells: object) -> list[Text]:
    """Table cells as plain text: data (keys, machine ids, names) is never rich markup."""
    return [c if isinstance(c, Text) else Text(str(c)) for c in cells]


def _print_wide(table: Table) -> None:
    from atrous.cli.report import print_wide

    print_wide(console, table)


def _progress(description: str):
    return lambda items: track(list(items), description=description, console=console,
                               transient=True)


def cmd_info(args: argparse.Namespace) -> int:
    """Print the machine, library versions and which backends can run."""
    from atrous.autotune.hardware import cuda_device, describe

    table = Table(title="atrous info", show_header=False)
    for key, value in describe().items():
        table.add_row(key, value)
    gpu = cuda_device()
    table.add_row("cuda gpu", gpu or "none")
    backends = ["numba", "numpy"] + (["triton"] if gpu and _has("triton") else [])
    table.add_row("backends", ", ".join(backends))
    console.print(table)
    return 0


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def cmd_verify(args: argparse.Namespace) -> int:
    """Run every config of every op on the small cases; exit 1 on any failure. With
    ``--compile-only``, compile the Triton kernels for GPU targets instead (no GPU needed)."""
    if args.compile_only:
        return _verify_compile(args)
    from atrous.jobs.verify import verify

    device = "cuda" if args.backend == "triton" else "cpu"
    if args.backend == "triton":
        from atrous.autotune.hardware import cuda_device

        if cuda_device() is None:
            console.print("[red]verify --backend triton needs a CUDA GPU[/red]")
            return 2
    rows = verify(args.backend, ops=args.op or None, layouts=args.layout,
                  dtypes=args.dtype, device=device, progress=_progress("verifying"))
    table = Table(title=f"atrous verify ({args.backend})")
    for col in ("op", "layout", "dtype", "configs", "checks", "worst rel error", "result"):
        table.add_column(col)
    for r in rows:
        result = "[green]ok[/green]" if r.ok else f"[red]{r.failures} FAILED[/red]"
        table.add_row(r.op, r.layout, r.dtype, str(r.configs), str(r.checks),
                      f"{r.worst_rel_error:.2e}", result)
    console.print(table)
    failed = [r for r in rows if not r.ok]
    for r in failed:
        console.print(f"[red]first failure[/red] {r.op} {r.layout} {r.dtype}: {r.first_failure}",
                      markup=False)
    return 1 if failed else 0


def _verify_compile(args: argparse.Namespace) -> int:
    """`atrous verify --compile-only`: the compile check (atrous.gpucheck) as a table."""
    from atrous.gpucheck.compile import tool
    from atrous.gpucheck.run import timed_run
    from atrous.gpucheck.summary import HEADERS, failures, records, summarize

    if tool("ptxas") is None:
        console.print("[red]verify --compile-only needs Triton's ptxas (triton's NVIDIA backend)"
                      "[/red]")
        return 2
    targets = args.target or ["sm_80", "sm_90"]
    mode = "full" if args.full else "ci" if args.ci else "sample"
    rows, seconds = timed_run(mode, targets, workers=args.workers)
    if args.json:
        import json

        with open(args.json, "w") as f:
            json.dump(records(rows), f)
    table = Table(title=f"atrous verify --compile-only ({', '.join(targets)}, {mode})")
    for col in HEADERS:
        table.add_column(col)
    for line in summarize(rows):
        table.add_row(*line)
    _print_wide(table)
    bad = failures(rows)
    for line in bad:
        console.print(f"FAILED {line}", markup=False, style="red")
    console.print(f"{len(rows)} compiled launches, {len(bad)} failed, {seconds:.0f} s")
    return 1 if bad else 0


def cmd_bench(args: argparse.Namespace) -> int:
    """Time atrous (tuned and default configs) against NumPy, PyTorch and ONNX Runtime on a
    shape suite; rows are stored beside the tuning database (atrous.cli.report).
    With ``--cluster``, on every machine type of a Ray cluster (atrous.cli.fleet)."""
    if getattr(args, "cluster", None):
        from atrous.cli.fleet import bench_command as fleet_bench

        return fleet_bench(args, console)
    from atrous.cli.report import cmd_bench as bench_command

    return bench_command(args, console)


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1e3:.3f}"


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def _config(config: dict | None) -> str:
    """A config's keys, less those of the conv variants it did not pick."""
    if not config:
        return "-"
    from atrous.kernels.conv.schedule_cpu import own_keys

    return " ".join(f"{k}={v}" for k, v in own_keys(config).items())


def _tune_target(args: argparse.Namespace) -> tuple[str, str]:
    """(backend, device) for `atrous tune`: Triton on a CUDA GPU, else Numba on the CPU."""
    from atrous.autotune.hardware import cuda_device
    from atrous.core.arrays import triton_interpreted

    device = args.device
    if device == "auto":
        device = "cuda" if args.backend != "numba" and cuda_device() and _has("triton") else "cpu"
    backend = args.backend
    if backend == "auto":
        backend = "triton" if device.startswith("cuda") else "numba"
    if backend == "numba" and device != "cpu":
        raise ValueError("the numba backend runs on the CPU: use --device cpu")
    if backend == "triton" and not device.startswith("cuda") and not triton_interpreted():
        raise ValueError("the triton backend needs a CUDA device (--device cuda); on the CPU it"
                         " runs only under TRITON_INTERPRET=1, a debugging mode")
    if device.startswith("cuda") and cuda_device() is None:
        raise ValueError(f"--device {device}: no CUDA GPU is available")
    return backend, device


def cmd_tune(args: argparse.Namespace) -> int:
    """Tune every kernel of a shape suite on this machine and store the winners (with
    ``--cluster``, on every machine type of a Ray cluster: atrous.cli.fleet)."""
    if getattr(args, "cluster", None):
        from atrous.cli.fleet import tune_command

        return tune_command(args, console)
    import time

    from rich import progress as rp

    from atrous.autotune.database import Database, DatabaseError
    from atrous.autotune.hardware import fingerprint
    from atrous.autotune.search import Budget
    from atrous.autotune.tuner import Settings
    from atrous.jobs.shapes import load_shapes
    from atrous.jobs.suite import SUITES
    from atrous.jobs.tune import tune_entries

    try:
        backend, device = _tune_target(args)
        settings = Settings(strategy=args.strategy, budget=Budget.parse(args.budget),
                            seed=args.seed, cache=args.cache)
        total = Budget.parse(args.total_budget).max_seconds if args.total_budget else None
        if args.total_budget and total is None:
            raise ValueError(f"--total-budget must be seconds ('300s', '5m'), got"
                             f" {args.total_budget!r}")
        if args.shapes:
            entries = load_shapes(args.shapes, args.layout, args.dtype)
        else:
            entries = [e for layout in args.layout for dtype in args.dtype
                       for e in SUITES[args.suite](layout, dtype, tuple(args.batch))]
    except (*INPUT_ERRORS, ImportError) as exc:
        return _fail("tune", exc)
    if args.op:
        entries = [e for e in entries if e.problem.op in args.op]
    from atrous.dispatch import BACKEND_DTYPES

    bad = sorted({e.problem.dtype for e in entries} - set(BACKEND_DTYPES[backend]))
    if bad:
        return _fail("tune", f"{backend} does not support {', '.join(bad)}")
    db = Database(args.db)
    fp = fingerprint(backend, device)
    per = (f"a total of {total:g}s shared by expected cost" if total else
           f"budget {settings.budget} per problem")
    console.print(f"tuning {len(entries)} problems on {backend} ({device}), machine {fp['id']}"
                  f" ({fp['family']}), strategy {settings.strategy}, {per}; database {db.path}",
                  highlight=False, markup=False, soft_wrap=True)
    start = time.perf_counter()
    columns = (rp.TextColumn("{task.description}"), rp.BarColumn(), rp.MofNCompleteColumn(),
               rp.TimeElapsedColumn(), rp.TextColumn("{task.fields[trial]}"))
    with rp.Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task("tuning", total=len(entries), trial="")

        def on_row(row) -> None:
            progress.advance(task)
            shown = (f"{_ms(row.median_s)} ms, {_ratio(row.speedup)} vs default"
                     + (f", {_variant(row)}" if row.variant else "")
                     + (f", {row.seeds} seeds" if row.seeds else "")
                     + (f", budget {row.budget_s:.1f}s" if row.budget_s is not None else "")
                     if row.status != "failed" else row.note)
            progress.console.print(f"  {row.status:8s} {row.name} ({row.problem.layout}"
                                   f" {row.problem.dtype}): {shown} [{row.seconds:.1f}s]",
                                   highlight=False, markup=False, soft_wrap=True)

        try:
            rows = tune_entries(
                entries, backend=backend, device=device, settings=settings, database=db,
                force=args.force, with_torch=not args.no_torch,
                on_entry=lambda e: progress.update(task, description=escape(e.name), trial=""),
                on_trial=lambda p, t: progress.update(
                    task, trial=escape(f"{t.status} {_config(t.config)} {_ms(t.median)} ms")),
                on_row=on_row, total_s=total)
        except (DatabaseError, OSError) as exc:  # a newer atrous's file, a full disk, ...
            return _fail("tune", exc)
    elapsed = time.perf_counter() - start
    _tune_table(rows, backend, elapsed)
    console.print(f"tuned in {elapsed:.0f} s; results in {db.path}", highlight=False,
                  markup=False)
    return 1 if any(r.status == "failed" for r in rows) else 0


def _variant(row) -> str:
    """The winning variant and its margin over the best other one, e.g. "winograd, +18%
    vs gemm" (">=" when that variant's best was stopped early: its time is a bound)."""
    if not row.variant:
        return "-"
    margin = row.margin
    if margin is None:
        return row.variant
    other, gain = margin
    bound = ">=" if other in row.pruned_variants else ""
    return f"{row.variant}, {bound}{gain * 100:+.0f}% vs {other}"


def _tune_table(rows: list, backend: str, elapsed: float) -> None:
    table = Table(title=f"atrous tune ({backend}): median ms per call, {elapsed:.0f} s")
    for col in ("case", "layout", "dtype", "status", "best config", "variant", "tuned",
                "default", "speedup", "torch", "vs torch", "trials", "strategy"):
        table.add_column(col, justify="left" if col in ("case", "best config") else "right")
    for r in rows:
        trials = f"{r.trials}" + (f" ({r.pruned} pruned, {r.failed} failed)"
                                  if r.pruned or r.failed else "")
        table.add_row(*_plain(r.name, r.problem.layout, r.problem.dtype, r.status,
                              _config(r.config), _variant(r), _ms(r.median_s),
                              _ms(r.default_median_s), _ratio(r.speedup),
                              _ms(r.torch_median_s), _ratio(r.vs_torch), trials, r.strategy))
    _print_wide(table)


def cmd_db(args: argparse.Namespace) -> int:
    """Show, export, import, merge or clear tuning databases."""
    from atrous.autotune.database import Database, DatabaseError, merge_files
    from atrous.autotune.records import SchemaError

    db = Database(args.db)
    try:
        if args.action == "show":
            return _db_show(db)
        if args.action == "export":
            snap = db.export(args.path, args.machine)
            console.print(f"exported {len(snap.records())} records to {args.path}",
                          markup=False)
        elif args.action == "import":
            n = db.import_files(args.paths)
            console.print(f"imported {n} records into {db.path}", markup=False)
        elif args.action == "merge":
            snap = merge_files(args.out, args.paths)
            console.print(f"merged {len(snap.records())} records into {args.out}",
                          markup=False)
        else:
            n = db.clear(args.machine)
            console.print(f"removed {n} records from {db.path}", markup=False)
    except (SchemaError, DatabaseError, *INPUT_ERRORS) as exc:
        return _fail(f"db {args.action}", exc)
    return 0


def _db_show(db) -> int:
    from atrous.autotune.hardware import cpu_fingerprint
    from atrous.autotune.lookup import source_hash

    snapshot = db.read()
    here = cpu_fingerprint()["id"]
    table = Table(title=Text(f"tuning database {db.path}"))
    for col in ("machine", "op", "backend", "problem", "config", "median ms", "speedup",
                "strategy", "trials", "policy", "state"):
        table.add_column(col, justify="right" if col in ("median ms", "speedup") else "left")
    for machine, rec in snapshot.records():
        try:
            state = Text("stale", "yellow") if rec.source_hash != source_hash(
                rec.op, rec.backend) else Text("ok")
        except (KeyError, ValueError):  # an op or backend this atrous does not have
            state = Text("unknown op or backend", "yellow")
        who = machine.id + (" (this cpu)" if machine.id == here else "")
        table.add_row(*_plain(f"{who}\n{machine.family}", rec.op, rec.backend, rec.key,
                              _config(rec.config), _ms(rec.median_s), _ratio(rec.speedup),
                              rec.strategy, str(rec.trials), rec.policy, state))
    _print_wide(table)
    console.print(f"{len(snapshot.machines)} machines, {len(snapshot.records())} records")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the `atrous` command."""
    parser = argparse.ArgumentParser(prog="atrous", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("info", help="machine, versions and available backends").set_defaults(
        func=cmd_info)

    def common(p: argparse.ArgumentParser, dtypes: Sequence[str] | None) -> None:
        p.add_argument("--op", action="append", choices=sorted(OPS), help="repeatable")
        p.add_argument("--layout", nargs="+", default=["NCHW", "NHWC"],
                       choices=["NCHW", "NHWC"])
        p.add_argument("--dtype", nargs="+", default=dtypes,
                       choices=["float16", "bfloat16", "float32", "float64"])

    v = sub.add_parser("verify", help="check every config of every op against the reference")
    common(v, None)
    v.add_argument("--backend", default="numba", choices=["numba", "triton", "numpy"])
    v.add_argument("--compile-only", action="store_true",
                   help="compile the Triton kernels for GPU targets (no GPU needed)")
    v.add_argument("--target", action="append", choices=["sm_80", "sm_86", "sm_87", "sm_89",
                                                         "sm_90"],
                   help="with --compile-only (repeatable; default sm_80 and sm_90)")
    v.add_argument("--full", action="store_true",
                   help="with --compile-only: every Space config, not a stratified sample")
    v.add_argument("--ci", action="store_true",
                   help="with --compile-only: the smaller CI set (one default case per config)")
    v.add_argument("--json", help="with --compile-only: also write every compile here")
    v.add_argument("--workers", type=int, default=None,
                   help="with --compile-only: compile processes (default: the CPU count)")
    v.set_defaults(func=cmd_verify)

    from atrous.cli.report import add_bench_options, add_report_parsers, add_suite_options

    b = sub.add_parser("bench", help="time atrous against NumPy, PyTorch, ONNX Runtime and"
                                     " OpenVINO, each in a process of its own")
    common(b, ["float32"])
    add_suite_options(b, with_op_layout=False)
    add_bench_options(b)
    b.set_defaults(func=cmd_bench)

    t = sub.add_parser("tune", help="autotune the kernels on this machine and store the winners")
    t.add_argument("--op", action="append", choices=sorted(OPS), help="repeatable")
    t.add_argument("--layout", nargs="+", default=["NCHW"], choices=["NCHW", "NHWC"])
    t.add_argument("--dtype", nargs="+", default=["float32"],
                   choices=["float16", "bfloat16", "float32", "float64"])
    t.add_argument("--suite", default="deeplabv3", choices=["deeplabv3", "smoke"])
    t.add_argument("--batch", nargs="+", type=int, default=[1, 4])
    t.add_argument("--shapes", help="a JSON file of problems to tune instead of a suite")
    t.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda[:N]")
    t.add_argument("--backend", default="auto", choices=["auto", "numba", "triton"])
    t.add_argument("--strategy", default="auto",
                   choices=["auto", "exhaustive", "random", "tpe", "local"],
                   help="auto: exhaustive when the space fits the budget, else a local search"
                        " from the default and the neighbours' winners")
    t.add_argument("--budget", default="15s",
                   help="per problem: seconds ('30s', '2m') and/or trials ('20', '20,30s')")
    t.add_argument("--total-budget",
                   help="seconds for the whole run ('5m'), shared by the problems by their"
                        " expected cost (replaces --budget's seconds)")
    t.add_argument("--cache", default="auto", choices=["auto", "cold", "warm"],
                   help="CPU timing: auto rotates inputs past the LLC for memory-bound ops")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--db", help="tuning database file (default: the user cache directory)")
    t.add_argument("--force", action="store_true", help="re-tune problems already tuned")
    t.add_argument("--no-torch", action="store_true", help="do not time PyTorch for comparison")
    t.set_defaults(func=cmd_tune)

    d = sub.add_parser("db", help="show, export, import, merge or clear tuning databases")
    d.add_argument("--db", help="tuning database file (default: the user cache directory)")
    dsub = d.add_subparsers(dest="action", required=True)
    dsub.add_parser("show", help="every record, stale ones marked")
    e = dsub.add_parser("export", help="write records to a file to ship")
    e.add_argument("path")
    e.add_argument("--machine", action="append", help="only this fingerprint id (repeatable)")
    i = dsub.add_parser("import", help="merge tuning files into the database")
    i.add_argument("paths", nargs="+")
    m = dsub.add_parser("merge", help="merge tuning files into a new file")
    m.add_argument("out")
    m.add_argument("paths", nargs="+")
    c = dsub.add_parser("clear", help="delete the database (or one machine's records)")
    c.add_argument("--machine", help="only this fingerprint id")
    d.set_defaults(func=cmd_db)
    add_report_parsers(sub)  # `atrous ceilings`, `atrous report`
    from atrous.cli.fleet import add_cluster_option, add_fleet_option

    add_cluster_option(t)
    add_cluster_option(b)
    add_fleet_option(sub.choices["report"])
    sub.choices["report"].set_defaults(func=cmd_report)
    return parser


def cmd_report(args: argparse.Namespace) -> int:
    """`atrous report` (atrous.cli.report); with ``--fleet``, every machine on one page
    (atrous.cli.fleet)."""
    if getattr(args, "fleet", False):
        from atrous.cli.fleet import report_command

        return report_command(args, console)
    from atrous.cli.report import cmd_report as report

    return report(args)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `atrous` command; returns the exit code.

    Each command reports the errors it expects (bad input files among them) as one line
    and exit status 2. Anything else that escapes a command is reported the same way,
    never as a traceback; ``ATROUS_TRACEBACK=1`` shows the traceback instead (for bugs).
    """
    import os

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except Exception as exc:
        if os.environ.get("ATROUS_TRACEBACK"):
            raise
        return _fail(args.command, f"{type(exc).__name__}: {exc}"[:2000])


if __name__ == "__main__":
    sys.exit(main())
