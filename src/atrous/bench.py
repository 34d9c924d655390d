"""`atrous bench`: time the Numba kernel (default config), the NumPy reference and PyTorch
on a shape suite, and report medians, ratios, GB/s and GFLOP/s as tidy rows."""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from atrous import dispatch
from atrous.arrays import Kind
from atrous.autotune.timing import measure
from atrous.registry import op
from atrous.suite import Entry
from atrous.validate import random_inputs


@dataclass
class BenchRow:
    """One implementation timed on one suite entry (long format: one row per implementation)."""

    name: str
    op: str
    layout: str
    dtype: str
    implementation: str
    median_ms: float
    p20_ms: float
    p80_ms: float
    gbps: float
    gflops: float
    policy: str


def torch_baseline(problem: Any, inputs: dict[str, np.ndarray | None]) -> Callable[[], Any] | None:
    """PyTorch's own op on the same data, or None when torch is not installed. NHWC data is
    given to torch as a channels_last tensor, PyTorch's native NHWC."""
    try:
        import torch
        import torch.nn.functional as F
    except ImportError:
        return None

    def tensor(a: np.ndarray | None, image: bool = False) -> Any:
        if a is None:
            return None
        t = torch.from_numpy(a)
        return t.permute(0, 3, 1, 2) if image and problem.layout == "NHWC" else t

    x = tensor(inputs["x"], image=True)
    if problem.op == "global_avg_pool":
        return lambda: x.mean((2, 3), keepdim=problem.keepdims)
    if problem.op == "dilated_conv2d":
        w, b = tensor(inputs["weight"]), tensor(inputs["bias"])
        pad = problem.padding
        if pad[0] != pad[1] or pad[2] != pad[3]:
            x = F.pad(x, (pad[2], pad[3], pad[0], pad[1]))
            pad = (0, 0, 0, 0)
        act = torch.relu if problem.activation == "relu" else (lambda t: t)
        return lambda: act(F.conv2d(x, w, b, problem.stride, (pad[0], pad[2]), problem.dilation,
                                    problem.groups))
    if problem.mode not in ("half_pixel", "align_corners"):
        return None  # PyTorch has no asymmetric mode
    scale = (problem.scale_h, problem.scale_w) if problem.scale_h else None
    return lambda: F.interpolate(x, size=None if scale else (problem.oh, problem.ow),
                                 scale_factor=scale, mode="bilinear",
                                 align_corners=problem.mode == "align_corners")


def implementations(problem: Any, inputs: dict[str, np.ndarray | None],
                    with_numpy: bool) -> dict[str, Callable[[], Any]]:
    """name -> zero-argument callable for every implementation to time on ``problem``."""
    ordered = [inputs[n] for n in op(problem.op).inputs]
    out = np.empty(problem.out_shape, dtype=problem.dtype)
    impls: dict[str, Callable[[], Any]] = {
        "atrous-numba": lambda: dispatch.run(problem, dict(inputs), Kind("numpy"),
                                             backend="numba", out=out),
    }
    if with_numpy:
        impls["numpy-reference"] = lambda: op(problem.op).reference(problem, *ordered)
    baseline = torch_baseline(problem, inputs)
    if baseline is not None:
        impls["torch"] = baseline
    return impls


def bench(entries: Iterable[Entry], *, with_numpy: bool = True, seed: int = 0,
          progress: Callable[[Iterable], Iterable] = iter) -> list[BenchRow]:
    """Time every implementation on every entry; rows in long format."""
    try:
        import torch

        torch.set_num_threads(__import__("os").cpu_count() or 1)
    except ImportError:
        pass
    rows = []
    for entry in progress(list(entries)):
        p = entry.problem
        inputs = {k: None if v is None else v.astype(p.dtype)
                  for k, v in random_inputs(p, seed).items()}
        for name, fn in implementations(p, inputs, with_numpy).items():
            slow = name == "numpy-reference"
            t = measure(fn, samples=3 if slow else 7, max_time=20.0 if slow else 5.0)
            rows.append(BenchRow(entry.name, p.op, p.layout, p.dtype, name, t.median * 1e3,
                                 t.p20 * 1e3, t.p80 * 1e3, p.bytes / t.median / 1e9,
                                 p.flops / t.median / 1e9, t.policy))
    return rows


def write_csv(rows: list[BenchRow], path: str | Path) -> None:
    """Write the rows as CSV (a header, then one line per row)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(asdict(rows[0])) if rows else ["name"])
        writer.writeheader()
        writer.writerows(asdict(r) for r in rows)
