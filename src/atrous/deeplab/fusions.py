"""The ASPP fusions, as switches: each one can be turned off to test it against the rest."""

from __future__ import annotations

from dataclasses import dataclass, fields


@dataclass(frozen=True)
class Fusions:
    """Which of the ASPP fusions (docs/cpu-engine.md) a fused run applies.

    All on is the default and the fast path; :meth:`none` (all off) selects the unfused path,
    a plain composition of the public ops (``dilated_conv2d`` per branch, ``global_avg_pool``,
    ``upsample_bilinear``, a concatenation, the projection conv) with bias and ReLU as
    separate steps: the reference every fusion is tested against.

    Attributes:
        pool_into_bias: the pooling branch (GAP -> 1x1 conv -> BN -> ReLU -> upsample from
            1x1) is a constant per (image, channel), so its share of the projection,
            ``W_proj[:, pool] @ pooled``, is added to the projection's bias per image: no
            upsample, no concatenation slice for it.
        write_slices: branches write straight into their slice of the concatenation buffer
            (instead of separate outputs joined by a copy).
        epilogue: bias (folded BatchNorm) and ReLU are applied where each conv's output is
            produced (the Triton kernels' epilogue; in place on the CPU) instead of as
            separate out-of-place steps.
        shared_centre: (CPU) the 1x1 branch and the centre taps of the 3x3 branches read the
            same pixels, so they run as one GEMM against a matrix of all of them. The Triton
            path runs one implicit GEMM per branch and ignores this switch.
        winograd: (CPU) not a fusion but a switch of the same kind: dilated branches whose
            lines along the map hold two or more outputs use Winograd F(2,3) / F(3,3) / PAIR
            tiles (``atrous.kernels.conv.winograd_cpu``), cutting their multiplies 1.7x-2.3x.

    Padded taps are always skipped: both conv engines compute only the output rectangle
    whose input lies inside the image for each tap.
    """

    pool_into_bias: bool = True
    write_slices: bool = True
    epilogue: bool = True
    shared_centre: bool = True
    winograd: bool = True

    @classmethod
    def none(cls) -> Fusions:
        """All fusions off: the unfused composition of the public ops."""
        return cls(**{f.name: False for f in fields(cls)})

    @classmethod
    def only(cls, name: str) -> Fusions:
        """Just the fusion ``name`` on (for testing one fusion at a time)."""
        names = [f.name for f in fields(cls)]
        if name not in names:
            raise ValueError(f"unknown fusion {name!r}; known: {names}")
        return cls(**{n: n == name for n in names})

    @property
    def any(self) -> bool:
        return any(getattr(self, f.name) for f in fields(self))
