"""Shape suites: the default DeepLabV3 ASPP shapes (data reused by tuning, benchmarks and
reports) and a tiny smoke suite with the same structure for tests."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from atrous.core.op import Problem, SuiteContext
from atrous.core.registry import OPS, op


@dataclass(frozen=True)
class Entry:
    """A named problem of a suite."""

    name: str
    problem: Problem


@dataclass(frozen=True)
class Geometry:
    """One DeepLabV3 setting: feature map size, atrous rates and final image size."""

    feature: int
    rates: tuple[int, ...]
    image: int


#: Output stride 16 on a 513x513 image, and output stride 8 on 520x520 (torchvision's crop).
DEEPLABV3 = (Geometry(33, (6, 12, 18), 513), Geometry(65, (12, 24, 36), 520))
SMOKE = (Geometry(5, (2, 6), 17),)


def build(geometries: tuple[Geometry, ...], *, batches: tuple[int, ...], in_channels: int,
          out_channels: int, classes: int, layout: str, dtype: str,
          ops: Iterable[str] | None = None) -> list[Entry]:
    """Each op's suite entries (:meth:`~atrous.core.op.Op.suite_entries`) at each geometry
    and batch, ops in registry order: for the built-ins, ASPP's GAP, the 1x1 branch, one
    dilated 3x3 per rate, the pooling branch's upsample from 1x1, and the logits' upsample
    to the image. ``ops`` limits it to those op names."""
    names = list(OPS) if ops is None else list(ops)
    entries = []
    for g in geometries:
        for n in batches:
            ctx = SuiteContext(g.feature, tuple(g.rates), g.image, n, in_channels,
                               out_channels, classes, layout, dtype)
            for name in names:
                entries.extend(Entry(label, problem)
                               for label, problem in op(name).suite_entries(ctx))
    return entries


def default_suite(layout: str = "NCHW", dtype: str = "float32",
                  batches: tuple[int, ...] = (1, 4)) -> list[Entry]:
    """DeepLabV3's ASPP at output stride 16 (33x33, rates 6/12/18) and 8 (65x65, 12/24/36)."""
    return build(DEEPLABV3, batches=batches, in_channels=2048, out_channels=256, classes=21,
                 layout=layout, dtype=dtype)


def smoke_suite(layout: str = "NCHW", dtype: str = "float32",
                batches: tuple[int, ...] = (1, 2)) -> list[Entry]:
    """A tiny suite with the default one's structure, for tests and dry runs."""
    return build(SMOKE, batches=batches, in_channels=16, out_channels=8, classes=3,
                 layout=layout, dtype=dtype)


SUITES = {"deeplabv3": default_suite, "smoke": smoke_suite}
