"""The CPU speed targets of issue 6 and their checks, for ``cpu_speed.py``: the numbers a
shape needs to meet, the per-shape :class:`Case` the benchmark builds, and
:func:`check_targets`, which says of each target "met", "NOT MET" or "n/a"."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

# The targets of issue 6.
GAP_READ = 0.90  # of measured read bandwidth, every GAP shape
GAP_VS_TORCH = 1.0
LOGITS_VS_BEST = 3.0  # upsample of the logits (many output pixels): x the faster baseline
LOGITS_WRITE = 0.50  # of measured write bandwidth
POOL_VS_TORCH = 1.0  # upsample of the pooling branch (from 1x1)
DILATED_VS_BEST = 1.0  # every dilated 3x3 shape, x the faster of PyTorch and ONNX Runtime
DILATED_GEOMEAN = 1.3
TILE_PEAK = 0.60  # the tile kernel's best rate on valid work, of the measured FMA peak
CONV1X1_VS_TORCH = 0.9
COMPILE_S = 2.0  # first calls of the three ops in a fresh process, per layout
SHORT = {"global_avg_pool": "gap", "dilated_conv2d": "conv", "upsample_bilinear": "upsample"}


@dataclass
class Case:
    """One shape in one layout: the table's row and what the targets read.

    ``role`` is "gap", "upsample-logits", "upsample-pool" (from 1x1), "conv-dilated",
    "conv1x1" or "conv". Times are median milliseconds (None: did not run, see ``note``).
    ``fraction`` is of the ceiling named by ``ceiling``; ``gflops`` is the tuned config's
    rate on valid work (convolutions); ``tile_fraction`` the best rate on valid work of a
    tile-kernel config (tuned or default) over the FMA peak.
    """

    name: str
    layout: str
    role: str
    ours_ms: float | None
    torch_ms: float | None = None
    ort_ms: float | None = None
    numpy_ms: float | None = None
    variant: str | None = None
    source: str = ""
    ceiling: str = ""
    fraction: float | None = None
    gflops: float | None = None
    tile_fraction: float | None = None
    variants: set[str] = field(default_factory=set)  # convolution variants timed
    note: str = ""

    @property
    def label(self) -> str:
        return f"{self.name} {self.layout}"

    def vs(self, baseline_ms: float | None) -> float | None:
        """``baseline_ms`` / ours (above 1: atrous is faster), None when either is missing."""
        if baseline_ms is None or self.ours_ms is None or self.ours_ms <= 0:
            return None
        return baseline_ms / self.ours_ms

    @property
    def best_ms(self) -> float | None:
        """The faster of PyTorch and ONNX Runtime (either alone when the other is missing)."""
        times = [t for t in (self.torch_ms, self.ort_ms) if t is not None]
        return min(times) if times else None


@dataclass
class Compile:
    """First-call cost in a fresh process: per op, (shape, first call minus second, s)."""

    layout: str
    ops: dict[str, tuple[str, float]] = field(default_factory=dict)
    import_s: float | None = None
    error: str = ""

    @property
    def total(self) -> float:
        return sum(s for _, s in self.ops.values())


@dataclass
class Target:
    """One target of issue 6 (``key`` names it for code, ``name`` for people): ``met`` is
    None when nothing could be measured for it."""

    key: str
    name: str
    met: bool | None
    detail: str

    @property
    def verdict(self) -> str:
        return "n/a" if self.met is None else "met" if self.met else "NOT MET"


def fmt_ms(v: float | None) -> str:
    """Milliseconds for a table cell ("-" when missing)."""
    return "-" if v is None else f"{v:.3f}" if v < 10 else f"{v:.1f}"


def fmt_x(v: float | None) -> str:
    """A speed ratio as "1.23x" ("-" when missing)."""
    return "-" if v is None else f"{v:.2f}x"


def fmt_pct(v: float) -> str:
    """A fraction as a whole percentage."""
    return f"{v:.0%}"


def _every(key: str, name: str, cases: list[Case], value: Callable[[Case], float | None],
           need: float, fmt: Callable[[float], str]) -> Target:
    """``value(case) >= need`` on every case that has a value; the worst one in the detail."""
    if not cases:
        return Target(key, name, None, "no such shapes in this run")
    got = [(c, value(c)) for c in cases]
    known = [(c, v) for c, v in got if v is not None]
    if not known:
        return Target(key, name, None, "not measured (baseline or ceiling missing)")
    worst, low = min(known, key=lambda cv: cv[1])
    below = sum(v < need for _, v in known)
    missing = len(got) - len(known)
    detail = (f"worst {fmt(low)} ({worst.label}); {below} of {len(known)} shapes below"
              f" {fmt(need)}" + (f"; {missing} not measured" if missing else ""))
    return Target(key, name, below == 0, detail)


def _geomean(key: str, name: str, cases: list[Case], value: Callable[[Case], float | None],
             need: float) -> Target:
    """The geometric mean of ``value`` over ``cases`` >= ``need``."""
    values = [v for v in map(value, cases) if v]
    if not values:
        return Target(key, name, None, "not measured" if cases else "no such shapes in this run")
    mean = math.exp(sum(math.log(v) for v in values) / len(values))
    return Target(key, name, mean >= need, f"geomean {mean:.2f}x over {len(values)} shapes"
                                           f" (range {min(values):.2f}x-{max(values):.2f}x)")


def _tile_target(cases: list[Case]) -> Target:
    """The best rate on valid work of a tile-kernel config >= TILE_PEAK of the FMA peak."""
    key, name = "dilated-tile", (f"dilated conv: tile kernel >= {TILE_PEAK:.0%} of FMA peak"
                                 " on valid work (best shape)")
    known = [c for c in cases if c.tile_fraction is not None]
    if not cases:
        return Target(key, name, None, "no such shapes in this run")
    if not known:
        seen = sorted({v for c in cases for v in c.variants})
        return Target(key, name, None, "no tile-kernel config was timed (neither tuned nor"
                      f" default; variants timed: {', '.join(seen) or 'none'}), or no FMA"
                      " ceiling")
    best = max(known, key=lambda c: c.tile_fraction or 0.0)
    frac = best.tile_fraction or 0.0
    return Target(key, name, frac >= TILE_PEAK, f"best {frac:.0%} ({best.label})")


def _compile_target(compiles: list[Compile]) -> Target:
    """Every layout's first calls of the three ops together <= COMPILE_S."""
    key, name = "compile", f"compile: first calls of the three ops <= {COMPILE_S:g} s"
    if not compiles:
        return Target(key, name, None, "not measured (--no-compile-check)")
    failed = [c for c in compiles if c.error]
    if failed:
        return Target(key, name, False, f"{failed[0].layout}: {failed[0].error}")
    worst = max(compiles, key=lambda c: c.total)
    parts = " + ".join(f"{SHORT.get(op, op)} {s:.2f}" for op, (_, s) in worst.ops.items())
    detail = ", ".join(f"{c.layout} {c.total:.2f} s" for c in compiles)
    return Target(key, name, worst.total <= COMPILE_S,
                  f"{detail} (worst {worst.layout}: {parts})")


