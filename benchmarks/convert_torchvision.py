"""torchvision's DeepLabV3 models, original against ``atrous.torch.convert``'s, end to end.

Needs torchvision, which does not import beside the CPU torch the README installs, so it
runs in an environment of its own, outside the repository (nothing is downloaded: the
models get random weights)::

    python3 -m venv /tmp/venv-tv
    /tmp/venv-tv/bin/pip install torch==2.14.1 torchvision==0.29.1
    /tmp/venv-tv/bin/pip install --no-deps -e .   # + numba, llvmlite, numpy, filelock...
    /tmp/venv-tv/bin/python benchmarks/convert_torchvision.py --size 513 --repeats 5

For each model (``deeplabv3_resnet50`` and ``deeplabv3_mobilenet_v3_large``, built with
``weights=None, weights_backbone=None`` and seeded weights and BatchNorm statistics), the
script converts a copy, checks the converted model's ``out`` against the original's in
float64 (both float32 models must be within the float32 tolerance of it, see
``atrous.core.tolerance``), then times inference per batch size and memory format, the two
models alternating call by call in the same process after warm-up calls; medians of
``--repeats`` calls, wall clock and process CPU time (the steadier one on a shared
machine). ``--convs none`` converts only the DeepLabHead, to tell its share from the
dilated backbone convs'. Prints a Markdown table (and writes JSON with ``--json``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from typing import Any

import torch
from torch import nn

import atrous.torch as at
from atrous.core.tolerance import compare
from atrous.torch.convert import CONV_MODES

MODELS = ("deeplabv3_resnet50", "deeplabv3_mobilenet_v3_large")
LAYOUTS = ("NCHW", "channels_last")


def build(name: str, seed: int = 0) -> nn.Module:
    """The torchvision model with random weights (no download) and non-trivial BatchNorm
    statistics (fresh ones are the identity, which would hide a folding error)."""
    from torchvision.models import segmentation

    torch.manual_seed(seed)
    model = getattr(segmentation, name)(weights=None, weights_backbone=None, num_classes=21)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.weight.copy_(1 + 0.1 * torch.randn(n, generator=g))
                m.bias.copy_(0.1 * torch.randn(n, generator=g))
                m.running_mean.copy_(0.1 * torch.randn(n, generator=g))
                m.running_var.copy_(0.5 + torch.rand(n, generator=g))
    return model.eval().requires_grad_(False)


def check(model: nn.Module, converted: nn.Module, size: int) -> dict[str, Any]:
    """Both float32 models against the original in float64 on one seeded image."""
    x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        ref = model.double()(x.double())["out"].numpy()
        model.float()
        original = compare(model(x)["out"], ref, "float32")
        ours = compare(converted(x)["out"], ref, "float32")
    return {"original_rel_error": original.rel_error, "converted_rel_error": ours.rel_error,
            "ok": ours.ok, "detail": str(ours)}


def time_pair(model: nn.Module, converted: nn.Module, x: torch.Tensor, repeats: int,
              warmup: int) -> tuple[float, float, float, float]:
    """Median wall-clock and process-CPU seconds per call of each model (original wall,
    converted wall, original CPU, converted CPU), calls alternating (original first). On a
    shared machine the CPU time (all threads of this process) is the steadier measure."""
    wall: list[list[float]] = [[], []]
    cpu: list[list[float]] = [[], []]
    with torch.inference_mode():
        for i in range(warmup + repeats):
            for k, m in enumerate((model, converted)):
                c0, t0 = time.process_time(), time.perf_counter()
                m(x)
                if i >= warmup:
                    wall[k].append(time.perf_counter() - t0)
                    cpu[k].append(time.process_time() - c0)
    return (statistics.median(wall[0]), statistics.median(wall[1]),
            statistics.median(cpu[0]), statistics.median(cpu[1]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--size", type=int, default=513, help="image height and width")
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 4])
    parser.add_argument("--layouts", nargs="+", default=list(LAYOUTS), choices=LAYOUTS)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--convs", default="auto", choices=CONV_MODES)
    parser.add_argument("--json", help="also write the rows here")
    args = parser.parse_args(argv)

    rows, failed = [], False
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, image"
          f" {args.size}x{args.size}, {args.repeats} alternating repeats after"
          f" {args.warmup} warm-up calls", flush=True)
    for name in args.models:
        model = build(name)
        conversion = at.convert(model, convs=args.convs)
        print(f"\n{name}: {conversion.counts()} swapped, {len(conversion.kept)} kept",
              flush=True)
        for entry in conversion.swapped:
            print(f"  {entry.path}: {entry.kind} -> {entry.into} ({entry.reason})")
        verdict = check(model, conversion.model, args.size)
        failed |= not verdict["ok"]
        print(f"  check vs float64 original: original {verdict['original_rel_error']:.2e},"
              f" converted {verdict['detail']}", flush=True)
        for layout in args.layouts:
            for batch in args.batches:
                x = torch.randn(batch, 3, args.size, args.size)
                if layout == "channels_last":
                    x = x.to(memory_format=torch.channels_last)
                    model.to(memory_format=torch.channels_last)
                    conversion.model.to(memory_format=torch.channels_last)
                else:
                    model.to(memory_format=torch.contiguous_format)
                    conversion.model.to(memory_format=torch.contiguous_format)
                t_orig, t_conv, c_orig, c_conv = time_pair(model, conversion.model, x,
                                                           args.repeats, args.warmup)
                row = {"model": name, "batch": batch, "layout": layout,
                       "original_ms": t_orig * 1e3, "converted_ms": t_conv * 1e3,
                       "speedup": t_orig / t_conv, "original_cpu_ms": c_orig * 1e3,
                       "converted_cpu_ms": c_conv * 1e3, "cpu_speedup": c_orig / c_conv,
                       **verdict, "swapped": conversion.counts()}
                rows.append(row)
                print(f"  batch {batch} {layout}: original {t_orig * 1e3:.1f} ms, converted"
                      f" {t_conv * 1e3:.1f} ms, x{t_orig / t_conv:.2f} (CPU time"
                      f" x{c_orig / c_conv:.2f})", flush=True)
    print(f"\n| model | batch | layout | original ms | converted ms | speedup | original CPU"
          f" ms | converted CPU ms | CPU-time speedup |  (convs={args.convs})")
    print("|---|---:|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['model']} | {r['batch']} | {r['layout']} | {r['original_ms']:.1f} |"
              f" {r['converted_ms']:.1f} | {r['speedup']:.2f}x | {r['original_cpu_ms']:.1f} |"
              f" {r['converted_cpu_ms']:.1f} | {r['cpu_speedup']:.2f}x |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"command": " ".join(sys.argv), "rows": rows}, f, indent=1)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
