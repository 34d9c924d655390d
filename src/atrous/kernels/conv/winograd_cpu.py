"""Winograd tiles for ASPP's dilated 3x3 branches on the CPU: fewer multiplies than any
direct convolution, padded taps still skipped.

A "same" 3x3 conv with dilation d splits, along each axis, into d independent lines (the
positions congruent mod d) of a plain 3-tap correlation with zero padding. On such a line
of n outputs a direct conv does ``3n - 2`` products (the two end outputs lose a tap to the
padding); Winograd's minimal filtering F(m, 3) computes m outputs with ``m + 2``, and a
line of exactly two outputs, a 2x2 Toeplitz product, takes 3 (``PAIR``). So each line is
tiled (by dynamic programming) with F(3, 3), F(2, 3), PAIR and direct single outputs,
whichever needs the fewest products, and the 2-D work is the product of the two axes'
tilings. On ASPP's maps (33x33 at rates 6/12/18, 65x65 at 12/24/36) this cuts a branch's
products 1.7x to 2.3x below tap skipping alone.

Every 1-D tile is a set of components: a filter row (a linear combination of the 3 taps),
an input combination (B^T row) and an output combination (A^T column). In 2-D a component
pair (y, x) multiplies the 2-D input combination by the 2-D filter ``row_y (x) row_x``
applied to the kernel; components with the same filter pair across the whole image form
one GEMM ``(rows, Cin) @ (Cin, C)``. A Numba kernel builds the transformed inputs, NumPy's
BLAS multiplies (``products``, one task per row filter), and a second kernel scatters the
products into the branch's slice of the concatenation buffer (``scatter``, one task per
band of output rows, row filters in order). Transformed filters are cached with the
prepared weights.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from functools import cache, partial
from typing import Any

import numpy as np
from numba import njit

from atrous.kernels.conv.filters_cpu import mixed
from atrous.kernels.conv.schedule_cpu import DEFAULT_TILE, Schedule
from atrous.kernels.workers_cpu import even_ranges, scratch, task_runner, workers

#: Interpolation points of F(m, 3) (plus infinity): small, exact in binary, well conditioned.
POINTS = {2: (0.0, 1.0, -1.0), 3: (0.0, 1.0, -1.0, 0.5), 4: (0.0, 1.0, -1.0, 0.5, -0.5)}


@cache
def toom_cook(m: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(A^T (m, a), G (a, 3), B^T (a, a)) of F(m, 3), a = m + 2, for correlation:
    ``y = A^T [(G g) * (B^T x)]`` with ``y[i] = sum_k x[i + k] g[k]``."""
    pts, a = POINTS[m], m + 2
    at, g = np.zeros((m, a)), np.zeros((a, 3))
    for j, p in enumerate(pts):
        norm = np.prod([p - q for q in pts if q != p])
        at[:, j] = [p ** i for i in range(m)]
        g[j] = [p ** k / norm for k in range(3)]
    at[m - 1, a - 1] = g[a - 1, 2] = 1.0
    # B^T from the defining identity, for every basis input b and tap k: a small exact
    # linear system in B^T's entries, solved once.
    system, target = np.zeros((m * 3 * a, a * a)), np.zeros(m * 3 * a)
    for r, (i, k, b) in enumerate((i, k, b) for i in range(m) for k in range(3)
                                  for b in range(a)):
        system[r, b::a] = at[i] * g[:, k]  # entry (j, b) of B^T sits at j * a + b
        target[r] = float(b == i + k)
    bt = np.linalg.lstsq(system, target, rcond=None)[0].reshape(a, a).round(12)
    return at, g, bt


@dataclass(frozen=True)
class Axis:
    """The 1-D components of one axis's tiling, as padded arrays for the Numba kernels.

    ``filters[f]`` is a canonical filter row (first non-zero entry 1); component c uses
    ``filters[filt[c]]``, reads ``sum_s in_coef[c, s] * x[in_pos[c, s]]`` and adds
    ``out_coef[c, t] * product`` to output ``out_pos[c, t]`` (zero coefficients pad).
    Components are ordered by filter: filter f's are ``groups[f]:groups[f + 1]``.
    """

    filters: tuple[tuple[float, float, float], ...]
    filt: np.ndarray
    in_pos: np.ndarray
    in_coef: np.ndarray
    out_pos: np.ndarray
    out_coef: np.ndarray
    groups: np.ndarray

    @property
    def products(self) -> int:
        return len(self.filt)


