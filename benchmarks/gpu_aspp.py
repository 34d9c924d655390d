"""DeepLabV3's ASPP and head on a GPU: atrous's Triton path against PyTorch eager, validated.

    PYTHONPATH=src python3 benchmarks/gpu_aspp.py --csv gpu_aspp.csv          # on a CUDA machine
    TRITON_INTERPRET=1 PYTHONPATH=src python3 benchmarks/gpu_aspp.py --tiny --csv /tmp/a.csv

For the ASPP and the head (with the final upsample to the image), 2048 channels at 33x33
(rates 6/12/18) and 65x65 (rates 12/24/36), batch 1 and 4, both layouts (NHWC: channels-last
module and input, PyTorch's NHWC) and float32 / float16 / bfloat16: runs
``atrous.torch.ASPP`` / ``DeepLabHead`` (fused Triton path) and the plain torchvision-
structured module in eval mode on the same weights, checks both against a float64 run of
the plain module (relative L2 error), and times both (``triton.testing.do_bench`` median,
L2 flushed; float32 cuDNN convolutions without TF32, like ours).

``compare_aspp(device, tiny, time_ms)`` returns the rows, for ``gpu_check.py`` to import;
``--tiny`` runs tiny shapes on the CPU under TRITON_INTERPRET=1 so tests can exercise it
(the interpreter's tl.dot is wrong on bfloat16, so --tiny skips it).
"""

from __future__ import annotations

import argparse
import copy
import csv
import math
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

#: Largest relative L2 error against float64, by dtype (accumulation is float32 throughout).
BOUND = {"float32": 1e-5, "float16": 2e-3, "bfloat16": 1.5e-2}


@dataclass
class AsppRow:
    """One (part, shape, layout, dtype, batch) case on the GPU."""

    part: str
    shape: str
    layout: str
    dtype: str
    batch: int
    ms_atrous: float = math.nan
    ms_torch: float = math.nan
    speedup: float = math.nan
    err_atrous: float = math.nan
    err_torch: float = math.nan
    ok: bool = False
    error: str = ""


def default_timer(device: str, samples: int = 3) -> Callable[[Callable[[], Any]], float]:
    """Median milliseconds of a callable: do_bench on CUDA, perf_counter on the CPU."""
    if device == "cuda":
        from triton.testing import do_bench

        return lambda fn: float(do_bench(fn, warmup=10, rep=50, return_mode="median"))

    def cpu_time(fn: Callable[[], Any]) -> float:
        times = []
        for _ in range(samples):  # warm already: every case is validated before it is timed
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
        return statistics.median(times)

    return cpu_time


def cases(tiny: bool, interpreted: bool) -> list[tuple[str, int, int, tuple[int, ...], int,
                                                      str, str, int]]:
    """(part, Cin, feature, rates, image, layout, dtype, batch) to run. The tiny set covers
    each code path once (the interpreter runs every Triton program in Python)."""
    if tiny:
        small = (16, 9, (2, 4, 6), 17)
        return [("aspp", *small, "NCHW", "float32", 1), ("aspp", *small, "NHWC", "float32", 2),
                ("aspp", *small, "NHWC", "float16", 1), ("head", *small, "NCHW", "float32", 1)]
    dtypes = ("float32", "float16") if interpreted else ("float32", "float16", "bfloat16")
    return [(part, 2048, f, rates, image, layout, dtype, batch)
            for part in ("aspp", "head")
            for f, rates, image in ((33, (6, 12, 18), 513), (65, (12, 24, 36), 520))
            for layout in ("NCHW", "NHWC") for dtype in dtypes for batch in (1, 4)]


