"""Keras ASPP blocks on the CPU: stock Keras layers against the converted atrous block.

    PYTHONPATH=src .venv/bin/python benchmarks/keras_aspp.py
    PYTHONPATH=src .venv/bin/python benchmarks/keras_aspp.py --smoke     # seconds, small shapes

Keras 3 runs its torch backend (set here before Keras loads); both models run inference as
``model(x, training=False)`` under ``torch.no_grad()`` on float32 CPU tensors, NHWC
(channels_last, Keras's default). Cases:

- the Keras-tutorial block (3x3 conv + bias + ReLU at rates 1, 6, 12, 18; pooling branch;
  projection) at (1, 64, 64, 512) with 256 filters;
- torchvision's structure (1x1 + 3x3 at the rates, BatchNormalization, pooling branch,
  projection, dropout) at DeepLabV3's shapes: 2048 channels, 256 filters, rates 6/12/18 at
  33x33 and 12/24/36 at 65x65, batch 1 and 4.

``stock`` is the functional model of stock layers (``atrous.keras.keras_tutorial_block`` /
``torchvision_block``, seeded weights, random BatchNorm statistics); ``atrous`` is
``atrous.keras.convert(stock)``, the same weights in one ``atrous.keras.ASPP`` layer. After
warm-up calls (the first ones compile kernels and pack weights), samples alternate between
the two in rotating order so machine noise falls on both alike; the table gives medians,
the speedup stock / atrous from the same run and the relative error
max|atrous - stock| / max|stock|.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from typing import Any

os.environ["KERAS_BACKEND"] = "torch"  # before Keras is first imported

import keras
import numpy as np
import torch
from _tables import print_table

import atrous
import atrous.keras as ak

#: (label, structure, input shape NHWC, rates)
CASES = [
    ("tutorial", "keras_tutorial", (1, 64, 64, 512), (1, 6, 12, 18)),
    ("torchvision", "torchvision", (1, 33, 33, 2048), (6, 12, 18)),
    ("torchvision", "torchvision", (4, 33, 33, 2048), (6, 12, 18)),
    ("torchvision", "torchvision", (1, 65, 65, 2048), (12, 24, 36)),
    ("torchvision", "torchvision", (4, 65, 65, 2048), (12, 24, 36)),
]
SMOKE = [
    ("tutorial", "keras_tutorial", (1, 16, 16, 32), (1, 2, 3, 4)),
    ("torchvision", "torchvision", (2, 9, 9, 64), (2, 3, 4)),
]
TARGET = 1.5


def build(structure: str, shape: tuple[int, ...], rates: tuple[int, ...],
          filters: int) -> keras.Model:
    """The stock block with seeded weights and non-trivial BatchNorm statistics."""
    keras.utils.set_random_seed(0)
    if structure == "keras_tutorial":
        model = ak.keras_tutorial_block(shape, filters, rates)
    else:
        model = ak.torchvision_block(shape, filters, rates)
    rng = np.random.default_rng(1)
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D) and layer.use_bias:
            layer.bias.assign(rng.normal(0, 0.1, layer.filters).astype(np.float32))
        if isinstance(layer, keras.layers.BatchNormalization):
            c = layer.moving_mean.shape[0]
            layer.set_weights([rng.uniform(0.5, 1.5, c), rng.normal(0, 0.2, c),
                               rng.normal(0, 0.2, c), rng.uniform(0.5, 2.0, c)])
    return model


def time_pair(models: dict[str, Any], x: Any, repeats: int, warmup: int) -> dict[str, float]:
    """Median seconds per call of each model, samples interleaved in rotating order."""
    samples: dict[str, list[float]] = {k: [] for k in models}
    names = list(models)
    with torch.no_grad():
        for _ in range(warmup):
            for name in names:
                models[name](x, training=False)
        for i in range(repeats):
            for name in names[i % 2:] + names[:i % 2]:
                start = time.perf_counter()
                models[name](x, training=False)
                samples[name].append(time.perf_counter() - start)
    return {k: statistics.median(v) for k, v in samples.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per model")
    parser.add_argument("--warmup", type=int, default=2, help="untimed calls per model first")
    parser.add_argument("--smoke", action="store_true", help="small shapes, 8/16 filters")
    parser.add_argument("--only", choices=["tutorial", "torchvision"], default=None)
    args = parser.parse_args(argv)
    cases = SMOKE if args.smoke else CASES
    filters = 16 if args.smoke else 256
    rows, misses = [], []
    for label, structure, shape, rates in cases:
        if args.only and label != args.only:
            continue
        stock = build(structure, shape, rates, filters)
        converted, report = ak.convert(stock)
        if len(report.swapped) != 1:
            raise SystemExit(f"conversion did not swap the block: {report}")
        x = torch.from_numpy(np.random.default_rng(2).standard_normal(shape)
                             .astype(np.float32))
        with torch.no_grad():
            ref = stock(x, training=False)
            out = converted(x, training=False)
        err = float((out - ref).abs().max() / ref.abs().max())
        times = time_pair({"stock": stock, "atrous": converted}, x, args.repeats, args.warmup)
        speedup = times["stock"] / times["atrous"]
        n, h, w, c = shape
        rows.append([label, f"{n}x{h}x{w}x{c}", "/".join(map(str, rates)),
                     f"{times['stock'] * 1e3:.0f}", f"{times['atrous'] * 1e3:.0f}",
                     f"{speedup:.2f}x", f"{err:.1e}"])
        if speedup < TARGET:
            misses.append(f"{label} {shape}: {speedup:.2f}x < {TARGET}x")
        print(f"  {rows[-1]}", flush=True)
    print(f"\natrous {atrous.__version__}, keras {keras.__version__} (torch backend),"
          f" torch {torch.__version__}, {os.cpu_count()} CPUs, float32 NHWC,"
          f" median of {args.repeats} (after {args.warmup} warm-up calls each)")
    print_table(["block", "input NHWC", "rates", "stock Keras ms", "atrous ms", "speedup",
                 "rel err"], rows, right=(3, 4, 5, 6),
                errors=[f"below target: {m}" for m in misses])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
