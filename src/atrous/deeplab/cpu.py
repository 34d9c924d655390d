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
3. A branch whose lines (positions congruent mod the rate) hold two or more outputs runs
   through Winograd F(3,3) / F(2,3) / PAIR tiles instead (``winograd``), the whole batch
   per GEMM: 1.7x-2.3x fewer multiplies than step 2 at every rate of both default maps.
4. ``cat = relu(cat + bias)`` in place (BatchNorm is folded into the weights and biases).
5. The pooling branch is one (C,) vector per image, so its part of the projection joins
   the projection's bias: ``bias_n = b_proj + relu(mean(P) @ W_pool + b_pool) @ W_proj[pool]``.
6. ``out = relu(cat @ W_proj[branches] + bias_n)``, written straight into the output in the
   requested layout (NCHW as ``W_proj^T @ cat^T``).

The dense products go to NumPy's BLAS (OpenBLAS in the x86-64 wheels), which runs these
GEMMs (K = Cin = 2048) near the FMA peak, faster than the generated Numba conv tile; the
tap geometry, tilings, transforms, buffers and fusions are ours. The work runs as tasks on
every core with single-threaded BLAS (``run``; ``atrous.kernels.workers_cpu``). Each
fusion can be switched off (:class:`Fusions`) to test it against the others.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache, partial
from typing import Any

import numpy as np

