"""The CPU convolution variants' own config keys and how they cut their work.

Each variant reads its own keys (``VARIANT_KEYS``) and ``threads``: "tile" its register
tile, "gemm" its row bands, channel blocks and batch merge (:class:`Blocking`),
"winograd" its largest tile, task and band counts and task order (:class:`Schedule`). A
config holds the other variants' keys at their defaults, and :class:`VariantSpace`
enumerates such configs per variant instead of the whole product of every key.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any

from atrous.core.space import Config, Space

#: The largest Winograd tile the planner uses by default (F(4, 3) saves more products on
#: long lines but its transforms cost more and round more: a tunable, ``WINO_TILE``).
DEFAULT_TILE = 3

#: Each CPU variant's own keys with their defaults: a config of another variant holds them
#: at these values (so no two configs differ only in keys their variant ignores).
VARIANT_KEYS: dict[str, dict[str, object]] = {
    "tile": {"BLOCK_CO": 4, "BLOCK_OW": 4},
    "gemm": {"GEMM_BANDS": 1, "GEMM_SPLIT": 1, "GEMM_MERGE": 1},
    "winograd": {"WINO_TILE": DEFAULT_TILE, "WINO_PARTS": 2, "WINO_BANDS": 2, "WINO_ORDER": "rows"},
}



def own_keys(config: dict) -> dict:
    """``config`` less the keys of the CPU variants it did not pick (held at their defaults,
    they say nothing about it); a config without a ``variant`` comes back as it is."""
    variant = config.get("variant")
    if not isinstance(variant, str):
        return dict(config)
    ignored = {k for v, keys in VARIANT_KEYS.items() if v != variant for k in keys}
    return {k: v for k, v in config.items() if k not in ignored}

class VariantSpace(Space):
    """A Space whose configs hold every variant's keys at their defaults but the config's
    own variant's: the same configs as the plain product filtered by the constraints, but
    enumerated per variant (the plain product of every key is ~50,000 combinations)."""

    def __iter__(self) -> Iterator[Config]:
        fixed = {k: v for keys in VARIANT_KEYS.values() for k, v in keys.items()}
        for variant in self.params["variant"]:
            free = ["variant", *VARIANT_KEYS[variant]] + [
                k for k in self.params if k != "variant" and k not in fixed]
            if any(fixed[k] not in self.params[k] for k in fixed if k not in free):
                continue
            for values in itertools.product(*([variant] if k == "variant" else self.params[k]
                                              for k in free)):
                config = {**fixed, **dict(zip(free, values, strict=True))}
                config = {k: config[k] for k in self.params}  # the Space's key order
                if self.allows(config):
                    yield config


@cache
def tile_choices(h: int, w: int, rate: int, sizes: tuple[int, ...] = (2, 3, 4)
                 ) -> tuple[int, ...]:
    """The largest-tile settings (``sizes``, the default always) that give different
    tilings of an HxW map at ``rate``: on short lines several give the same one."""
    from atrous.kernels.conv.winograd_cpu import line_tiling  # imports Numba: when used

    lengths = sorted({len(range(s, n, rate)) for n in (h, w) for s in range(min(rate, n))})
    seen: dict[tuple, int] = {}
    for m in sorted(sizes, key=lambda m: m != DEFAULT_TILE):  # the default claims its tiling
        seen.setdefault(tuple(tuple(line_tiling(n, m)) for n in lengths), m)
    return tuple(sorted(seen.values()))


@dataclass(frozen=True)
class Schedule:
    """How the "winograd" variant tiles, cuts and orders its work (its config keys).

    Args:
        max_tile: the largest F(m, 3) tile on a line (``WINO_TILE``).
        parts: product tasks per worker (``WINO_PARTS``): each row filter's components are
            split evenly when there are fewer row filters than that many tasks.
        bands: output row bands per worker (``WINO_BANDS``) for the scatter, bias, ReLU and
            NCHW transposes.
        largest_first: run the largest product tasks first (``WINO_ORDER`` "largest"), else
            in row filter order ("rows").
        threads: workers at most (``threads``); None: every core.
    """

    max_tile: int = DEFAULT_TILE
    parts: int = 2
    bands: int = 2
    largest_first: bool = False
    threads: int | None = None

    @classmethod
    def of(cls, config: Mapping[str, Any]) -> Schedule:
        """The schedule of a full CPU conv config."""
        return cls(max_tile=int(config["WINO_TILE"]), parts=int(config["WINO_PARTS"]),
                   bands=int(config["WINO_BANDS"]),
                   largest_first=config["WINO_ORDER"] == "largest",
                   threads=int(config["threads"]))


@dataclass(frozen=True)
class Blocking:
    """How the "gemm" variant cuts its work (its config keys).

    Args:
        bands: output row bands per image (``GEMM_BANDS``).
        splits: output channel blocks (``GEMM_SPLIT``).
        merge: NHWC, unblocked: a tap reading whole images is one product over the batch
            (``GEMM_MERGE``).
        threads: BLAS threads (unblocked) or task workers (blocked); None: every core.
    """

    bands: int = 1
    splits: int = 1
    merge: bool = True
    threads: int | None = None

    @classmethod
    def of(cls, config: Mapping[str, Any]) -> Blocking:
        """The blocking of a full CPU conv config."""
        return cls(bands=int(config["GEMM_BANDS"]), splits=int(config["GEMM_SPLIT"]),
                   merge=bool(config["GEMM_MERGE"]), threads=int(config["threads"]))
