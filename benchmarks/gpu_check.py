"""Validate and time atrous's Triton kernels on a GPU, next to PyTorch's own ops.

    PYTHONPATH=src python3 benchmarks/gpu_check.py --csv gpu_check.csv
    TRITON_INTERPRET=1 python3 benchmarks/gpu_check.py --tiny --csv /tmp/gpu_check.csv

Needs only numpy, torch and triton (no install step). It prints the machine (GPU, driver,
CUDA, torch and triton versions). On a GPU it then runs the compile check
(``atrous.gpucheck``: every default config and a stratified sample of each Triton Space,
compiled for the device's own target with its own shared-memory limit) and prints its
table, so a kernel that cannot compile or launch there shows up before any timing; its rows
go to ``<csv stem>_compile.csv`` and a failure makes the exit code 1 (the run goes on).
``--compile-check off`` skips it (``--tiny`` skips it unless ``on``). Then it measures
ceilings (device-to-device copy bandwidth,
counting read + write bytes; torch.matmul TFLOP/s per dtype), then, for every op of the
batch-1 DeepLabV3 ASPP suite, both layouts and float32/float16/bfloat16: validates the
default config and a few others from the Space with ``atrous.autotune.validate.check``, times the
default config and PyTorch's op (``triton.testing.do_bench``, median, L2 flushed before each
sample; float32 PyTorch convolutions run without TF32, like ours), and prints one table row
per case, also written to ``--csv``. A failing case records its error and the run goes on;
the exit code is 1 when any validation failed.

``--tiny`` runs the same code paths on the CPU under TRITON_INTERPRET=1 on a tiny suite
(time.perf_counter timing, CPU ceilings), so the table and CSV can be tested without a GPU.
The interpreter's tl.dot is wrong on bfloat16, so --tiny skips bfloat16 convolutions.
"""

from __future__ import annotations

import argparse
import csv
import importlib.metadata
import json
import math
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

DTYPES = ("float32", "float16", "bfloat16")
LAYOUTS = ("NCHW", "NHWC")


@dataclass
class Row:
    """One (op, shape, layout, dtype) case: validation of several configs, timing of the
    default one against PyTorch."""

    op: str
    shape: str
    layout: str
    dtype: str
    config: str = ""
    ms_ours: float = math.nan
    ms_torch: float = math.nan
    speedup: float = math.nan
    unit: str = ""
    achieved: float = math.nan
    ceiling: float = math.nan
    fraction: float = math.nan
    configs_checked: int = 0
    max_rel_error: float = math.nan
    ok: bool = False
    error: str = ""


def _version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def describe_machine(device: str) -> dict[str, str]:
    """Print and return the GPU (or CPU) and library versions."""
    import torch
    import triton

    info = {"torch": torch.__version__, "triton": triton.__version__,
            "numpy": _version("numpy"), "numba": _version("numba")}
    if device == "cuda":
        props = torch.cuda.get_device_properties(0)
        try:
            driver = subprocess.run(
                ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                capture_output=True, text=True, timeout=20).stdout.strip().splitlines()[0]
        except (OSError, IndexError, subprocess.SubprocessError):
            driver = "unknown"
        info.update(device=props.name, capability=f"sm_{props.major}{props.minor}",
                    sms=str(props.multi_processor_count), driver=driver,
                    cuda=str(torch.version.cuda),
                    l2_mib=f"{getattr(props, 'L2_cache_size', 0) / 2**20:.0f}")
    else:
        info.update(device=f"CPU ({os.cpu_count()} cores), TRITON_INTERPRET=1")
    for key, value in info.items():
        print(f"{key:>10}: {value}")
    return info


def timer(device: str, tiny: bool) -> Callable[[Callable[[], Any]], float]:
    """A function returning the median milliseconds of a callable: do_bench on the GPU (it
    zeroes a large buffer to flush L2 before every sample), perf_counter on the CPU."""
    if device == "cuda":
        from triton.testing import do_bench

        return lambda fn: float(do_bench(fn, warmup=25, rep=100, return_mode="median"))

    def cpu_time(fn: Callable[[], Any]) -> float:
        fn()
        samples = []
        for _ in range(3 if tiny else 10):
            t0 = time.perf_counter()
            fn()
            samples.append((time.perf_counter() - t0) * 1e3)
        return statistics.median(samples)

    return cpu_time