#: The two outputs of a line that holds only them (both outer taps read padding):
#: ``y0 = x0 g1 + x1 g2`` and ``y1 = x0 g0 + x1 g1``, a 2x2 Toeplitz product, take 3
#: products instead of F(2,3)'s 4: ``m = (x0 + x1) g1``, ``y0 = m + x1 (g2 - g1)``,
#: ``y1 = m + x0 (g0 - g1)``. As (filter row, input coefficients, output coefficients)
#: over (x0, x1) and (y0, y1); the coefficients are 0 and 1, so no rounding is added.
PAIR = (((0.0, 1.0, 0.0), (1.0, 1.0), (1.0, 1.0)),
        ((0.0, -1.0, 1.0), (0.0, 1.0), (1.0, 0.0)),
        ((1.0, -1.0, 0.0), (1.0, 0.0), (0.0, 1.0)))


def _tile_cost(n: int, start: int, m: int) -> int:
    """Products of a tile of m outputs from line index ``start`` (line of n outputs)."""
    if m == 1:
        return 1 + (start > 0) + (start < n - 1)
    if m == 2 and n == 2:  # the whole line: PAIR
        return 3
    return m + 2


def line_tiling(n: int, max_tile: int) -> list[int]:
    """Tile sizes covering a line of n outputs with the fewest products (ties: smaller
    tiles, which need no input transform)."""
    best = [(0, [])] + [None] * n  # best[i]: (cost, sizes) for the first i outputs
    for i in range(1, n + 1):
        options = []
        for m in range(1, min(max_tile, i) + 1):
            cost, sizes = best[i - m]
            options.append((cost + _tile_cost(n, i - m, m), m, [*sizes, m]))
        cost, _, sizes = min(options)
        best[i] = (cost, sizes)
    return best[n][1]


def axis_plan(length: int, rate: int, max_tile: int) -> Axis:
    """The components of a "same" 3-tap conv with dilation ``rate`` along ``length``."""
    comps: list[tuple[tuple[float, ...], list, list]] = []
    for start in range(min(rate, length)):
        line = list(range(start, length, rate))
        i = 0
        for m in line_tiling(len(line), max_tile):
            q = line[i:i + m]
            i += m
            if m == 1:
                for k in range(3):
                    pos = q[0] + (k - 1) * rate
                    if 0 <= pos < length:
                        comps.append((tuple(float(k == j) for j in range(3)), [(pos, 1.0)],
                                      [(q[0], 1.0)]))
                continue
            if m == 2 and len(line) == 2:
                for row, ins, outs in PAIR:
                    comps.append((row, [(p, c) for p, c in zip(q, ins, strict=True) if c],
                                  [(p, c) for p, c in zip(q, outs, strict=True) if c]))
                continue
            at, g, bt = toom_cook(m)
            for j in range(m + 2):
                ins = [(q[0] + (b - 1) * rate, bt[j, b]) for b in range(m + 2)
                       if bt[j, b] != 0 and 0 <= q[0] + (b - 1) * rate < length]
                outs = [(q[t], at[t, j]) for t in range(m) if at[t, j] != 0]
                if ins:
                    comps.append((tuple(g[j]), ins, outs))
    return _pack_axis(comps)


def _pack_axis(comps: list[tuple[tuple[float, ...], list, list]]) -> Axis:
    """Canonical filter rows (scale moved into the input coefficients), components grouped
    by filter, padded arrays."""
    filters: dict[tuple[float, ...], int] = {}
    keyed = []
    for row, ins, outs in comps:
        lead = next(v for v in row if v != 0)
        key = tuple(float(round(v / lead, 12)) for v in row)
        keyed.append((filters.setdefault(key, len(filters)), [(p, c * lead) for p, c in ins],
                      outs))
    keyed.sort(key=lambda comp: comp[0])  # stable: a filter's components keep their order
    filt = np.array([f for f, _, _ in keyed])

    def padded(items: list[list[tuple[int, float]]]) -> tuple[np.ndarray, np.ndarray]:
        width = max(len(it) for it in items)
        pos, coef = np.zeros((len(items), width), np.int64), np.zeros((len(items), width))
        for c, it in enumerate(items):
            for s, (p, v) in enumerate(it):
                pos[c, s], coef[c, s] = p, v
        return pos, coef

    in_pos, in_coef = padded([ins for _, ins, _ in keyed])
    out_pos, out_coef = padded([outs for _, _, outs in keyed])
    groups = np.searchsorted(filt, np.arange(len(filters) + 1))
    return Axis(tuple(filters), filt, in_pos, in_coef, out_pos, out_coef, groups)


