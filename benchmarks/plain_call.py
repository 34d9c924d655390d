"""Plain ``atrous.dilated_conv2d(x, w, ...)`` calls against prepared ones and PyTorch.

Per shape, in interleaved rounds in one process: the first plain call with new weights
(a fresh copy each round: packing, no Winograd filters), the second one (the filters are
made), a steady plain call (weights seen before: the weight cache), a prepared call
(``atrous.prepare_conv``) and PyTorch's ``F.conv2d`` (channels_last for NHWC). Medians.

    PYTHONPATH=src python benchmarks/plain_call.py --rounds 7 --threads 2

Public API only. ``--no-tuning`` uses the heuristic defaults instead of the tuning file.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np

import atrous


def _timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def measure(size: int, rate: int, layout: str, args: argparse.Namespace) -> dict[str, Any]:
    """Median milliseconds of each way of calling one convolution."""
    import torch
    import torch.nn.functional as F

    rng = np.random.default_rng(rate)
    x = rng.standard_normal((args.batch, args.cin, size, size)).astype(np.float32)
    w = (rng.standard_normal((args.cout, args.cin, 3, 3)) * 0.02).astype(np.float32)
    xt, wt = torch.from_numpy(x), torch.from_numpy(w)
    if layout == "NHWC":
        x = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
        xt = xt.contiguous(memory_format=torch.channels_last)
        wt = wt.contiguous(memory_format=torch.channels_last)
    options = {"padding": "same", "dilation": rate, "layout": layout}
    if args.tensors:  # atrous on CPU tensors: weights checked by version, not by content
        x, w = torch.from_numpy(x), torch.from_numpy(w)
    variant = atrous.explain("dilated_conv2d", x, w, **options).config["variant"]
    conv = atrous.prepare_conv(w, **options)
    for _ in range(2):  # warm: compiled kernels, the cache entry of w, its filters
        atrous.dilated_conv2d(x, w, **options)
        conv(x)
        with torch.no_grad():
            F.conv2d(xt, wt, padding="same", dilation=rate)
    times: dict[str, list[float]] = {k: [] for k in ("first", "second", "steady", "prepared",
                                                     "torch")}

    def plain(weight: Any) -> Callable[[], Any]:
        return lambda: atrous.dilated_conv2d(x, weight, **options)

    def torch_call() -> None:
        with torch.no_grad():
            F.conv2d(xt, wt, padding="same", dilation=rate)

    warm = {"steady": plain(w), "prepared": lambda: conv(x), "torch": torch_call}
    order = list(warm)
    for r in range(args.rounds):
        fresh = plain(w.clone() if args.tensors else w.copy())  # new weights: first, second
        times["first"].append(_timed(fresh))
        times["second"].append(_timed(fresh))
        del fresh  # the copy goes, and its cache entry with it
        for name in order[r % 3:] + order[:r % 3]:  # rotated: no call always goes first
            times[name].append(_timed(warm[name]))
    row = {k: statistics.median(v) * 1e3 for k, v in times.items()}
    return {"shape": f"{size}x{size} d{rate}", "layout": layout, "variant": variant, **row}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[33])
    parser.add_argument("--rates", type=int, nargs="+", default=[6, 12, 18])
    parser.add_argument("--layouts", nargs="+", default=["NCHW", "NHWC"],
                        choices=["NCHW", "NHWC"])
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--cin", type=int, default=2048)
    parser.add_argument("--cout", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    parser.add_argument("--tensors", action="store_true",
                        help="call atrous with torch CPU tensors instead of NumPy arrays")
    parser.add_argument("--no-tuning", action="store_true",
                        help="heuristic default configs instead of the tuning file")
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    if args.no_tuning:
        atrous.use_tuning(False)
    print(f"batch {args.batch}, {args.cin}->{args.cout} 3x3 'same', float32, medians of"
          f" {args.rounds} interleaved rounds, torch threads {args.threads}, atrous on"
          f" {'torch tensors' if args.tensors else 'NumPy arrays'}")
    head = (f"{'shape':<10} {'layout':<6} {'variant':<9} {'first':>7} {'second':>7}"
            f" {'steady':>7} {'prep.':>7} {'torch':>7} | {'first/torch':>11}"
            f" {'steady/prep':>11} {'torch/steady':>12}")
    print(head)
    print("-" * len(head))
    for layout in args.layouts:
        for size in args.sizes:
            for rate in args.rates:
                r = measure(size, rate, layout, args)
                print(f"{r['shape']:<10} {r['layout']:<6} {r['variant']:<9}"
                      f" {r['first']:7.1f} {r['second']:7.1f} {r['steady']:7.1f}"
                      f" {r['prepared']:7.1f} {r['torch']:7.1f} |"
                      f" {r['first'] / r['torch']:10.2f}x {r['steady'] / r['prepared']:10.3f}x"
                      f" {r['torch'] / r['steady']:11.2f}x", flush=True)
    print("times in ms; first/torch: the first call with new weights over PyTorch's call"
          " (target <= 1.5x); steady/prep: a plain call with seen weights over a prepared"
          " call (target <= 1.05x)")


if __name__ == "__main__":
    main()