def measure_ceilings(device: str, tiny: bool, time_ms: Callable) -> dict[str, float]:
    """Copy bandwidth (GB/s, read + write) and torch.matmul TFLOP/s per dtype."""
    import torch

    ceilings: dict[str, float] = {}
    nbytes = 16 * 2**20 if tiny else 1 << 30
    src = torch.empty(nbytes // 4, dtype=torch.float32, device=device).normal_()
    dst = torch.empty_like(src)
    ceilings["copy_gbps"] = 2 * nbytes / (time_ms(lambda: dst.copy_(src)) * 1e-3) / 1e9
    src = dst = None  # free the buffers before the matmuls
    torch.backends.cuda.matmul.allow_tf32 = False  # float32 ceiling in IEEE float32, like ours
    for dtype in DTYPES:
        n = 256 if tiny else (4096 if dtype == "float32" else 8192)
        a = torch.randn(n, n, device=device).to(getattr(torch, dtype))
        b = torch.randn(n, n, device=device).to(getattr(torch, dtype))
        ceilings[f"matmul_{dtype}_tflops"] = 2 * n**3 / (time_ms(lambda a=a, b=b: a @ b)
                                                         * 1e-3) / 1e12
    for key, value in ceilings.items():
        print(f"{key:>24}: {value:,.1f}")
    return ceilings


def torch_op(problem: Any, inputs: dict[str, Any]) -> Callable[[], Any]:
    """PyTorch's own op on the same tensors; NHWC data goes in as channels_last."""
    import torch.nn.functional as F

    x = inputs["x"]
    if problem.layout == "NHWC":
        x = x.permute(0, 3, 1, 2)  # a channels_last view, no copy
    if problem.op == "global_avg_pool":
        return lambda: x.mean((2, 3), keepdim=problem.keepdims)
    if problem.op == "dilated_conv2d":
        w, b, pad = inputs["weight"], inputs["bias"], problem.padding
        if problem.layout == "NHWC":
            w = w.contiguous(memory_format=__import__("torch").channels_last)
        if pad[0] != pad[1] or pad[2] != pad[3]:
            x = F.pad(x, (pad[2], pad[3], pad[0], pad[1]))
            pad = (0, 0, 0, 0)

        def conv() -> Any:
            y = F.conv2d(x, w, b, problem.stride, (pad[0], pad[2]), problem.dilation,
                         problem.groups)
            return y.relu_() if problem.activation == "relu" else y
        return conv
    if problem.mode not in ("half_pixel", "align_corners"):
        raise ValueError(f"PyTorch has no {problem.mode} mode")
    return lambda: F.interpolate(x, size=(problem.oh, problem.ow), mode="bilinear",
                                 align_corners=problem.mode == "align_corners")


def configs_to_check(problem: Any, extra: int) -> list[dict[str, Any]]:
    """The default config first, then up to ``extra`` others sampled from the Space."""
    from atrous.core.registry import op

    opdef = op(problem.op)
    default = opdef.default_config(problem, "triton")
    others = [c for c in opdef.space(problem, "triton").sample(extra + 1, seed=0)
              if c != default]
    return [default, *others[:extra]]


def compile_check(target_name: str, csv_path: str) -> bool:
    """Compile every default config and the stratified sample for ``target_name``, print the
    summary and failures, write the rows to ``csv_path``; True when every check passed."""
    from _tables import print_table as print_markdown

    from atrous.gpucheck.run import timed_run
    from atrous.gpucheck.summary import HEADERS, failures, summarize

    rows, seconds = timed_run("sample", [target_name])
    print_markdown(HEADERS, summarize(rows), right=range(5, 13), errors=failures(rows))
    bad = [r for r in rows if not r.ok]
    print(f"compile check ({target_name}): {len(rows)} compiled launches, {len(bad)} failed,"
          f" {seconds:.0f} s")
    Path(csv_path).parent.mkdir(parents=True, exist_ok=True)
    with open(csv_path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["kernel", "target", "case", "ok", "excluded", "registers",
                         "local_bytes", "shared_bytes", "mma", "wgmma", "seconds", "failures"])
        for r in rows:
            c = r.compiled
            writer.writerow([r.kernel, r.target, r.case.label, r.ok, r.excluded,
                             *((c.registers, c.local_bytes, c.shared_bytes, c.mma, c.wgmma,
                                f"{c.seconds:.3f}") if c else ("",) * 6),
                             " | ".join(r.failures)])
    return not bad


def run_case(name: str, problem: Any, device: str, extra: int, time_ms: Callable,
             ceilings: dict[str, float]) -> Row:
    """Validate, then time, one problem; errors land in the row, never escape."""

    from atrous.jobs.single import check_config, inputs_for, kernel_call

    row = Row(problem.op, name, problem.layout, problem.dtype)
    errors, worst, passed = [], 0.0, True
    # The float64 NumPy reference dominates a check: extra configs only where it is cheap
    # (every 33x33 ASPP conv; the 65x65 ones check their own default config).
    configs = configs_to_check(problem, extra if problem.flops < 2e10 else 0)
    row.config = json.dumps(configs[0], separators=(",", ":"))
    for cfg in configs:
        try:
            result = check_config(problem, "triton", cfg, device=device)
            worst = max(worst, result.rel_error)
            row.configs_checked += 1
            if not result.ok:
                passed = False
                errors.append(f"{cfg}: {result}")
        except Exception as e:  # a crash is a failed validation
            passed = False
            errors.append(f"{cfg}: {type(e).__name__}: {str(e)[:200]}")
    row.max_rel_error, row.ok = worst, passed
    inputs = inputs_for(problem, backend="triton", device=device)
    try:
        row.ms_ours = time_ms(kernel_call(problem, "triton", configs[0], inputs))
        if problem.op == "dilated_conv2d":
            row.unit, row.achieved = "TFLOP/s", problem.flops / (row.ms_ours * 1e-3) / 1e12
            key = "float32" if problem.dtype == "float32" else problem.dtype
            row.ceiling = ceilings.get(f"matmul_{key}_tflops", math.nan)
        else:
            row.unit, row.achieved = "GB/s", problem.bytes / (row.ms_ours * 1e-3) / 1e9
            row.ceiling = ceilings.get("copy_gbps", math.nan)
        row.fraction = row.achieved / row.ceiling
    except Exception as e:
        row.ok = False
        errors.append(f"timing: {type(e).__name__}: {str(e)[:200]}")
    try:
        row.ms_torch = time_ms(torch_op(problem, inputs))
        row.speedup = row.ms_torch / row.ms_ours
    except Exception as e:  # no baseline is no failure of ours
        errors.append(f"torch baseline: {type(e).__name__}: {str(e)[:120]}")
    row.error = " | ".join(errors)
    return row


def suite(tiny: bool, interpreted: bool) -> list[tuple[str, Any]]:
    """(name, problem) for every layout and dtype of the batch-1 ASPP suite (or the tiny one)."""
    from atrous.jobs.suite import default_suite, smoke_suite

    build = smoke_suite if tiny else default_suite
    cases = []
    for layout in LAYOUTS:
        for dtype in DTYPES:
            for entry in build(layout, dtype, batches=(1,)):
                if interpreted and dtype == "bfloat16" and entry.problem.op == "dilated_conv2d":
                    continue  # the interpreter's tl.dot is wrong on bfloat16
                cases.append((entry.name, entry.problem))
    return cases


def print_table(rows: list[Row]) -> None:
    """The rows as a Markdown table (what a person reads; the CSV holds the same fields),
    then each row's errors."""
    from _tables import print_table as print_markdown

    def fmt(value: float, spec: str) -> str:
        return "-" if math.isnan(value) else format(value, spec)

    headers = ("op", "shape", "layout", "dtype", "ms ours", "ms torch", "speedup", "achieved",
               "of ceil", "max err", "ok")
    cells = [(r.op, r.shape, r.layout, r.dtype, fmt(r.ms_ours, ".4f"), fmt(r.ms_torch, ".4f"),
              fmt(r.speedup, ".2f") + ("x" if not math.isnan(r.speedup) else ""),
              f"{r.achieved:,.4g} {r.unit}" if not math.isnan(r.achieved) else "-",
              fmt(r.fraction, ".1%"), fmt(r.max_rel_error, ".1e"), "yes" if r.ok else "NO")
             for r in rows]
    print_markdown(headers, cells, right=range(4, 10), errors=[
        f"{r.op} {r.shape} {r.layout} {r.dtype}: {r.error}" for r in rows if r.error])


def write_csv(rows: list[Row], path: str, machine: dict[str, str]) -> None:
    """The rows, with the machine's description repeated on each (tidy long format)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    names = [f.name for f in fields(Row)] + [f"machine_{k}" for k in machine]
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=names)
        writer.writeheader()
        for r in rows:
            writer.writerow({**asdict(r), **{f"machine_{k}": v for k, v in machine.items()}})


def main(argv: list[str] | None = None) -> int:
    """Run the check; 0 when every validation passed, 1 otherwise."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--csv", required=True, help="where to write the rows")
    parser.add_argument("--tiny", action="store_true",
                        help="tiny suite on the CPU under TRITON_INTERPRET=1")
    parser.add_argument("--extra-configs", type=int, default=None,
                        help="configs validated besides the default (2 on a GPU, 1 with --tiny)")
    parser.add_argument("--budget", type=float, default=270.0,
                        help="seconds after which remaining cases are recorded as skipped")
    parser.add_argument("--compile-check", default="auto", choices=["auto", "on", "off"],
                        help="compile check first: auto = on a GPU only")
    args = parser.parse_args(argv)
    from _device import benchmark_device

    device = benchmark_device(args.tiny)
    if device is None:
        return 1
    import torch  # after benchmark_device: TRITON_INTERPRET is set before triton loads

    start = time.perf_counter()
    machine = describe_machine(device)
    compiled_ok = True
    if args.compile_check == "on" or (args.compile_check == "auto" and device == "cuda"):
        from atrous.gpucheck.targets import device_target

        here = device_target()
        compiled_ok = compile_check(here.name if here else "sm_90",
                                    str(Path(args.csv).with_name(Path(args.csv).stem
                                                                 + "_compile.csv")))
        start = time.perf_counter()  # the validation budget starts after the compile check
    time_ms = timer(device, args.tiny)
    ceilings = measure_ceilings(device, args.tiny, time_ms)
    torch.backends.cudnn.allow_tf32 = False  # compare IEEE float32 with IEEE float32
    extra = args.extra_configs if args.extra_configs is not None else (1 if args.tiny else 2)
    rows: list[Row] = []
    try:
        for name, problem in suite(args.tiny, interpreted=device == "cpu"):
            if time.perf_counter() - start > args.budget:
                rows.append(Row(problem.op, name, problem.layout, problem.dtype,
                                error=f"skipped: past the {args.budget:.0f} s budget"))
                continue
            rows.append(run_case(name, problem, device, extra, time_ms, ceilings))
            r = rows[-1]
            print(f"[{time.perf_counter() - start:6.1f} s] {r.op} {r.shape} {r.layout} {r.dtype}:"
                  f" {'ok' if r.ok else 'FAIL'}", flush=True)
    finally:
        write_csv(rows, args.csv, machine)
    print_table(rows)
    failed = [r for r in rows if not r.ok and not r.error.startswith("skipped")]
    print(f"{len(rows)} cases, {len(failed)} failed, {time.perf_counter() - start:.0f} s;"
          f" CSV: {args.csv}")
    return 1 if failed or not compiled_ok else 0


if __name__ == "__main__":
    sys.exit(main())