@cache
def direct_products(length: int, rate: int) -> int:
    """Per-axis products of direct taps with padding skipped (``3n - 2`` per line)."""
    return axis_plan(length, rate, 1).products


def transformed_filter(taps: np.ndarray, fy: tuple[float, ...], fx: tuple[float, ...]
                       ) -> np.ndarray:
    """``sum_{ky,kx} fy[ky] fx[kx] taps[ky, kx]``: (Cin, C) from (3, 3, Cin, C) taps."""
    return mixed(taps, [(fy, fx)], transpose=False)[0]


@njit(nogil=True, cache=True, fastmath={"reassoc", "contract"})
def _transform(x, yin, ycoef, xin, xcoef, groups, out):  # pragma: no cover - jitted
    """The input transform of one row filter for every (image, row component) pair.

    A row component's input combination ``sum_s ycoef[i, s] x[n, yin[i, s]]`` is built once
    in a cache-resident (W, Cin) scratch row; every column component (all column filters
    at once, so the row is read from cache, not memory) then writes
    ``sum_t xcoef[j, t] row[xin[j, t]]`` into its GEMM operand: column filter f owns the
    rows [N * ny * groups[f], N * ny * groups[f + 1]) of ``out``, (image, i, j) ordered.
    """
    n_img, ny = x.shape[0], yin.shape[0]
    row = np.empty((x.shape[2], x.shape[3]), x.dtype)
    for r in range(n_img * ny):
        n, i = r // ny, r % ny
        row[...] = 0.0
        for s in range(yin.shape[1]):
            c = ycoef[i, s]
            if c != 0.0:
                src = x[n, yin[i, s]]
                for w in range(row.shape[0]):
                    for k in range(row.shape[1]):
                        row[w, k] += c * src[w, k]
        for f in range(groups.shape[0] - 1):
            x0, nx = groups[f], groups[f + 1] - groups[f]
            base = n_img * ny * x0 + (n * ny + i) * nx - x0
            for j in range(x0, x0 + nx):
                o = out[base + j]
                o[:] = 0.0
                for t in range(xin.shape[1]):
                    c = xcoef[j, t]
                    if c != 0.0:
                        src = row[xin[j, t]]
                        for k in range(o.shape[0]):
                            o[k] += c * src[k]


@njit(nogil=True, cache=True, fastmath={"reassoc", "contract"})
def _scatter(lo, hi, p, ny, yout, ycoef, xout, xcoef, groups, out, c0):  # pragma: no cover
    """out[n, yout[i, s], xout[j, t], c0:] += ycoef[i, s] xcoef[j, t] p[row of (n, i, j)]
    for the output rows n * H + oy in [lo, hi) (``p`` laid out as ``_transform``'s
    ``out``): a thread owns whole output rows, so no two add into one."""
    n_img, h, nc = out.shape[0], out.shape[1], p.shape[1]
    for r in range(lo, hi):
        n, oy = r // h, r % h
        for i in range(ny):
            for s in range(yout.shape[1]):
                cy = ycoef[i, s]
                if cy == 0.0 or yout[i, s] != oy:
                    continue
                for f in range(groups.shape[0] - 1):
                    x0, nx = groups[f], groups[f + 1] - groups[f]
                    base = n_img * ny * x0 + (n * ny + i) * nx - x0
                    for j in range(x0, x0 + nx):
                        src = p[base + j]
                        for t in range(xout.shape[1]):
                            cx = xcoef[j, t]
                            if cx != 0.0:
                                coef, dst = cy * cx, out[n, oy, xout[j, t]]
                                for k in range(nc):
                                    dst[c0 + k] += coef * src[k]


def branch(x: np.ndarray, taps: np.ndarray, ay: Axis, ax: Axis, out: np.ndarray,
           filters: dict, channel: int = 0) -> None:
    """Write the dilated 3x3 conv of a batch into ``out[..., channel:channel + C]`` through
    the tilings ``ay``, ``ax``, on every core: one task per row filter makes its products
    (``products``), then one task per band of output rows adds them all up (``scatter``),
    row filters in order, so the sums do not depend on which worker ran what.

    Args:
        x: (N, H, W, Cin) contiguous batch.
        taps: (3, 3, Cin, C) weights (folded BatchNorm), tap (ky, kx) as a (Cin, C) matrix.
        ay, ax: the tilings of the rows and columns (``axis_plan``).
        out: (N, H, W, >= channel + C) contiguous; only its C channels from ``channel`` are
            written (the branch's slice of the concatenation buffer).
        filters: a cache of transformed filters for ``taps``, keyed by the filter rows.
    """
    add_filters(taps, ay, ax, filters)
    n, h = x.shape[0], x.shape[1]
    cuts = parts(ay, 2 * workers())
    made: list[np.ndarray] = [np.empty(0)] * len(cuts)

    def make(k: int, worker: int) -> None:
        made[k] = products(x, ay, ax, cuts[k], filters)

    def add_up(rows: tuple[int, int], worker: int) -> None:
        scatter(cuts, made, ay, ax, out, channel, rows)

    with task_runner() as run_tasks:
        run_tasks([partial(make, k) for k in range(len(cuts))])
        run_tasks([partial(add_up, rows) for rows in even_ranges(n * h, 2 * workers())])