from atrous.api import global_avg_pool, upsample_bilinear
from atrous.deeplab.fusions import Fusions
from atrous.deeplab.weights import AsppWeights
from atrous.kernels.conv import winograd_cpu as winograd
from atrous.kernels.conv.spec import make_problem as conv_problem
from atrous.kernels.workers_cpu import even_ranges, scratch, task_runner, workers

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

    The work runs as tasks on every core (``atrous.kernels.workers_cpu``), in phases:
    (0, NCHW with Winograd branches) per image row band, the NHWC copy the Winograd
    transforms read; (1) per row band the 1x1 branch and the direct branches, and per
    Winograd row filter its products for the whole batch (largest first); (2) per row band
    the Winograd products added up in a fixed order, bias and ReLU, the projection. Tasks
    write disjoint rows or their own arrays, so the result does not depend on who ran what.

    Args:
        x: (N, Cin, H, W) or (N, H, W, Cin), float32 or float64, C-contiguous.
        weights: CPU AsppWeights of x's dtype.
        layout: "NCHW" or "NHWC", for ``x`` and ``out``.
        fusions: which fusions to apply (at least one on; all off is the unfused path).
        out: C-contiguous (N, C, H, W) or (N, H, W, C) output of x's dtype.
    """
    pack, c, nb = weights.pack, weights.channels, weights.n_branches
    n = x.shape[0]
    h, w = (x.shape[2], x.shape[3]) if layout == "NCHW" else (x.shape[1], x.shape[2])
    pooling = weights.structure.pooling
    # (N, Cin), Numba
    pooled = global_avg_pool(x, layout=layout, backend="numba") if pooling else None
    # per branch: Winograd axes, or the direct off-centre taps by column (none for a 1x1)
    plans = [[] if k == 1 else
             (winograd_axes(h, w, r) if fusions.winograd else None) or tap_columns(h, w, r)
             for k, r in weights.structure.branches]
    width = nb * c + (c if pooling and not fusions.pool_into_bias else 0)
    if fusions.write_slices:  # one (N, H, W, width) buffer; each branch a channel slice
        cat = np.empty((n, h, w, width), x.dtype)
        branches = [cat[..., b * c:(b + 1) * c] for b in range(nb)]
    else:
        cat, branches = None, [np.empty((n, h, w, c), x.dtype) for _ in range(nb)]
    tiled = [r for r, plan in enumerate(plans) if not isinstance(plan, list)]
    for r in tiled:
        winograd.add_filters(pack.taps[r], *plans[r], pack.filters.setdefault(r, {}))
    x_nhwc = x if layout == "NHWC" or not tiled else np.empty((n, h, w, x.shape[1]), x.dtype)
    # one part per row filter: with every branch's row filters together there are enough
    cuts = {r: winograd.parts(plans[r][0], 1) for r in tiled}
    engine = _Engine(x, x_nhwc, layout, pack, plans, fusions, cat, branches, cuts,
                     {r: [np.empty(0)] * len(cuts[r]) for r in tiled})
    with task_runner() as run_tasks:
        # in here: a multi-threaded product would leave BLAS's workers spinning on the cores
        pool_branch = None if pooled is None else \
            np.maximum(pooled @ pack.pool + pack.pool_bias, 0)  # (N, C)
        bands = [(i, band) for i in range(n) for band in _bands(h, n, workers())]
        if x_nhwc is not x:
            run_tasks([partial(engine.transpose_band, i, band) for i, band in bands])

        def size(part: tuple[int, int]) -> int:  # rows of products: row x column components
            (c0, c1), ax = cuts[part[0]][part[1]], plans[part[0]][1]
            return (c1 - c0) * ax.products

        # largest first, so that the last tasks to start are short
        parts = sorted(((r, k) for r in tiled for k in range(len(cuts[r]))), key=size,
                       reverse=True)
        run_tasks([partial(engine.direct_band, i, band) for i, band in bands]
                  + [partial(engine.winograd_products, r, k) for r, k in parts])
        run_tasks([partial(engine.project_band, i, band,
                           None if pool_branch is None else pool_branch[i], out[i])
                   for i, band in bands])


def _bands(h: int, n: int, workers: int) -> list[tuple[int, int]]:
    """Row bands splitting each image's tasks so that every worker has about two of a
    phase's tasks, bands of at least 4 rows (their products need a few hundred rows)."""
    return even_ranges(h, max(1, min(-(-workers // n), h // 4)))


@dataclass
class _Engine:
    """One ASPP call's arrays, and its tasks (each takes the worker index it runs on)."""

    x: np.ndarray
    x_nhwc: np.ndarray
    layout: str
    pack: Any
    plans: list
    fusions: Fusions
    cat: np.ndarray | None
    branches: list[np.ndarray]
    cuts: dict[int, list[tuple[int, int]]]  # per Winograd branch, its parts (row filters)
    made: dict[int, list[np.ndarray]]  # and each part's products

    def transpose_band(self, i: int, band: tuple[int, int], worker: int) -> None:
        """The rows ``band`` of image i's NHWC copy, which the Winograd transforms read."""
        y0, y1 = band
        self.x_nhwc[i, y0:y1] = self.x[i, :, y0:y1].transpose(1, 2, 0)

    def direct_band(self, i: int, band: tuple[int, int], worker: int) -> None:
        """The output rows ``band`` of image i's 1x1 branch and direct-tap branches."""
        c = self.branches[0].shape[-1]
        _direct_branches(self.x[i], self.layout, self.pack, self.plans, self.fusions,
                         [b[i] for b in self.branches],
                         None if self.cat is None else self.cat[i, ..., :len(self.branches) * c],
                         band)

    def winograd_products(self, r: int, k: int, worker: int) -> None:
        """Part k's products for Winograd branch r, the whole batch at once."""
        self.made[r][k] = winograd.products(self.x_nhwc, *self.plans[r], self.cuts[r][k],
                                            self.pack.filters[r])

    def project_band(self, i: int, band: tuple[int, int], pool_branch: np.ndarray | None,
                     oi: np.ndarray, worker: int) -> None:
        """The output rows ``band`` of image i: the Winograd branches' products added up,
        epilogues, the projection."""
        h, (y0, y1) = self.branches[0].shape[1], band
        for r, made in self.made.items():
            out, channel = (self.cat, r * made[0].shape[1]) if self.cat is not None \
                else (self.branches[r], 0)
            winograd.scatter(self.cuts[r], made, *self.plans[r], out, channel,
                             (i * h + y0, i * h + y1))
        _project(self.pack, self.fusions, [b[i] for b in self.branches],
                 None if self.cat is None else self.cat[i], pool_branch, self.layout, oi,
                 band)


def _direct_branches(xi: np.ndarray, layout: str, pack: Any, plans: list, fusions: Fusions,
                     branches: list[np.ndarray], cat: np.ndarray | None,
                     band: tuple[int, int]) -> None:
    """The output rows ``band`` of one image's 1x1 branch and direct-tap branches, into
    their (H, W, C) ``branches``.

    ``cat`` is the image's (H, W, B*C) concatenation when the branches are slices of it.
    """
    if layout == "NCHW":
        cin, h, w = xi.shape
        pixels = xi.reshape(cin, h * w).T  # a transposed view: BLAS reads it without a copy
    else:
        h, w, cin = xi.shape
        pixels = xi.reshape(h * w, cin)
    y0, y1 = band
    rows = slice(y0 * w, y1 * w)
    pixels = pixels[rows]
    m, c, nb = pixels.shape[0], branches[0].shape[-1], len(branches)
    # Centre taps: Winograd branches have none of their own (their tiles cover all taps).
    direct = [b for b, plan in enumerate(plans) if isinstance(plan, list)]
    shared = 0  # the leading run of direct branches, one GEMM when shared_centre
    while fusions.shared_centre and shared < nb and shared in direct:
        shared += 1
    flat_cat = None if cat is None else cat.reshape(h * w, -1)[rows]
    if shared and cat is not None:
        np.matmul(pixels, pack.centre[:, :shared * c], out=flat_cat[:, :shared * c])
    elif shared:
        centre = pixels @ pack.centre[:, :shared * c]
        for b in range(shared):
            branches[b][y0:y1].reshape(m, c)[...] = centre[:, b * c:(b + 1) * c]
    for b in range(shared, nb):
        if b in direct:
            target = flat_cat[:, b * c:(b + 1) * c] if cat is not None \
                else branches[b][y0:y1].reshape(m, c)
            np.matmul(pixels, pack.centre[:, b * c:(b + 1) * c], out=target)
    for b, plan in enumerate(plans):
        if isinstance(plan, list) and plan:
            _off_centre_taps(xi, layout, pack.taps[b], plan, branches[b], band)


def _project(pack: Any, fusions: Fusions, branches: list[np.ndarray], cat: np.ndarray | None,
             pool_branch: np.ndarray | None, layout: str, oi: np.ndarray,
             band: tuple[int, int]) -> None:
    """The output rows ``band`` of one image: bias and ReLU of the branches, the pooling
    branch, the projection."""
    h, w, c = branches[0].shape
    y0, y1 = band
    rows = slice(y0 * w, y1 * w)
    m, nb = (y1 - y0) * w, len(branches)
    bias = pack.branch_bias.reshape(nb, c)
    flat = [cat.reshape(h * w, -1)[rows, b * c:(b + 1) * c] if cat is not None
            else br.reshape(h * w, c)[rows] for b, br in enumerate(branches)]
    for b in range(nb):
        if fusions.epilogue:
            flat[b] += bias[b]
            np.maximum(flat[b], 0, out=flat[b])  # np.maximum keeps NaN, as torch.relu
        else:
            flat[b][...] = np.maximum(flat[b] + bias[b], 0)
    if pool_branch is None:  # no pooling branch
        project, project_bias = pack.project, pack.project_bias
    elif fusions.pool_into_bias:
        project = pack.project[:nb * c]
        project_bias = pack.project_bias + pool_branch @ pack.project[nb * c:]
    else:
        project, project_bias = pack.project, pack.project_bias
        upsampled = upsample_bilinear(pool_branch.reshape(1, 1, 1, c), (h, w),
                                      align_corners=False, layout="NHWC", backend="numba")
        pool_rows = upsampled[0, y0:y1].reshape(m, c)
        if cat is not None:
            cat.reshape(h * w, -1)[rows, nb * c:] = pool_rows
        else:
            flat.append(pool_rows)
    joined = cat.reshape(h * w, -1)[rows] if cat is not None else np.concatenate(flat, axis=1)
    if layout == "NHWC":
        o2, bias2 = oi.reshape(h * w, -1)[rows], project_bias
        np.matmul(joined, project, out=o2)
    else:
        o2, bias2 = oi.reshape(-1, h * w)[:, rows], project_bias[:, None]
        np.matmul(project.T, joined.T, out=o2)
    if fusions.epilogue:
        o2 += bias2
        np.maximum(o2, 0, out=o2)
    else:
        o2[...] = np.maximum(o2 + bias2, 0)


def _off_centre_taps(xi: np.ndarray, layout: str, taps: np.ndarray, columns: list[Column],
                     target: np.ndarray, band: tuple[int, int] | None = None) -> None:
    """``target[rect] += pixels[rect shifted] @ taps[ky, kx]`` for every valid off-centre tap,
    over the rect's output rows inside ``band`` (all rows when None).

    ``target`` is the branch's (H, W, C) slice.
    """
    nchw = layout == "NCHW"
    cin = xi.shape[0] if nchw else xi.shape[2]
    full = xi.shape[2] if nchw else xi.shape[1]
    y0, y1 = band if band is not None else (0, target.shape[0])
    for col in columns:
        ix0, wv = col.ox0 + col.shift, col.ox1 - col.ox0
        # each tap's output rows in the band, and the input rows they read
        taps_rows = [(ky, max(oy0, y0), min(oy1, y1), iy0 + max(oy0, y0) - oy0)
                     for ky, oy0, oy1, iy0 in col.rows if max(oy0, y0) < min(oy1, y1)]
        if not taps_rows:
            continue
        lo = min(t[3] for t in taps_rows)
        hi = max(t[3] + t[2] - t[1] for t in taps_rows)
        if wv == full:
            src, lo = xi, 0
        else:  # the column window's rows, contiguous, so each tap's rows are one matrix
            src = np.ascontiguousarray(xi[:, lo:hi, ix0:ix0 + wv] if nchw
                                       else xi[lo:hi, ix0:ix0 + wv])
        for ky, oy0, oy1, iy0 in taps_rows:
            nr, iy = oy1 - oy0, iy0 - lo
            if nchw:
                a = src[:, iy:iy + nr].reshape(cin, nr * wv).T
            else:
                a = src[iy:iy + nr].reshape(nr * wv, cin)
            prod = np.matmul(a, taps[ky, col.kx],
                             out=scratch("off-centre", (nr * wv, target.shape[-1]), xi.dtype))
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
    for i in range(n):
        np.matmul(x[i].reshape(h * w, cin), taps[1, 1], out=out[i].reshape(h * w, -1))
        _off_centre_taps(x[i], "NHWC", taps, tap_columns(h, w, rate), out[i])
