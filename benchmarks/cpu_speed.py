"""CPU speed (issue 6): atrous's tuned Numba kernels against PyTorch, ONNX Runtime and NumPy
on DeepLabV3's ASPP shapes, placed against the machine's measured ceilings, and the targets.

    PYTHONPATH=src python3 benchmarks/cpu_speed.py                  # both layouts, b1 and b4
    PYTHONPATH=src python3 benchmarks/cpu_speed.py --markdown cpu_speed.md --csv cpu_speed.csv
    PYTHONPATH=src python3 benchmarks/cpu_speed.py --suite smoke --batch 1 --no-numpy  # seconds

Timing is ``atrous.jobs.bench``'s (the tuner's protocol: warm-up call, calibrated samples, median;
memory-bound inputs rotate through copies past the last-level cache), on the suite of
``atrous bench`` (float32 by default) plus ASPP's projection, a 1x1 convolution from the
concatenated branches (5 x 256 = 1280 channels) to 256 at the same sizes. Ceilings are the
stored ones of ``atrous ceilings`` (measured first when missing). Fractions of ceiling:

- GAP: the problem's bytes per second over the measured read bandwidth;
- upsample: the problem's bytes per second over the measured write (fill) bandwidth;
- convolution: GFLOP/s on the work atrous executes (the bench row's ``work_flops``: taps
  in the padding skipped, Winograd's multiplies only) over the measured FMA peak of the dtype.

Where neither the tuned nor the default config of a dilated convolution runs the pure-Numba
tile kernel (variant "tile"), its default tile config is timed too, the same way, for the
tile kernel's target (``--no-tile`` skips it). The first-call (compile) cost is measured in
a fresh process per layout, with the kernel caches on disk as the benchmark left them (a
fresh process on a machine that ran atrous before) or, with ``--cold-compile``, empty.

Then the targets of issue 6 are checked, each printed "met" or "NOT MET" with its numbers
("n/a" when nothing measured it). The exit status is 0 whether or not the targets are met;
1 when an atrous kernel or the compile probe failed.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from _tables import markdown_table
from cpu_targets import (
    Case,
    Compile,
    Target,
    check_targets,
    fmt_ms,
    fmt_x,
)

OPS = ("global_avg_pool", "dilated_conv2d", "upsample_bilinear")
COMPILE_NOTE = {False: "fresh process, kernel caches on disk as the benchmark left them;"
                        " first call minus second call",
                True: "fresh process, empty kernel caches; first call minus second call"}


# ------------------------------------------------------------------------------ the suite


def role(problem: Any) -> str:
    """What a problem is in DeepLabV3's ASPP (see :class:`Case`)."""
    if problem.op == "global_avg_pool":
        return "gap"
    if problem.op == "upsample_bilinear":
        return "upsample-pool" if problem.h == problem.w == 1 else "upsample-logits"
    if problem.kh == problem.kw == 1:
        return "conv1x1"
    return "conv-dilated" if max(problem.dilation) > 1 else "conv"


def with_projection(entries: list[Any]) -> list[Any]:
    """``entries`` with ASPP's projection after each 1x1 branch: a 1x1 convolution from the
    concatenated branches (the 1x1, one per rate, the pooling one) to the branch width."""
    from atrous.core.args import from_nchw
    from atrous.core.registry import op
    from atrous.jobs.suite import Entry

    out = []
    for e in entries:
        out.append(e)
        p = e.problem
        if p.op != "dilated_conv2d" or role(p) != "conv1x1":
            continue
        rates = [q for q in (f.problem for f in entries) if q.op == "dilated_conv2d" and
                 role(q) == "conv-dilated" and (q.n, q.h, q.w, q.cin) == (p.n, p.h, p.w, p.cin)]
        cin = (len(rates) + 2) * p.cout
        problem = op("dilated_conv2d").make_problem(
            {"x": from_nchw(p.n, cin, p.h, p.w, p.layout), "weight": (p.cout, cin, 1, 1),
             "bias": None}, {"x": p.dtype, "weight": p.dtype, "bias": None}, layout=p.layout)
        out.append(Entry(f"conv1x1 {cin}->{p.cout} {p.h}x{p.w} b{p.n} (projection)", problem))
    return out


