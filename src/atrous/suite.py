"""Shape suites: the default DeepLabV3 ASPP shapes (data reused by tuning, benchmarks and
reports) and a tiny smoke suite with the same structure for tests."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from atrous.kernels.args import from_nchw
from atrous.kernels.conv.spec import make_problem as conv_problem
from atrous.kernels.gap.spec import make_problem as gap_problem
from atrous.kernels.upsample.spec import make_problem as upsample_problem


@dataclass(frozen=True)
class Entry:
    """A named problem of a suite."""

    name: str
    problem: Any


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
          out_channels: int, classes: int, layout: str, dtype: str) -> list[Entry]:
    """The ASPP kernels of each geometry and batch: GAP, the 1x1 branch, one dilated 3x3 per
    rate, the pooling branch's upsample from 1x1, and the logits' upsample to the image."""
    entries = []
    for g in geometries:
        f = g.feature
        for n in batches:
            tag = f"{f}x{f} b{n}"
            x = from_nchw(n, in_channels, f, f, layout)
            entries.append(Entry(f"gap {in_channels}x{tag}",
                                 gap_problem(x, dtype, layout=layout)))
            entries.append(Entry(f"conv1x1 {in_channels}->{out_channels} {tag}", conv_problem(
                x, (out_channels, in_channels, 1, 1), None, dtype, layout=layout)))
            for r in g.rates:
                entries.append(Entry(f"conv3x3 d{r} {in_channels}->{out_channels} {tag}",
                                     conv_problem(x, (out_channels, in_channels, 3, 3), None,
                                                  dtype, padding="same", dilation=r,
                                                  layout=layout)))
            pooled = from_nchw(n, out_channels, 1, 1, layout)
            entries.append(Entry(f"upsample {out_channels}x1x1->{f}x{f} b{n}",
                                 upsample_problem(pooled, dtype, (f, f), layout=layout)))
            logits = from_nchw(n, classes, f, f, layout)
            entries.append(Entry(f"upsample {classes}x{tag}->{g.image}x{g.image}",
                                 upsample_problem(logits, dtype, (g.image, g.image),
                                                  layout=layout)))
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
