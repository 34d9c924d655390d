"""End-to-end DeepLabV3 ASPP and head on the CPU: atrous against PyTorch eager and compiled.

    PYTHONPATH=src .venv/bin/python benchmarks/aspp_bench.py --csv reports/aspp_bench.csv
    PYTHONPATH=src .venv/bin/python benchmarks/aspp_bench.py --smoke --no-compile   # seconds

For each part (the ASPP; the head: ASPP -> 3x3 conv -> BN -> ReLU -> 1x1 conv to 21 classes
-> bilinear upsample to the image), geometry (2048 channels at 33x33 with rates 6/12/18 and
65x65 with rates 12/24/36), batch (1, 4) and layout, three implementations run the same
seeded weights in float32:

- ``atrous``: ``atrous.torch.ASPP`` / ``DeepLabHead.from_module`` of the plain module
  (a channels-last input runs the NHWC engine);
- ``eager``: the plain torchvision-structured module in eval mode (for NHWC, the module and
  the input in ``torch.channels_last``, PyTorch's NHWC);
- ``compile``: ``torch.compile`` of that plain module (compile time excluded, reported).

Samples are interleaved (one call of each implementation per round, in rotating order) so
that noise from other work on the machine falls on all of them alike; the table gives
medians and the speedups eager / atrous and compile / atrous from the same run, and the
relative L2 difference between atrous's and eager's outputs.
"""

from __future__ import annotations

import argparse
import copy
import csv
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any


def _early_threads(argv: list[str]) -> None:
    """``--threads N`` must reach OpenBLAS, OpenMP and Numba before they load (their pools
    are sized at import), so it is read before the imports below."""
    if "--threads" in argv:
        n = argv[argv.index("--threads") + 1]
        for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "NUMBA_NUM_THREADS",
                    "MKL_NUM_THREADS"):
            os.environ[var] = n


if __name__ == "__main__":
    _early_threads(sys.argv)

import torch  # noqa: E402
import torch._inductor.config as inductor_config  # noqa: E402
from torchvision_deeplab import ASPP, DeepLabHead, seeded  # noqa: E402

import atrous  # noqa: E402
import atrous.torch as at  # noqa: E402

#: (feature size, rates, image size): output stride 16 on 513x513, 8 on 520x520.
GEOMETRIES = ((33, (6, 12, 18), 513), (65, (12, 24, 36), 520))
SMOKE = ((9, (2, 4, 6), 33),)


@dataclass
class Row:
    """One case: median milliseconds of each implementation and the speedups."""

    part: str
    shape: str
    layout: str
    batch: int
    ms_atrous: float
    ms_eager: float
    ms_compile: float
    x_eager: float
    x_compile: float
    rel_l2: float
    samples: int
    compile_s: float