def compare_aspp(device: str = "cuda", tiny: bool = False,
                 time_ms: Callable[[Callable[[], Any]], float] | None = None) -> list[AsppRow]:
    """Validate and time atrous's ASPP and head against PyTorch eager on ``device``.

    A failing case records its error in the row; the run goes on.
    """
    import torch
    from torchvision_deeplab import ASPP, DeepLabHead, seeded

    import atrous.torch as at

    time_ms = time_ms or default_timer(device, 1 if tiny else 3)
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    rows = []
    built: dict[tuple, Any] = {}
    for part, cin, f, rates, image, layout, dtype, batch in cases(tiny, device == "cpu"):
        row = AsppRow(part, f"{cin}x{f}x{f} r{'/'.join(map(str, rates))}", layout, dtype, batch)
        rows.append(row)
        try:
            key = (part, cin, rates)
            if key not in built:
                built[key] = seeded(ASPP(cin, rates, 16 if tiny else 256) if part == "aspp"
                                    else DeepLabHead(cin, 5 if tiny else 21, rates))
            tdtype = getattr(torch, dtype)
            fmt = torch.channels_last if layout == "NHWC" else torch.contiguous_format
            plain = copy.deepcopy(built[key]).to(device=device, dtype=tdtype, memory_format=fmt)
            ours = (at.ASPP if part == "aspp" else at.DeepLabHead).from_module(
                plain, backend="triton")  # on the CPU: the interpreter, not the CPU engine
            exact = copy.deepcopy(built[key]).to(device=device, dtype=torch.float64)
            x = torch.randn(batch, cin, f, f, generator=torch.Generator().manual_seed(batch))
            kwargs = {"image_size": (image, image)} if part == "head" else {}
            with torch.no_grad():
                want = exact(x.to(device=device, dtype=torch.float64), **kwargs)
                x = x.to(device=device, dtype=tdtype).contiguous(memory_format=fmt)
                got, theirs = ours(x, **kwargs), plain(x, **kwargs)
                row.err_atrous = float((got.double() - want).norm() / want.norm())
                row.err_torch = float((theirs.double() - want).norm() / want.norm())
                row.ok = row.err_atrous <= BOUND[dtype]
                if not row.ok:
                    row.error = f"rel L2 error {row.err_atrous:.2e} > {BOUND[dtype]:.0e}"
                row.ms_atrous = time_ms(lambda m=ours, x=x, kw=kwargs: m(x, **kw))
                row.ms_torch = time_ms(lambda m=plain, x=x, kw=kwargs: m(x, **kw))
            row.speedup = row.ms_torch / row.ms_atrous
        except Exception as e:  # a crash is a failed case, reported in its row
            row.ok, row.error = False, f"{type(e).__name__}: {str(e)[:200]}"
        print(f"  {row.part} {row.shape} {row.layout} {row.dtype} b{row.batch}:"
              f" {'ok' if row.ok else 'FAIL'} {row.ms_atrous:.3f} ms vs {row.ms_torch:.3f} ms",
              flush=True)
    return rows


def print_rows(rows: list[AsppRow]) -> None:
    """The rows as a Markdown table, errors after it."""
    from _tables import print_table

    headers = ("part", "input", "layout", "dtype", "batch", "atrous ms", "torch ms", "speedup",
               "err atrous", "err torch", "ok")
    cells = [(r.part, r.shape, r.layout, r.dtype, str(r.batch), f"{r.ms_atrous:.3f}",
              f"{r.ms_torch:.3f}", f"{r.speedup:.2f}x", f"{r.err_atrous:.1e}",
              f"{r.err_torch:.1e}", "yes" if r.ok else "NO") for r in rows]
    print_table(headers, cells, right=range(4, 10), errors=[
        f"{r.part} {r.shape} {r.layout} {r.dtype} b{r.batch}: {r.error}" for r in rows
        if r.error])


def write_csv(rows: list[AsppRow], path: str) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=[f.name for f in fields(AsppRow)])
        writer.writeheader()
        writer.writerows(asdict(r) for r in rows)


def main(argv: list[str] | None = None) -> int:
    """Run the comparison; 0 when every case validated, 1 otherwise."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--csv", help="also write the rows here")
    parser.add_argument("--tiny", action="store_true",
                        help="tiny shapes on the CPU under TRITON_INTERPRET=1")
    args = parser.parse_args(argv)
    from _device import benchmark_device

    device = benchmark_device(args.tiny)
    if device is None:
        return 1
    import torch  # after benchmark_device: TRITON_INTERPRET is set before triton loads

    name = torch.cuda.get_device_name(0) if device == "cuda" else "CPU, TRITON_INTERPRET=1"
    print(f"device: {name}; torch {torch.__version__}")
    start = time.perf_counter()
    rows = compare_aspp(device, args.tiny)
    print_rows(rows)
    if args.csv:
        write_csv(rows, args.csv)
    failed = [r for r in rows if not r.ok]
    print(f"{len(rows)} cases, {len(failed)} failed, {time.perf_counter() - start:.0f} s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
