"""Small fixed problems that exercise every op's edge cases (sizes 1, odd sizes, sizes that
are no multiple of any block, dilation larger than the image): each op's
:meth:`~atrous.core.op.Op.cases`. ``atrous verify`` runs every config of every Space on
them; the tests use them too."""

from __future__ import annotations

from atrous.core.op import Problem
from atrous.core.registry import op


def small_cases(op_name: str, layout: str, dtype: str) -> list[Problem]:
    """The small problems of ``op_name`` in ``layout`` and ``dtype``."""
    return list(op(op_name).cases(layout, dtype))


def upsample_cases(layout: str, dtype: str) -> list[Problem]:
    """upsample_bilinear's small problems (every coordinate mode, up and down, 1x1 in)."""
    return small_cases("upsample_bilinear", layout, dtype)