def cpu_name() -> str:
    """The CPU's model name (Linux), else the platform's machine type."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.machine()


def build(part: str, cin: int, rates: tuple[int, ...], classes: int) -> torch.nn.Module:
    """The plain, seeded module of ``part``."""
    if part == "aspp":
        return seeded(ASPP(cin, rates))
    return seeded(DeepLabHead(cin, classes, rates))


def timed_rounds(impls: dict[str, Callable[[], Any]], samples: int) -> dict[str, list[float]]:
    """``samples`` rounds, each calling every implementation once, in rotating order."""
    names = list(impls)
    times: dict[str, list[float]] = {n: [] for n in names}
    for s in range(samples):
        for name in names[s % len(names):] + names[:s % len(names)]:
            t0 = time.perf_counter()
            impls[name]()
            times[name].append((time.perf_counter() - t0) * 1e3)
    return times


def run_case(part: str, plain: torch.nn.Module, ours: torch.nn.Module, compiled: Any,
             x: torch.Tensor, image: int, samples: int) -> tuple[dict[str, float], float]:
    """Medians per implementation (all warm), and rel L2 of atrous vs eager."""
    kwargs = {"image_size": (image, image)} if part == "head" else {}
    impls = {"atrous": lambda: ours(x, **kwargs), "eager": lambda: plain(x, **kwargs)}
    if compiled is not None:
        impls["compile"] = lambda: compiled(x, **kwargs)
    got, want = ours(x, **kwargs).double(), plain(x, **kwargs).double()
    err = float((got - want).norm() / want.norm())
    times = timed_rounds(impls, samples)
    return {k: statistics.median(v) for k, v in times.items()}, err


def warm_compile(compiled: Any, part: str, cin: int, feature: int, image: int, layout: str,
                 batches: list[int]) -> dict[int, float]:
    """Compile for every batch size before anything is timed (a new batch recompiles);
    the seconds each took."""
    seconds = {b: float("nan") for b in batches}
    if compiled is None:
        return seconds
    kwargs = {"image_size": (image, image)} if part == "head" else {}
    for batch in batches:
        x = torch.zeros(batch, cin, feature, feature)
        if layout == "NHWC":
            x = x.contiguous(memory_format=torch.channels_last)
        t0 = time.perf_counter()
        with torch.no_grad():
            compiled(x, **kwargs)
        seconds[batch] = time.perf_counter() - t0
    return seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--csv", help="also write the rows here")
    parser.add_argument("--smoke", action="store_true", help="tiny shapes (for tests)")
    parser.add_argument("--no-compile", action="store_true", help="skip torch.compile")
    parser.add_argument("--samples", type=int, default=5,
                        help="rounds per case (3 where one call takes over a second)")
    parser.add_argument("--parts", default="aspp,head")
    parser.add_argument("--batches", default="1,4")
    parser.add_argument("--layouts", default="NCHW,NHWC")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                        help="threads for every library (default: all cores)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    # Compile in this process: inductor's pool of compile workers would otherwise go on
    # using the cores while the first cases are timed.
    if not args.no_compile:
        inductor_config.compile_threads = 1
    cin, classes = (16, 5) if args.smoke else (2048, 21)
    geometries = SMOKE if args.smoke else GEOMETRIES
    print(f"machine: {cpu_name()}, {os.cpu_count()} cores,"
          f" {args.threads} threads; torch {torch.__version__}, atrous {atrous.__version__}")
    rows: list[Row] = []
    for part in args.parts.split(","):
        for feature, rates, image in geometries:
            plain = build(part, cin, rates, classes)
            for layout in args.layouts.split(","):
                base = copy.deepcopy(plain)
                if layout == "NHWC":
                    base = base.to(memory_format=torch.channels_last)
                ours = (at.ASPP if part == "aspp" else at.DeepLabHead).from_module(base)
                compiled = None if args.no_compile else torch.compile(base)
                batches = [int(b) for b in args.batches.split(",")]
                compile_s = warm_compile(compiled, part, cin, feature, image, layout, batches)
                for batch in batches:
                    x = torch.randn(batch, cin, feature, feature,
                                    generator=torch.Generator().manual_seed(batch))
                    if layout == "NHWC":
                        x = x.contiguous(memory_format=torch.channels_last)
                    with torch.no_grad():
                        for _ in range(2):  # the first call may compile: time the second
                            one = time.perf_counter()
                            ours(x) if part == "aspp" else ours(x, image_size=(image, image))
                    heavy = time.perf_counter() - one > 1.0
                    with torch.no_grad():
                        ms, err = run_case(part, base, ours, compiled, x, image,
                                                      min(args.samples, 3) if heavy
                                                      else args.samples)
                    row = Row(part, f"{cin}x{feature}x{feature} r{'/'.join(map(str, rates))}",
                              layout, batch, ms["atrous"], ms["eager"],
                              ms.get("compile", float("nan")), ms["eager"] / ms["atrous"],
                              ms.get("compile", float("nan")) / ms["atrous"], err,
                              min(args.samples, 3) if heavy else args.samples,
                              compile_s[batch])
                    rows.append(row)
                    print(f"  {part} {row.shape} {layout} b{batch}: atrous {row.ms_atrous:.1f}"
                          f" ms, eager {row.ms_eager:.1f}, compile {row.ms_compile:.1f}",
                          flush=True)
    print_table(rows)
    if args.csv:
        Path(args.csv).parent.mkdir(parents=True, exist_ok=True)
        with open(args.csv, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=[f.name for f in fields(Row)])
            writer.writeheader()
            writer.writerows(asdict(r) for r in rows)
    return 0


def print_table(rows: list[Row]) -> None:
    """The rows as a Markdown table (what BENCHMARKS.md quotes)."""
    print("\n| part | input | layout | batch | atrous ms | eager ms | compile ms |"
          " eager/atrous | compile/atrous | rel L2 vs eager |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r.part} | {r.shape} | {r.layout} | {r.batch} | {r.ms_atrous:.1f} |"
              f" {r.ms_eager:.1f} | {r.ms_compile:.1f} | {r.x_eager:.2f}x |"
              f" {r.x_compile:.2f}x | {r.rel_l2:.1e} |")


if __name__ == "__main__":
    sys.exit(main())
