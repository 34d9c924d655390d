"""The `atrous` command: thin argument parsing over the modules that do the work."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from rich.console import Console
from rich.progress import track
from rich.table import Table

from atrous.registry import OPS

console = Console()


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
    """Run every config of every op on the small cases; exit 1 on any failure."""
    from atrous.verify import verify

    device = "cuda" if args.backend == "triton" else "cpu"
    if args.backend == "triton":
        from atrous.autotune.hardware import cuda_device

        if cuda_device() is None:
            console.print("[red]verify --backend triton needs a CUDA GPU[/red]")
            return 2
    rows = verify(args.backend, ops=args.op or tuple(OPS), layouts=args.layout,
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


def cmd_bench(args: argparse.Namespace) -> int:
    """Time the default-config Numba kernels against NumPy and PyTorch on a shape suite."""
    from atrous.bench import bench, write_csv
    from atrous.suite import SUITES

    entries = [e for layout in args.layout for dtype in args.dtype
               for e in SUITES[args.suite](layout, dtype, tuple(args.batch))]
    if args.op:
        entries = [e for e in entries if e.problem.op in args.op]
    rows = bench(entries, with_numpy=not args.no_numpy, progress=_progress("benchmarking"))
    table = Table(title=f"atrous bench: {args.suite} suite, median ms (default configs)")
    impls = list(dict.fromkeys(r.implementation for r in rows))
    for col in ["case", "layout", "dtype", *impls, "torch / ours", "ours GB/s", "ours GFLOP/s"]:
        table.add_column(col, justify="left" if col == "case" else "right")
    by_case: dict[tuple, dict] = {}
    for r in rows:
        by_case.setdefault((r.name, r.layout, r.dtype), {})[r.implementation] = r
    for (name, layout, dtype), cells in by_case.items():
        ours = cells["atrous-numba"]
        speedup = cells["torch"].median_ms / ours.median_ms if "torch" in cells else None
        table.add_row(name, layout, dtype,
                      *(f"{cells[i].median_ms:.3f}" if i in cells else "-" for i in impls),
                      f"{speedup:.2f}x" if speedup else "-", f"{ours.gbps:.1f}",
                      f"{ours.gflops:.1f}")
    console.print(table)
    if args.csv:
        write_csv(rows, args.csv)
        console.print(f"rows written to {args.csv}")
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
    v.set_defaults(func=cmd_verify)

    b = sub.add_parser("bench", help="time the kernels against NumPy and PyTorch")
    common(b, ["float32"])
    b.add_argument("--suite", default="deeplabv3", choices=["deeplabv3", "smoke"])
    b.add_argument("--batch", nargs="+", type=int, default=[1, 4])
    b.add_argument("--no-numpy", action="store_true", help="skip the (slow) NumPy reference")
    b.add_argument("--csv", help="also write the rows to this CSV file")
    b.set_defaults(func=cmd_bench)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `atrous` command; returns the exit code."""
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