def check_targets(cases: list[Case], compiles: list[Compile]) -> list[Target]:
    """Every target of issue 6, checked on ``cases`` and the compile probes."""
    by = {r: [c for c in cases if c.role == r] for r in
          ("gap", "upsample-logits", "upsample-pool", "conv-dilated", "conv1x1")}
    gap, logits, dilated = by["gap"], by["upsample-logits"], by["conv-dilated"]
    return [
        _every("gap-bandwidth", f"GAP >= {GAP_READ:.0%} of read bandwidth", gap,
               lambda c: c.fraction, GAP_READ, fmt_pct),
        _every("gap-torch", f"GAP >= {GAP_VS_TORCH:.1f}x PyTorch", gap,
               lambda c: c.vs(c.torch_ms), GAP_VS_TORCH, fmt_x),
        _every("logits-speed", f"upsample logits >= {LOGITS_VS_BEST:.0f}x the faster of"
               " PyTorch and ORT", logits, lambda c: c.vs(c.best_ms), LOGITS_VS_BEST, fmt_x),
        _every("logits-bandwidth", f"upsample logits >= {LOGITS_WRITE:.0%} of write bandwidth",
               logits, lambda c: c.fraction, LOGITS_WRITE, fmt_pct),
        _every("pool-torch", f"upsample pooling branch >= {POOL_VS_TORCH:.1f}x PyTorch",
               by["upsample-pool"], lambda c: c.vs(c.torch_ms), POOL_VS_TORCH, fmt_x),
        _every("dilated-every", f"dilated conv >= {DILATED_VS_BEST:.1f}x the faster of"
               " PyTorch and ORT", dilated, lambda c: c.vs(c.best_ms), DILATED_VS_BEST, fmt_x),
        _geomean("dilated-geomean", f"dilated conv geomean >= {DILATED_GEOMEAN:.1f}x the"
                 " faster of PyTorch and ORT", dilated, lambda c: c.vs(c.best_ms),
                 DILATED_GEOMEAN),
        _tile_target(dilated),
        _every("conv1x1-torch", f"1x1 conv (branch and projection) >= {CONV1X1_VS_TORCH:.1f}x"
               " PyTorch", by["conv1x1"], lambda c: c.vs(c.torch_ms), CONV1X1_VS_TORCH, fmt_x),
        _compile_target(compiles),
    ]