def suite_entries(suite: str, layouts: Sequence[str], dtypes: Sequence[str],
                  batches: Sequence[int], ops: Sequence[str] | None) -> list[Any]:
    """The suite's entries per layout and dtype (with the projection), ``ops`` only."""
    from atrous.jobs.suite import SUITES

    entries = [e for layout in layouts for dtype in dtypes
               for e in with_projection(SUITES[suite](layout, dtype, tuple(batches)))]
    return [e for e in entries if not ops or e.problem.op in ops]


# ------------------------------------------------------------------------ rows to cases


def _ceiling(ceilings: Any, name: str, dtype: str | None = None) -> float | None:
    """The measured ceiling ``name`` (of ``dtype`` for compute), None when not measured."""
    values = [c.value for c in getattr(ceilings, "entries", []) if c.name == name
              and (dtype is None or c.dtype == dtype)]
    return max(values) if values else None


def is_tile(config: dict[str, Any]) -> bool:
    """Whether a convolution config runs the pure-Numba tile kernel (every config did
    before configs had a ``variant``)."""
    return config.get("variant", "tile") == "tile"


def build_case(problem: Any, name: str, cells: dict[str, Any], ceilings: Any,
               tile_ms: float | None = None) -> Case:
    """The :class:`Case` of one problem from its bench rows (by implementation) and, for a
    convolution, the time of the tile variant when the bench ran another (:func:`time_tile`)."""

    def ms(impl: str) -> float | None:
        row = cells.get(impl)
        return row.median_ms if row is not None and row.ok else None

    ours = cells.get("atrous-numba")
    case = Case(name, problem.layout, role(problem), ms("atrous-numba"), ms("torch"),
                ms("onnxruntime"), ms("numpy-reference"),
                note="" if ours is None or ours.ok else ours.note)
    if ours is not None:
        case.variant = ours.config_dict.get("variant")
        case.source = ours.config_source
    if problem.op == "dilated_conv2d":
        peak = _ceiling(ceilings, "fma", problem.dtype)
        case.ceiling = "FMA"
        if case.ours_ms:  # the work the config executed (Winograd: its multiplies)
            work = getattr(ours, "work_flops", 0) or problem.valid_flops
            case.gflops = work / case.ours_ms / 1e6
            case.fraction = case.gflops / peak if peak else None
        timed = [r for impl in ("atrous-numba", "atrous-numba-default")
                 if (r := cells.get(impl)) is not None and r.ok]
        case.variants = {str(r.config_dict.get("variant", "tile")) for r in timed}
        tiles = [problem.valid_flops / ms / 1e6 for ms in [r.median_ms for r in timed
                 if is_tile(r.config_dict)] + ([tile_ms] if tile_ms else [])]
        case.variants |= {"tile"} if tile_ms else set()
        case.tile_fraction = max(tiles) / peak if tiles and peak else None
    else:
        case.ceiling = "read" if problem.op == "global_avg_pool" else "write"
        roof = _ceiling(ceilings, case.ceiling)
        if case.ours_ms and roof:
            case.fraction = problem.bytes / case.ours_ms / 1e6 / roof
    return case


def _key(entry: Any) -> tuple[str, str, str]:
    return entry.name, entry.problem.layout, entry.problem.dtype


def build_cases(entries: Iterable[Any], rows: Iterable[Any], ceilings: Any,
                tile_ms: dict[tuple[str, str, str], float] | None = None) -> list[Case]:
    """One :class:`Case` per entry, from ``atrous.jobs.bench``'s rows (matched by name, layout
    and dtype) and :func:`time_tile`'s times."""
    cells: dict[tuple[str, str, str], dict[str, Any]] = {}
    for r in rows:
        cells.setdefault((r.name, r.layout, r.dtype), {})[r.implementation] = r
    return [build_case(e.problem, e.name, cells.get(_key(e), {}), ceilings,
                       (tile_ms or {}).get(_key(e))) for e in entries]


def time_tile(entries: Iterable[Any], rows: Iterable[Any]) -> tuple[dict, list[str]]:
    """Median ms of the tile variant's default config on each dilated convolution whose
    tuned and default configs both run another variant (so the tile kernel's target has a
    number), timed as ``atrous.jobs.bench`` times atrous's kernels: the tuner's
    ``measure_call`` with the same plan, sampler and cache policy. Also the failures."""
    from atrous.core.registry import op
    from atrous.jobs.single import time_config

    seen = {(r.name, r.layout, r.dtype) for r in rows
            if r.implementation.startswith("atrous-numba") and r.ok and is_tile(r.config_dict)}
    times, failures = {}, []
    for e in entries:
        p = e.problem
        opdef = op(p.op)
        if (role(p) != "conv-dilated" or _key(e) in seen
                or "variant" not in opdef.space(p, "numba").params):  # no variants
            continue
        try:
            tile = opdef.complete_config(p, "numba", {"variant": "tile"})
            times[_key(e)] = time_config(p, "numba", tile).median * 1e3
        except Exception as exc:  # reported, and the run goes on
            failures.append(f"tile variant failed on {e.name} {p.layout}: "
                            f"{type(exc).__name__}: {exc}"[:300])
    return times, failures