def parts(ay: Axis, tasks: int) -> list[tuple[int, int]]:
    """Row-component ranges ``[c0, c1)``, each within one row filter's group, in order:
    one per row filter, each split evenly when that gives fewer than ``tasks`` (a tiling
    with three row filters would keep one of two workers idle a third of the time)."""
    groups = [(int(a), int(b)) for a, b in itertools.pairwise(ay.groups)]
    split = max(1, -(-tasks // len(groups)))
    return [(a + lo, a + hi) for a, b in groups for lo, hi in even_ranges(b - a, split)]


def add_filters(taps: np.ndarray, ay: Axis, ax: Axis, filters: dict) -> None:
    """Add to ``filters`` the transformed (Cin, C) filters of every filter pair of the
    tilings that it lacks (before tasks share the dict)."""
    keys = [(fy, fx) for fy in ay.filters for fx in ax.filters if (fy, fx) not in filters]
    if keys:
        filters.update(zip(keys, mixed(taps, keys, transpose=False), strict=True))


def products(x: np.ndarray, ay: Axis, ax: Axis, part: tuple[int, int], filters: dict
             ) -> np.ndarray:
    """The products of the row components ``part`` (``parts``: within one row filter) for
    the batch ``x``: one input transform for all column filters, then one GEMM per filter
    pair (all images together, so its M stays large).

    Returns the (rows, C) products in ``_transform``'s row order, for ``scatter``.
    ``filters`` must hold every pair (``add_filters``).
    """
    dtype, (n, _, _, cin) = x.dtype, x.shape
    y0, y1 = part
    ny, row_y = y1 - y0, ay.filters[ay.filt[y0]]
    a = scratch("winograd-in", (n * ny * ax.products, cin), dtype)
    _transform(x, ay.in_pos[y0:y1], ay.in_coef[y0:y1].astype(dtype), ax.in_pos,
               ax.in_coef.astype(dtype), ax.groups, a)
    prod = np.empty((len(a), filters[row_y, ax.filters[0]].shape[1]), dtype)
    for fx, row_x in enumerate(ax.filters):
        rows = slice(n * ny * ax.groups[fx], n * ny * ax.groups[fx + 1])
        np.matmul(a[rows], filters[row_y, row_x], out=prod[rows])
    return prod


def scatter(cuts: list[tuple[int, int]], made: list[np.ndarray], ay: Axis, ax: Axis,
            out: np.ndarray, channel: int, rows: tuple[int, int]) -> None:
    """Write ``out[n, oy, :, channel:channel + C]`` for the rows n * H + oy in ``rows``:
    zero, then the products ``made[k]`` of every part ``cuts[k]`` added in order (the
    order of the components, however they were cut)."""
    lo, hi = rows
    dtype, h = out.dtype, out.shape[1]
    c = made[0].shape[1]
    for r in range(lo, hi):  # a few rows; their channel slice is strided
        out[r // h, r % h, :, channel:channel + c] = 0.0
    for (y0, y1), prod in zip(cuts, made, strict=True):
        _scatter(lo, hi, prod, y1 - y0, ay.out_pos[y0:y1], ay.out_coef[y0:y1].astype(dtype),
                 ax.out_pos, ax.out_coef.astype(dtype), ax.groups, out, channel)


@cache
def plan(h: int, w: int, rate: int, max_tile: int = DEFAULT_TILE) -> tuple[Axis, Axis]:
    """The row and column tilings of a "same" 3x3 conv with dilation ``rate`` on an HxW map."""
    return axis_plan(h, rate, max_tile), axis_plan(w, rate, max_tile)


@cache
def saving(h: int, w: int, rate: int, max_tile: int = DEFAULT_TILE) -> float:
    """Winograd's products over direct taps' (padding skipped) on an HxW map: < 1 pays."""
    ay, ax = plan(h, w, rate, max_tile)
    return ay.products * ax.products / (direct_products(h, rate) * direct_products(w, rate))


def schedule_filters(problem: Any, taps: np.ndarray, filters: dict, schedule: Schedule
                     ) -> None:
    """Add the transformed filters that ``schedule``'s tiling of ``problem`` needs (packed
    (3, 3, Cout, Cin) ``taps``) and ``filters`` lacks (tilings share most of them)."""
    make_filters(problem, taps, filters, schedule.max_tile)


def run(problem: Any, taps: np.ndarray, filters: dict, x: np.ndarray, out: np.ndarray,
        bias: np.ndarray | None, schedule: Schedule | None = None) -> None:
    """The "winograd" variant of the CPU convolution, ``out = act(conv(x) + bias)`` in the
    problem's layout, for a problem that ``spec.winograd_supported`` accepts, on every core:
    (NCHW) the input transposed by row bands, one task per row filter for its products,
    then per band of output rows the scatter, bias, ReLU and (NCHW) the transpose back.

    Args:
        problem: the ConvProblem (its map size and rate choose the tilings).
        taps: packed (3, 3, Cout, Cin) weights.
        filters: the transformed-filter cache of these weights (``PackedWeights.winograd``).
        x, out: contiguous input and output in ``problem.layout``.
        bias: (Cout,) or None.
        schedule: the tiling and the cutting of the work into tasks (the config's keys;
            None: the defaults).
    """
    p, nchw, s = problem, problem.layout == "NCHW", schedule or Schedule()
    ay, ax = plan(p.h, p.w, p.dilation[0], s.max_tile)
    schedule_filters(p, taps, filters, s)
    count = workers() if s.threads is None else max(1, min(s.threads, workers()))
    bands = [(i, *rows) for i in range(p.n)
             for rows in even_ranges(p.h, max(1, -(-s.bands * count // p.n)))]
    x_nhwc = np.empty((p.n, p.h, p.w, p.cin), x.dtype) if nchw else x
    target = np.empty((p.n, p.h, p.w, p.cout), out.dtype) if nchw else out
    cuts = parts(ay, s.parts * count)
    order = list(range(len(cuts)))
    if s.largest_first:  # longest tasks first: the last worker to finish waits least
        order.sort(key=lambda k: cuts[k][0] - cuts[k][1])
    made: list[np.ndarray] = [np.empty(0)] * len(cuts)

    def transpose(band: tuple[int, int, int], worker: int) -> None:
        i, y0, y1 = band
        x_nhwc[i, y0:y1] = x[i, :, y0:y1].transpose(1, 2, 0)

    def make(k: int, worker: int) -> None:
        made[k] = products(x_nhwc, ay, ax, cuts[k], filters)

    def finish(band: tuple[int, int, int], worker: int) -> None:
        i, y0, y1 = band
        scatter(cuts, made, ay, ax, target, 0, (i * p.h + y0, i * p.h + y1))
        rows = target[i, y0:y1]
        if bias is not None:
            rows += bias
        if p.activation == "relu":
            np.maximum(rows, 0, out=rows)  # keeps NaN, as torch.relu
        if nchw:
            out[i, :, y0:y1] = rows.transpose(2, 0, 1)

    with task_runner(s.threads) as run_tasks:
        if nchw:
            run_tasks([partial(transpose, band) for band in bands])
        run_tasks([partial(make, k) for k in order])
        run_tasks([partial(finish, band) for band in bands])


def make_filters(problem: Any, taps: np.ndarray, filters: dict, max_tile: int = DEFAULT_TILE
                 ) -> None:
    """Add the transformed filters that ``problem``'s tilings need and ``filters`` lacks,
    each (Cin, Cout) contiguous (BLAS reads a transposed view too, but 10-15% slower at the
    small M, a few hundred rows, of these products), from the (3, 3, Cout, Cin) packed taps.
    """
    ay, ax = plan(problem.h, problem.w, problem.dilation[0], max_tile)
    keys = [(fy, fx) for fy in ay.filters for fx in ax.filters if (fy, fx) not in filters]
    if keys:
        filters.update(zip(keys, mixed(taps, keys, transpose=True), strict=True))


def filters_ready(problem: Any, filters: dict, max_tile: int = DEFAULT_TILE) -> bool:
    """Whether ``filters`` holds every transformed filter ``problem``'s tilings (of tiles up
    to ``max_tile``) need."""
    ay, ax = plan(problem.h, problem.w, problem.dilation[0], max_tile)
    return all((fy, fx) in filters for fy in ay.filters for fx in ax.filters)
