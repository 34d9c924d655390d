"""The fused ASPP on the CPU: valid-tap and Winograd GEMMs into one concatenation buffer.

With each image's pixels as a (H*W, Cin) matrix P (a view in both layouts: NCHW's is P's
transpose, which BLAS reads as is) and B = 1 + len(rates) spatial branches of C channels:

1. ``cat[:, :k*C] = P @ centre``: the 1x1 branch and the centre taps of the leading direct
   branches in one GEMM, written straight into the (N, H, W, B*C) concatenation buffer.
2. A direct 3x3 branch adds, per off-centre tap, only the output rectangle whose input lies
   inside the image (``ConvProblem.valid_taps``): ``cat[rect, branch] += P[rect shifted] @
   W[tap]``. A middle-column tap reads whole image rows, a contiguous slab of P; the left
   and right columns read a column window, copied once per rate and column. At rate 18 on
   a 33x33 map this skips 59% of a padded convolution's multiply-adds.
3. A branch whose lines (positions congruent mod the rate) hold three or more outputs runs
   through Winograd F(3,3) / F(2,3) tiles instead (``winograd``), the whole batch per GEMM:
   1.3x-2.3x fewer multiplies than step 2 at 33x33 rates 6/12 and 65x65 rates 12/24.
4. ``cat = relu(cat + bias)`` in place (BatchNorm is folded into the weights and biases).
5. The pooling branch is one (C,) vector per image, so its part of the projection joins
   the projection's bias: ``bias_n = b_proj + relu(mean(P) @ W_pool + b_pool) @ W_proj[pool]``.
6. ``out = relu(cat @ W_proj[branches] + bias_n)``, written straight into the output in the
   requested layout (NCHW as ``W_proj^T @ cat^T``).

The dense products go to NumPy's BLAS (OpenBLAS in the x86-64 wheels), which runs these
GEMMs (K = Cin = 2048) at the FMA peak, about 25% faster than the generated Numba conv
tile; the tap geometry, tilings, transforms, buffers and fusions are ours. Each fusion can
be switched off (:class:`Fusions`) to test it against the others.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any

import numpy as np

from atrous.api import global_avg_pool, upsample_bilinear
from atrous.deeplab.fusions import Fusions
from atrous.deeplab.weights import AsppWeights
from atrous.kernels.conv import winograd_cpu as winograd
from atrous.kernels.conv.spec import make_problem as conv_problem

#: Largest Winograd tile, F(MAX_TILE, 3); 1 turns Winograd off.
MAX_TILE = 3
#: Winograd is used when its products are below this share of direct taps' (its input
#: transform and output scatter cost about a tenth of the products they replace).
WINOGRAD_GAIN = 0.9


@dataclass(frozen=True)
class Column:
    """The off-centre taps of one kernel column kx of a 3x3 dilated conv on an HxW map.

    Output columns [ox0, ox1) read input columns [ox0 + shift, ox1 + shift); ``rows`` holds,
    per tap ky, (ky, oy0, oy1, iy0): output rows [oy0, oy1) read input rows from iy0.
    """

    kx: int
    ox0: int
    ox1: int
    shift: int
    rows: tuple[tuple[int, int, int, int], ...]


def tap_columns(h: int, w: int, rate: int) -> list[Column]:
    """The valid off-centre taps of a "same" 3x3 conv with dilation ``rate``, by column."""
    p = conv_problem((1, 1, h, w), (1, 1, 3, 3), None, "float32", padding="same",
                     dilation=rate)
    pad_top, pad_left = p.padding[0], p.padding[2]
    columns = []
    for kx in range(3):
        taps = [t for t in p.valid_taps if t[1] == kx and (t[0], t[1]) != (1, 1)]
        if not taps:
            continue
        rows = tuple((ky, y0, y1, y0 + ky * rate - pad_top) for ky, _, y0, y1, _, _ in taps)
        columns.append(Column(kx, taps[0][4], taps[0][5], kx * rate - pad_left, rows))
    return columns


def valid_macs(h: int, w: int, rates: tuple[int, ...]) -> int:
    """Pixel-tap products of the spatial branches the engine computes (per Cin x C), to show
    what tap skipping saves against ``h * w * (1 + 9 * len(rates))``."""
    total = h * w * (1 + len(rates))  # the 1x1 branch and the centre taps
    for rate in rates:
        for col in tap_columns(h, w, rate):
            total += sum(y1 - y0 for _, y0, y1, _ in col.rows) * (col.ox1 - col.ox0)
    return total


@cache
def winograd_axes(h: int, w: int, rate: int) -> tuple[winograd.Axis, winograd.Axis] | None:
    """The row and column tilings of a branch when Winograd pays off there, else None."""
    if winograd.saving(h, w, rate, MAX_TILE) < WINOGRAD_GAIN:
        return winograd.plan(h, w, rate, MAX_TILE)
    return None


def run(x: np.ndarray, weights: AsppWeights, layout: str, fusions: Fusions,
        out: np.ndarray) -> None:
    """Write the ASPP of the NumPy array ``x`` (in ``layout``) into ``out``.

    Args:
        x: (N, Cin, H, W) or (N, H, W, Cin), float32 or float64, C-contiguous.
        weights: CPU AsppWeights of x's dtype.
        layout: "NCHW" or "NHWC", for ``x`` and ``out``.
        fusions: which fusions to apply (at least one on; all off is the unfused path).
        out: C-contiguous (N, C, H, W) or (N, H, W, C) output of x's dtype.
    """
    pack, c, nb = weights.pack, weights.out_channels, weights.n_branches
    n = x.shape[0]
    h, w = (x.shape[2], x.shape[3]) if layout == "NCHW" else (x.shape[1], x.shape[2])
    pooled = global_avg_pool(x, layout=layout, backend="numba")  # (N, Cin), Numba
    pool_branch = np.maximum(pooled @ pack.pool + pack.pool_bias, 0)  # (N, C)
    plans = [(winograd_axes(h, w, r) if fusions.winograd else None) or tap_columns(h, w, r)
             for r in weights.rates]
    width = nb * c + (0 if fusions.pool_into_bias else c)
    if fusions.write_slices:  # one (N, H, W, width) buffer; each branch a channel slice
        cat = np.empty((n, h, w, width), x.dtype)
        branches = [cat[..., b * c:(b + 1) * c] for b in range(nb)]
    else:
        cat, branches = None, [np.empty((n, h, w, c), x.dtype) for _ in range(nb)]
    for i in range(n):
        _direct_branches(x[i], layout, pack, plans, fusions, [b[i] for b in branches],
                         None if cat is None else cat[i, ..., :nb * c])
    x_nhwc = None
    for r, plan in enumerate(plans):
        if not isinstance(plan, list):  # Winograd: the whole batch in each GEMM
            if x_nhwc is None:  # the transform reads whole pixels (Cin contiguous)
                x_nhwc = x if layout == "NHWC" else np.ascontiguousarray(x.transpose(0, 2, 3, 1))
            winograd.branch(x_nhwc, pack.taps[r], plan[0], plan[1], branches[1 + r],
                            pack.filters.setdefault(r, {}))
    for i in range(n):
        _project(pack, fusions, [b[i] for b in branches], None if cat is None else cat[i],
                 pool_branch[i], layout, out[i])


def _direct_branches(xi: np.ndarray, layout: str, pack: Any, plans: list, fusions: Fusions,
                     branches: list[np.ndarray], cat: np.ndarray | None) -> None:
    """One image's 1x1 branch and direct-tap branches, into their (H, W, C) ``branches``.

    ``cat`` is the image's (H, W, B*C) concatenation when the branches are slices of it.
    """
    if layout == "NCHW":
        cin, h, w = xi.shape
        pixels = xi.reshape(cin, h * w).T  # a transposed view: BLAS reads it without a copy
    else:
        h, w, cin = xi.shape
        pixels = xi.reshape(h * w, cin)
    m, c, nb = h * w, branches[0].shape[-1], len(branches)
    # Centre taps: Winograd branches have none of their own (their tiles cover all taps).
    direct = [0] + [1 + i for i, plan in enumerate(plans) if isinstance(plan, list)]
    shared = 0  # the leading run of direct branches, one GEMM when shared_centre
    while fusions.shared_centre and shared < nb and shared in direct:
        shared += 1
    if shared and cat is not None:
        np.matmul(pixels, pack.centre[:, :shared * c],
                  out=cat.reshape(m, -1)[:, :shared * c])
    elif shared:
        centre = pixels @ pack.centre[:, :shared * c]
        for b in range(shared):
            branches[b].reshape(m, c)[...] = centre[:, b * c:(b + 1) * c]
    for b in range(shared, nb):
        if b in direct:
            target = cat.reshape(m, -1)[:, b * c:(b + 1) * c] if cat is not None \
                else branches[b].reshape(m, c)
            np.matmul(pixels, pack.centre[:, b * c:(b + 1) * c], out=target)
    product = np.empty((m, c), xi.dtype)
    for r, plan in enumerate(plans):
        if isinstance(plan, list):
            _off_centre_taps(xi, layout, pack.taps[r], plan, branches[1 + r], product)


def _project(pack: Any, fusions: Fusions, branches: list[np.ndarray], cat: np.ndarray | None,
             pool_branch: np.ndarray, layout: str, oi: np.ndarray) -> None:
    """One image: bias and ReLU of the branches, the pooling branch, the projection."""
    h, w, c = branches[0].shape
    m, nb = h * w, len(branches)
    bias = pack.branch_bias.reshape(nb, c)
    flat = [cat.reshape(m, -1)[:, b * c:(b + 1) * c] if cat is not None
            else br.reshape(m, c) for b, br in enumerate(branches)]
    for b in range(nb):
        if fusions.epilogue:
            flat[b] += bias[b]
            np.maximum(flat[b], 0, out=flat[b])  # np.maximum keeps NaN, as torch.relu
        else:
            flat[b][...] = np.maximum(flat[b] + bias[b], 0)
    if fusions.pool_into_bias:
        project = pack.project[:nb * c]
        project_bias = pack.project_bias + pool_branch @ pack.project[nb * c:]
    else:
        project, project_bias = pack.project, pack.project_bias
        upsampled = upsample_bilinear(pool_branch.reshape(1, 1, 1, c), (h, w),
                                      align_corners=False, layout="NHWC", backend="numba")
        if cat is not None:
            cat[:, :, nb * c:] = upsampled[0]
        else:
            flat.append(upsampled.reshape(m, c))
    joined = cat.reshape(m, -1) if cat is not None else np.concatenate(flat, axis=1)
    if layout == "NHWC":
        o2, bias2 = oi.reshape(m, c), project_bias
        np.matmul(joined, project, out=o2)
    else:
        o2, bias2 = oi.reshape(c, m), project_bias[:, None]
        np.matmul(project.T, joined.T, out=o2)
    if fusions.epilogue:
        o2 += bias2
        np.maximum(o2, 0, out=o2)
    else:
        o2[...] = np.maximum(o2 + bias2, 0)


def _off_centre_taps(xi: np.ndarray, layout: str, taps: np.ndarray, columns: list[Column],
                     target: np.ndarray, product: np.ndarray) -> None:
    """``target[rect] += pixels[rect shifted] @ taps[ky, kx]`` for every valid off-centre tap.

    ``target`` is the branch's (H, W, C) slice, ``product`` an (H*W, C) scratch buffer.
    """
    nchw = layout == "NCHW"
    cin = xi.shape[0] if nchw else xi.shape[2]
    full = xi.shape[2] if nchw else xi.shape[1]
    for col in columns:
        ix0, wv = col.ox0 + col.shift, col.ox1 - col.ox0
        if wv == full:
            src = xi
        else:  # the column window, contiguous, so each tap's rows are one matrix
            src = np.ascontiguousarray(xi[:, :, ix0:ix0 + wv] if nchw else xi[:, ix0:ix0 + wv])
        for ky, oy0, oy1, iy0 in col.rows:
            nr = oy1 - oy0
            if nchw:
                a = src[:, iy0:iy0 + nr].reshape(cin, nr * wv).T
            else:
                a = src[iy0:iy0 + nr].reshape(nr * wv, cin)
            prod = np.matmul(a, taps[ky, col.kx], out=product[:nr * wv])
            target[oy0:oy1, col.ox0:col.ox1] += prod.reshape(nr, wv, -1)


def conv3x3(x: np.ndarray, taps: np.ndarray, rate: int, out: np.ndarray,
            filters: dict) -> None:
    """A "same" 3x3 conv (no bias) of an NHWC batch into ``out``, the engine's way: Winograd
    tiles where they pay (a rate-1 conv on a 33x33 map does 3.1x fewer products), else
    the centre tap plus valid off-centre taps.

    Args:
        x: (N, H, W, Cin) contiguous.
        taps: (3, 3, Cin, C) weights.
        rate: the dilation.
        out: (N, H, W, C) contiguous output.
        filters: the cache of Winograd-transformed filters for ``taps``.
    """
    n, h, w, cin = x.shape
    axes = winograd_axes(h, w, rate)
    if axes is not None:
        winograd.branch(x, taps, axes[0], axes[1], out, filters)
        return
    product = np.empty((h * w, out.shape[3]), x.dtype)
    for i in range(n):
        np.matmul(x[i].reshape(h * w, cin), taps[1, 1], out=out[i].reshape(h * w, -1))
        _off_centre_taps(x[i], "NHWC", taps, tap_columns(h, w, rate), out[i], product)