# --------------------------------------------------------------------------- compile cost


def probe_entries(entries: list[Any]) -> list[Any]:
    """One shape per op to call first in a fresh process: the first GAP, the first dilated
    convolution and the first upsample of the logits (the suite's smallest batch first)."""
    chosen: dict[str, Any] = {}
    wanted = {"gap", "conv-dilated", "upsample-logits"}
    for e in sorted(entries, key=lambda e: e.problem.n):
        if role(e.problem) in wanted and e.problem.op not in chosen:
            chosen[e.problem.op] = e
    return [chosen[op] for op in OPS if op in chosen]


def probe(spec: dict[str, Any]) -> dict[str, Any]:
    """In a fresh process: import atrous, then call each named suite entry twice; the
    seconds of the import and of each call."""
    t0 = time.perf_counter()
    import atrous
    from atrous.jobs.single import inputs_for, run_call
    from atrous.jobs.suite import SUITES

    result: dict[str, Any] = {"import_s": time.perf_counter() - t0, "ops": {}}
    atrous.use_tuning(spec["db"])
    entries = {e.name: e for e in SUITES[spec["suite"]](spec["layout"], spec["dtype"],
                                                         (spec["batch"],))}
    for name in spec["names"]:
        p = entries[name].problem
        inputs = inputs_for(p)
        calls = []
        for _ in range(2):
            t = time.perf_counter()
            run_call(p, inputs)
            calls.append(time.perf_counter() - t)
        result["ops"][p.op] = {"name": name, "first_s": calls[0], "second_s": calls[1]}
    return result


def run_probe(spec: dict[str, Any], env: dict[str, str]) -> Compile:
    """:func:`probe` in a fresh interpreter (this one's executable, ``env``); a failure is
    recorded in the result, never raised."""
    c = Compile(spec["layout"])
    try:
        done = subprocess.run([sys.executable, __file__, "--probe", json.dumps(spec)],
                              capture_output=True, text=True, env=env, timeout=600)
        if done.returncode:
            c.error = f"probe exited {done.returncode}: {done.stderr.strip()[-500:]}"
            return c
        got = json.loads(done.stdout.strip().splitlines()[-1])
    except (OSError, subprocess.SubprocessError, ValueError, IndexError) as exc:
        c.error = f"probe failed: {type(exc).__name__}: {exc}"
        return c
    c.import_s = got["import_s"]
    c.ops = {op: (v["name"], max(0.0, v["first_s"] - v["second_s"]))
             for op, v in got["ops"].items()}
    return c


