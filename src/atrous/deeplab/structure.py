"""Which ASPP: its branches, its pooling branch, whether its convs carry a bias and/or BN.

Two structures are common, and :class:`AsppStructure` expresses both (and their mixes):

- torchvision's (``AsppStructure.torchvision(rates)``, the default everywhere): a 1x1
  branch, one 3x3 branch per atrous rate, the pooling branch (GAP -> 1x1 conv -> BN -> ReLU
  -> resize), a 1x1 projection -> BN -> ReLU; no conv has a bias.
- the Keras tutorial's (``AsppStructure.keras((1, 6, 12, 18))``): 3x3 branches at the given
  rates (the first at rate 1), each conv with a bias and ReLU and no batch norm; the pooling
  branch GAP -> 1x1 conv + bias + ReLU -> bilinear upsample of the 1x1 map (a broadcast in
  every coordinate mode); a 1x1 projection with a bias and ReLU.

Every conv is followed by ReLU. The parameters are named like the state dict of
``atrous.torch.ASPP`` built with the same structure (torchvision's names for its structure):

- branch i: conv ``convs.i.0`` (``.weight`` (C, Cin, k, k), ``.bias`` when ``bias``), batch
  norm ``convs.i.1`` (``.weight``, ``.bias``, ``.running_mean``, ``.running_var``) when
  ``batch_norm``;
- the pooling branch (when ``pooling``), at i = number of branches: conv ``convs.i.1``, BN
  ``convs.i.2``;
- the projection: conv ``project.0`` ((Cout, width, 1, 1), width = C times the branches
  plus one for pooling), BN ``project.1``.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from dataclasses import dataclass

#: Kernel sizes the fused engines run ("same" padding, stride 1).
KERNEL_SIZES = (1, 3)
BN_KEYS = ("weight", "bias", "running_mean", "running_var")


def check_rates(rates: object) -> tuple[int, ...]:
    """``rates`` as a tuple of positive ints; TypeError/ValueError naming what was given."""
    if isinstance(rates, (str, bytes)) or not isinstance(rates, Sequence):
        raise TypeError(f"rates must be a sequence of ints, got {rates!r}")
    out = []
    for r in rates:
        if isinstance(r, bool) or not isinstance(r, numbers.Integral):
            raise TypeError(f"rates must be a sequence of ints, got {rates!r}")
        if r < 1:
            raise ValueError(f"rates must be >= 1, got {tuple(rates)!r}")
        out.append(int(r))
    return tuple(out)


def _check_branches(branches: object) -> tuple[tuple[int, int], ...]:
    if isinstance(branches, (str, bytes)) or not isinstance(branches, Sequence) \
            or not branches:
        raise TypeError(f"branches must be a non-empty sequence of (kernel_size, rate) pairs,"
                        f" got {branches!r}")
    out = []
    for pair in branches:
        if isinstance(pair, (str, bytes)) or not isinstance(pair, Sequence) or len(pair) != 2:
            raise TypeError(f"branches must hold (kernel_size, rate) pairs, got {pair!r}")
        k, rate = pair
        if isinstance(k, bool) or not isinstance(k, numbers.Integral) \
                or int(k) not in KERNEL_SIZES:
            raise ValueError(f"branches: kernel_size must be one of {KERNEL_SIZES}, got"
                             f" {pair!r}")
        out.append((int(k), check_rates([rate])[0]))
    return tuple(out)


@dataclass(frozen=True)
class AsppStructure:
    """An ASPP's structure (see the module docstring for the parameter names it implies).

    Attributes:
        branches: the spatial branches in concatenation order, as (kernel_size, rate) pairs;
            kernel_size 1 or 3 ("same" padding); a 1x1 branch's rate is 1.
        pooling: whether the pooling branch (GAP -> 1x1 conv -> ReLU -> resize from 1x1,
            concatenated after the spatial branches) is there.
        bias: whether every conv has a bias.
        batch_norm: whether every conv is followed by a BatchNorm (running statistics,
            folded into the conv at inference).
    """

    branches: tuple[tuple[int, int], ...]
    pooling: bool = True
    bias: bool = False
    batch_norm: bool = True

    def __post_init__(self) -> None:
        branches = _check_branches(self.branches)
        if any(k == 1 and r != 1 for k, r in branches):
            raise ValueError(f"branches: a 1x1 branch has rate 1, got {self.branches!r}")
        object.__setattr__(self, "branches", branches)
        for name in ("pooling", "bias", "batch_norm"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name} must be a bool, got {getattr(self, name)!r}")

    @classmethod
    def torchvision(cls, rates: Sequence[int]) -> AsppStructure:
        """torchvision's ASPP: 1x1, a 3x3 per rate, pooling, no biases, BN after each conv."""
        return cls(((1, 1), *((3, r) for r in check_rates(rates))))

    @classmethod
    def keras(cls, rates: Sequence[int] = (1, 6, 12, 18), *, kernel_size: int = 3,
              pooling: bool = True) -> AsppStructure:
        """The Keras tutorial's ASPP: a ``kernel_size`` conv per rate, pooling, every conv
        with a bias and ReLU, no batch norm."""
        return cls(tuple((kernel_size, r) for r in check_rates(rates)), pooling=pooling,
                   bias=True, batch_norm=False)

    @property
    def rates(self) -> tuple[int, ...]:
        """The rates of the branches wider than 1x1 (torchvision's ``atrous_rates``)."""
        return tuple(r for k, r in self.branches if k > 1)

    @property
    def is_torchvision(self) -> bool:
        """Whether this is torchvision's structure (for its rates)."""
        return self == AsppStructure.torchvision(self.rates)

    @property
    def n_branches(self) -> int:
        """The spatial branches (the pooling branch is not counted)."""
        return len(self.branches)

    def layers(self) -> list[Layer]:
        """Every conv (with its BN) in order: the branches, pooling, the projection."""
        bn = self.batch_norm
        out = [Layer(f"convs.{i}.0", f"convs.{i}.1" if bn else None, k, r, self.bias)
               for i, (k, r) in enumerate(self.branches)]
        if self.pooling:
            i = len(self.branches)
            out.append(Layer(f"convs.{i}.1", f"convs.{i}.2" if bn else None, 1, 1, self.bias))
        out.append(Layer("project.0", "project.1" if bn else None, 1, 1, self.bias))
        return out

    def param_names(self) -> list[str]:
        """Every parameter name (``num_batches_tracked`` aside), in :meth:`layers` order."""
        names = []
        for layer in self.layers():
            names += layer.names()
        return names


@dataclass(frozen=True)
class Layer:
    """One conv (and its BatchNorm): key prefixes, kernel size, dilation, bias."""

    conv: str
    bn: str | None
    k: int
    rate: int = 1
    bias: bool = False

    def names(self) -> list[str]:
        """The layer's parameter names: conv weight (and bias), then the BN's."""
        names = [f"{self.conv}.weight"] + ([f"{self.conv}.bias"] if self.bias else [])
        return names + ([f"{self.bn}.{k}" for k in BN_KEYS] if self.bn else [])


def as_structure(spec: object) -> AsppStructure:
    """An :class:`AsppStructure`, or torchvision's for a sequence of atrous rates."""
    if isinstance(spec, AsppStructure):
        return spec
    return AsppStructure.torchvision(check_rates(spec))
