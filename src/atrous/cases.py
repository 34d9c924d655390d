"""Small fixed problems that exercise every op's edge cases (sizes 1, odd sizes, sizes that
are no multiple of any block, dilation larger than the image). ``atrous verify`` runs every
config of every Space on them; the tests use them too."""

from __future__ import annotations

from typing import Any

from atrous.kernels.args import from_nchw
from atrous.kernels.conv.spec import make_problem as conv_problem
from atrous.kernels.gap.spec import make_problem as gap_problem
from atrous.kernels.upsample.spec import make_problem as upsample_problem


def gap_cases(layout: str, dtype: str) -> list[Any]:
    """GAP over single pixels, odd maps and channel counts that fill no block."""
    shapes = [(1, 1, 1, 1), (2, 3, 7, 5), (1, 37, 33, 33), (3, 70, 2, 9)]
    return [gap_problem(from_nchw(*s, layout), dtype, layout=layout, keepdims=k)
            for s, k in zip(shapes, (False, True, False, True), strict=True)]


def conv_cases(layout: str, dtype: str) -> list[Any]:
    """Convolutions with dilation, stride, groups, depthwise, 'same', bias and ReLU."""
    def make(n, cin, h, w, cout, k, **kw):
        weight = (cout, cin // kw.get("groups", 1), k, k)
        bias = (cout,) if kw.pop("bias", True) else None
        return conv_problem(from_nchw(n, cin, h, w, layout), weight, bias, dtype, layout=layout,
                            **kw)

    return [
        make(1, 5, 9, 11, 7, 3, padding="same", dilation=2, activation="relu"),
        make(2, 4, 7, 6, 6, 3, padding=3, dilation=3, bias=False),
        make(1, 3, 5, 5, 9, 3, padding=12, dilation=12),  # dilation larger than the image
        make(1, 6, 8, 9, 4, 3, stride=2, padding=(1, 2), groups=2, activation="relu"),
        make(1, 8, 6, 7, 8, 3, padding=1, groups=8),  # depthwise
        make(2, 9, 5, 4, 10, 1),  # the 1x1 branch
        make(1, 33, 7, 5, 40, 3, padding=6, dilation=6),  # channels that fill no block
    ]


def upsample_cases(layout: str, dtype: str) -> list[Any]:
    """Every coordinate mode; sizes, integer and fractional scales; up and down; 1x1 in."""
    def make(n, c, h, w, size=None, **kw):
        return upsample_problem(from_nchw(n, c, h, w, layout), dtype, size, layout=layout, **kw)

    return [
        make(1, 3, 1, 1, (5, 7)),  # the pooling branch
        make(2, 3, 5, 7, (17, 13), coordinate_mode="align_corners"),
        make(1, 4, 6, 5, scale_factor=2.5, coordinate_mode="asymmetric"),
        make(1, 2, 9, 7, (1, 4), coordinate_mode="pytorch_half_pixel"),
        make(1, 5, 11, 9, scale_factor=(0.5, 0.7)),  # downscaling
        make(1, 21, 9, 9, scale_factor=8, align_corners=False),
        make(1, 2, 4, 4, (1, 1), align_corners=True),
    ]


CASES = {"global_avg_pool": gap_cases, "dilated_conv2d": conv_cases,
         "upsample_bilinear": upsample_cases}


def small_cases(op: str, layout: str, dtype: str) -> list[Any]:
    """The small problems of ``op`` in ``layout`` and ``dtype``."""
    return CASES[op](layout, dtype)