def compile_cost(suite: str, entries: list[Any], db: str | None,
                 cold: bool = False) -> list[Compile]:
    """Per layout of ``entries``, first call minus second call of each op in a fresh
    process, with the environment of this one plus atrous's import path. The kernel
    caches on disk are as they are (warm after the benchmark), or with ``cold`` empty
    temporary ones, so every kernel compiles."""
    import atrous

    env = dict(os.environ)
    src = str(Path(atrous.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH")) if p)
    out = []
    for layout in dict.fromkeys(e.problem.layout for e in entries):
        chosen = probe_entries([e for e in entries if e.problem.layout == layout
                                and not e.name.endswith("(projection)")])
        if not chosen:
            continue
        p = chosen[0].problem
        spec = {"suite": suite, "layout": layout, "dtype": p.dtype, "batch": p.n, "db": db,
                "names": [e.name for e in chosen]}
        if not cold:
            out.append(run_probe(spec, env))
            continue
        with tempfile.TemporaryDirectory(prefix="atrous-cold-") as tmp:
            out.append(run_probe(spec, {**env, "ATROUS_KERNEL_CACHE": f"{tmp}/kernels",
                                        "NUMBA_CACHE_DIR": f"{tmp}/numba"}))
    return out


# ------------------------------------------------------------------------------- output


def table(cases: list[Case], numpy: bool) -> tuple[list[str], list[list[str]], list[int]]:
    """(headers, text cells, right-aligned column indices) of the main table."""
    from atrous.jobs.bench import FAILED

    variant = any(c.variant is not None for c in cases)
    headers = ["case", "layout", "atrous ms", *(["variant"] if variant else []), "tuning",
               "torch ms", "ORT ms", *(["numpy ms"] if numpy else []), "torch/ours",
               "ORT/ours", "best/ours", "of ceiling", "GFLOP/s executed"]
    cells = []
    for c in cases:
        frac = "-" if c.fraction is None else f"{c.fraction:.0%} {c.ceiling}"
        ours = fmt_ms(c.ours_ms) if c.ours_ms is not None else (
            "FAILED" if c.note.startswith(FAILED) else "-")
        cells.append([c.name, c.layout, ours, *([c.variant or "-"] if variant else []),
                      c.source or "-", fmt_ms(c.torch_ms), fmt_ms(c.ort_ms),
                      *([fmt_ms(c.numpy_ms)] if numpy else []), fmt_x(c.vs(c.torch_ms)),
                      fmt_x(c.vs(c.ort_ms)), fmt_x(c.vs(c.best_ms)), frac,
                      "-" if c.gflops is None else f"{c.gflops:.1f}"])
    right = [i for i, h in enumerate(headers) if h not in ("case", "layout", "variant",
                                                           "tuning")]
    return headers, cells, right


def header_lines(ceilings: Any, threads: dict[str, int], started: str) -> list[str]:
    """Machine, versions, threads, ceilings and date: what makes the numbers readable."""
    from atrous.jobs.single import cpu_machine
    from atrous.jobs.single import package_version as version

    fp = cpu_machine()
    caches = ", ".join(f"{k} {v // 1024} KiB" for k, v in fp["caches"].items()) or "?"
    versions = ", ".join(f"{k} {version(k) or 'not installed'}" for k in
                         ("atrous", "numpy", "numba", "llvmlite", "torch", "onnxruntime"))
    bw = ", ".join(f"{n} {v:.1f} GB/s" for n in ("read", "write")
                   if (v := _ceiling(ceilings, n)) is not None)
    fma = _ceiling(ceilings, "fma", "float32")
    return [
        f"machine: {fp['brand']} (LLVM {fp['llvm_cpu']}), {fp['cores']} cores, {caches}",
        f"fingerprint: {fp['id']} (family {fp['family']})",
        f"versions: python {platform.python_version()}, {versions}",
        "threads: " + ", ".join(f"{k} {v}" for k, v in threads.items()),
        f"ceilings (measured {getattr(ceilings, 'measured_at', '?')}): {bw or 'no bandwidth'},"
        f" FMA float32 {'-' if fma is None else f'{fma:.0f} GFLOP/s'}",
        f"date: {started}",
    ]


def compile_lines(compiles: list[Compile]) -> list[str]:
    """One line per layout: the import and each op's first-call cost."""
    lines = []
    for c in compiles:
        if c.error:
            lines.append(f"{c.layout}: ERROR {c.error}")
            continue
        ops = ", ".join(f"{op} {s:.2f} s ({name})" for op, (name, s) in c.ops.items())
        lines.append(f"{c.layout}: import {c.import_s or 0:.2f} s; {ops}; total {c.total:.2f} s")
    return lines


def thread_counts() -> dict[str, int]:
    """Threads each library runs with (``atrous.jobs.bench`` gives torch, ONNX Runtime and
    OpenVINO every core, each in a worker process of its own)."""
    import numba

    counts = {"numba": numba.get_num_threads()}
    for library in ("torch", "onnxruntime", "openvino"):
        if importlib.util.find_spec(library) is not None:
            counts[library] = os.cpu_count() or 1
    return counts


def write_markdown(path: str, command: str, head: list[str], cases: list[Case], numpy: bool,
                   compiles: list[Compile], targets: list[Target], cold: bool) -> None:
    """The report as Markdown (for BENCHMARKS.md)."""
    headers, cells, right = table(cases, numpy)
    text = [f"- Command: `{command}`", *(f"- {line}" for line in head), "",
            markdown_table(headers, cells, right), "",
            f"Compile cost ({COMPILE_NOTE[cold]}):", "",
            *(f"- {line}" for line in compile_lines(compiles) or ["not measured"]), "",
            "Targets:", "", *(f"- **{t.verdict}**: {t.name}: {t.detail}" for t in targets)]
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text("\n".join(text) + "\n")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    from atrous.cli.report import add_suite_options

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_suite_options(parser)
    parser.add_argument("--db", help="tuning database whose configs atrous runs; ceilings are"
                                     " stored beside it (default: the user cache directory)")
    parser.add_argument("--no-torch", action="store_true", help="do not time PyTorch")
    parser.add_argument("--no-onnx", action="store_true", help="do not time ONNX Runtime")
    parser.add_argument("--no-compile-check", action="store_true",
                        help="skip the first-call cost in a fresh process")
    parser.add_argument("--no-tile", action="store_true",
                        help="do not time the tile variant where the bench ran another one")
    parser.add_argument("--measure-ceilings", action="store_true",
                        help="measure the ceilings again even if stored")
    parser.add_argument("--markdown", help="also write the table and targets as Markdown")
    parser.add_argument("--csv", help="also write atrous.jobs.bench's rows as CSV")
    parser.add_argument("--cold-compile", action="store_true",
                        help="compile probe with empty kernel caches (ATROUS_KERNEL_CACHE and"
                             " NUMBA_CACHE_DIR in a temporary folder): the cost of a first"
                             " ever run, not of a fresh process on a used machine")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Benchmark, print the table, compile cost and targets; 1 when atrous failed."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--probe"]:  # the compile probe's child: nothing imported before atrous
        print(json.dumps(probe(json.loads(argv[1]))))
        return 0
    args = parse_args(argv)
    from rich.console import Console
    from rich.progress import track
    from rich.table import Table

    from atrous.jobs.bench import FAILED, Settings, bench, write_csv
    from atrous.jobs.ceilings import ensure_ceilings

    # Into a file or pipe rich would assume 80 columns and cut every cell short.
    console = Console(width=None if sys.stdout.isatty() else 220)
    started = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    with console.status("reading ceilings (measuring them when missing)"):
        ceilings = ensure_ceilings(args.db, "cpu", remeasure=args.measure_ceilings)
    entries = suite_entries(args.suite, args.layout, args.dtype, args.batch, args.op)
    settings = Settings(numpy=not args.no_numpy, torch=not args.no_torch,
                        onnx=not args.no_onnx)
    rows = bench(entries, settings=settings, ceilings=ceilings, tuning=args.db,
                 progress=lambda items: track(list(items), description="benchmarking",
                                              console=console, transient=True))
    head = header_lines(ceilings, thread_counts(), started)
    tile_ms, tile_failures = ({}, []) if args.no_tile else time_tile(entries, rows)
    cases = build_cases(entries, rows, ceilings, tile_ms)
    compiles = [] if args.no_compile_check else compile_cost(args.suite, entries, args.db,
                                                             args.cold_compile)
    targets = check_targets(cases, compiles)

    for line in head:
        console.print(line, highlight=False, markup=False, soft_wrap=True)
    headers, cells, right = table(cases, not args.no_numpy)
    grid = Table(title=f"CPU speed: median ms per call ({', '.join(args.dtype)}); ratios"
                       " above 1: atrous is faster")
    for i, h in enumerate(headers):
        grid.add_column(h, justify="right" if i in right else "left", no_wrap=i == 0)
    for row in cells:
        grid.add_row(*row)
    console.print(grid)
    console.print(f"COMPILE COST ({COMPILE_NOTE[args.cold_compile]})")
    for line in compile_lines(compiles) or ["not measured"]:
        console.print(f"  {line}", highlight=False, markup=False, soft_wrap=True)
    console.print("TARGETS (issue 6)")
    for t in targets:
        console.print(f"  {t.verdict:>7}  {t.name}: {t.detail}", highlight=False,
                      markup=False, soft_wrap=True)
    failed = [f"atrous failed on {c.label}: {c.note}" for c in cases
              if c.note.startswith(FAILED)] + tile_failures
    for line in failed:
        console.print(line, highlight=False, markup=False, soft_wrap=True)
    if args.markdown:
        command = "PYTHONPATH=src python3 benchmarks/cpu_speed.py " + shlex.join(argv)
        write_markdown(args.markdown, command.strip(), head, cases, not args.no_numpy,
                       compiles, targets, args.cold_compile)
        console.print(f"Markdown written to {args.markdown}", highlight=False)
    if args.csv:
        write_csv(rows, args.csv)
        console.print(f"rows written to {args.csv}", highlight=False)
    return 1 if failed or any(c.error for c in compiles) else 0


if __name__ == "__main__":
    sys.exit(main())
