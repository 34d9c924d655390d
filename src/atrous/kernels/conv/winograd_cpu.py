"""Winograd tiles for ASPP's dilated 3x3 branches on the CPU: fewer multiplies than any
direct convolution, padded taps still skipped.

A "same" 3x3 conv with dilation d splits, along each axis, into d independent lines (the
positions congruent mod d) of a plain 3-tap correlation with zero padding. On such a line
of n outputs a direct conv does ``3n - 2`` products (the two end outputs lose a tap to the
padding); Winograd's minimal filtering F(m, 3) computes m outputs with ``m + 2``. So each
line is tiled (by dynamic programming) with F(3, 3), F(2, 3) and direct single outputs,
whichever needs the fewest products, and the 2-D work is the product of the two axes'
tilings. On ASPP's maps (33x33 at rates 6/12, 65x65 at 12/24) this cuts a branch's
products 1.3x to 2.3x below tap skipping alone; at the largest rates the lines hold one or
two outputs and the tiling falls back to direct taps, costing nothing.

Every 1-D tile is a set of components: a filter row (a linear combination of the 3 taps),
an input combination (B^T row) and an output combination (A^T column). In 2-D a component
pair (y, x) multiplies the 2-D input combination by the 2-D filter ``row_y (x) row_x``
applied to the kernel; components with the same filter pair across the whole image form
one GEMM ``(rows, Cin) @ (Cin, C)``. A Numba kernel builds the transformed inputs, NumPy's
BLAS multiplies, and a second kernel scatters the products into the branch's slice of the
concatenation buffer. Transformed filters are cached with the prepared weights.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any

import numpy as np
from numba import njit

#: Interpolation points of F(m, 3) (plus infinity): small, exact in binary, well conditioned.
POINTS = {2: (0.0, 1.0, -1.0), 3: (0.0, 1.0, -1.0, 0.5)}


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
    """

    filters: tuple[tuple[float, float, float], ...]
    filt: np.ndarray
    in_pos: np.ndarray
    in_coef: np.ndarray
    out_pos: np.ndarray
    out_coef: np.ndarray

    @property
    def products(self) -> int:
        return len(self.filt)


def _tile_cost(n: int, start: int, m: int) -> int:
    """Products of a tile of m outputs from line index ``start`` (line of n outputs)."""
    if m == 1:
        return 1 + (start > 0) + (start < n - 1)
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
            at, g, bt = toom_cook(m)
            for j in range(m + 2):
                ins = [(q[0] + (b - 1) * rate, bt[j, b]) for b in range(m + 2)
                       if bt[j, b] != 0 and 0 <= q[0] + (b - 1) * rate < length]
                outs = [(q[t], at[t, j]) for t in range(m) if at[t, j] != 0]
                if ins:
                    comps.append((tuple(g[j]), ins, outs))
    return _pack_axis(comps)


def _pack_axis(comps: list[tuple[tuple[float, ...], list, list]]) -> Axis:
    """Canonical filter rows (scale moved into the input coefficients), padded arrays."""
    filters: dict[tuple[float, ...], int] = {}
    filt, ins_all, outs_all = [], [], []
    for row, ins, outs in comps:
        lead = next(v for v in row if v != 0)
        key = tuple(float(round(v / lead, 12)) for v in row)
        filt.append(filters.setdefault(key, len(filters)))
        ins_all.append([(p, c * lead) for p, c in ins])
        outs_all.append(outs)

    def padded(items: list[list[tuple[int, float]]]) -> tuple[np.ndarray, np.ndarray]:
        width = max(len(it) for it in items)
        pos, coef = np.zeros((len(items), width), np.int64), np.zeros((len(items), width))
        for c, it in enumerate(items):
            for s, (p, v) in enumerate(it):
                pos[c, s], coef[c, s] = p, v
        return pos, coef

    in_pos, in_coef = padded(ins_all)
    out_pos, out_coef = padded(outs_all)
    return Axis(tuple(filters), np.array(filt), in_pos, in_coef, out_pos, out_coef)


def direct_products(length: int, rate: int) -> int:
    """Per-axis products of direct taps with padding skipped (``3n - 2`` per line)."""
    return axis_plan(length, rate, 1).products


def transformed_filter(taps: np.ndarray, fy: tuple[float, ...], fx: tuple[float, ...]
                       ) -> np.ndarray:
    """``sum_{ky,kx} fy[ky] fx[kx] taps[ky, kx]``: (Cin, C) from (3, 3, Cin, C) taps."""
    weights = np.outer(fy, fx).astype(taps.dtype)
    return np.tensordot(weights, taps, axes=([0, 1], [0, 1]))


@njit(nogil=True, cache=True, fastmath={"reassoc", "contract"})
def _transform_rows(lo, hi, x, ypos, ycoef, out):  # pragma: no cover - jitted
    """out[n, i] = sum_s ycoef[i, s] x[n, ypos[i, s]] for n * ny + i in [lo, hi): the row
    half of the input transform."""
    ny = out.shape[1]
    for r in range(lo, hi):
        n, i = r // ny, r % ny
        o = out[n, i]
        o[...] = 0.0
        for s in range(ypos.shape[1]):
            c = ycoef[i, s]
            if c != 0.0:
                src = x[n, ypos[i, s]]
                for w in range(o.shape[0]):
                    for k in range(o.shape[1]):
                        o[w, k] += c * src[w, k]


@njit(nogil=True, cache=True, fastmath={"reassoc", "contract"})
def _transform_cols(lo, hi, t, xpos, xcoef, out):  # pragma: no cover - jitted
    """out[n, i, j] = sum_t xcoef[j, t] t[n, i, xpos[j, t]] for n * ny + i in [lo, hi): the
    column half, from rows of ``t`` that stay in cache while their columns are combined."""
    ny, nx = out.shape[1], out.shape[2]
    for r in range(lo, hi):
        n, i = r // ny, r % ny
        for j in range(nx):
            o = out[n, i, j]
            o[:] = 0.0
            for s in range(xpos.shape[1]):
                c = xcoef[j, s]
                if c != 0.0:
                    src = t[n, i, xpos[j, s]]
                    for k in range(o.shape[0]):
                        o[k] += c * src[k]


@njit(nogil=True, cache=True, fastmath={"reassoc", "contract"})
def _scatter_outputs(lo, hi, p, ypos, ycoef, xpos, xcoef, out):  # pragma: no cover - jitted
    """out[n, ypos[i, s], xpos[j, t]] += ycoef[i, s] xcoef[j, t] p[n, i, j] for the output
    rows n * H + oy in [lo, hi): a thread owns whole output rows, so no two add into one."""
    ny, nx = p.shape[1], p.shape[2]
    h = out.shape[1]
    for r in range(lo, hi):
        n, oy = r // h, r % h
        for i in range(ny):
            for s in range(ypos.shape[1]):
                cy = ycoef[i, s]
                if cy == 0.0 or ypos[i, s] != oy:
                    continue
                for j in range(nx):
                    for t in range(xpos.shape[1]):
                        cx = xcoef[j, t]
                        if cx != 0.0:
                            coef = cy * cx
                            dst = out[n, oy, xpos[j, t]]
                            src = p[n, i, j]
                            for k in range(dst.shape[0]):
                                dst[k] += coef * src[k]


def _serial(kernel: Callable[..., None], total: int, *args: Any) -> None:
    """``kernel(lo, hi, *args)`` over [0, total), on this thread.

    Deliberately serial. Run in Numba's OpenMP pool, whose workers spin after every parallel
    region, the transforms fought BLAS's threads (which run the GEMMs in between) for the
    cores and a 2-core ASPP became 8x slower; on Python threads (the kernels release the
    GIL) they still lost to BLAS's spinning workers. Serial, they cost 10-15% of a branch
    at batch 1 and leave the cores to the GEMMs. The (lo, hi) range keeps the kernels ready
    for a pool that sleeps when idle.
    """
    kernel(0, total, *args)


def _select(axis: Axis, f: int) -> tuple[np.ndarray, ...]:
    keep = axis.filt == f
    return (axis.in_pos[keep], axis.in_coef[keep], axis.out_pos[keep], axis.out_coef[keep])


def branch(x: np.ndarray, taps: np.ndarray, ay: Axis, ax: Axis, target: np.ndarray,
           filters: dict) -> None:
    """Write the dilated 3x3 conv of a batch into ``target`` through the tilings ``ay``, ``ax``.

    All images go through each GEMM together, so its M (components x images) stays large.

    Args:
        x: (N, H, W, Cin) contiguous batch.
        taps: (3, 3, Cin, C) weights (folded BatchNorm), tap (ky, kx) as a (Cin, C) matrix.
        ay, ax: the tilings of the rows and columns (``axis_plan``).
        target: (N, H, W, C) view (the branch's slice of the concatenation buffer), written.
        filters: a cache of transformed filters for ``taps``, keyed by the filter rows.
    """
    dtype, (n, _, w, cin) = x.dtype, x.shape
    acc = np.zeros(target.shape, dtype)  # contiguous, so the scatter vectorises
    for fy, row_y in enumerate(ay.filters):
        yin, ycin, yout, ycout = _select(ay, fy)
        rows = np.empty((n, len(yin), w, cin), dtype)
        _serial(_transform_rows, n * len(yin), x, yin, ycin.astype(dtype), rows)
        for fx, row_x in enumerate(ax.filters):
            xin, xcin, xout, xcout = _select(ax, fx)
            key = (row_y, row_x)
            if key not in filters:
                filters[key] = np.ascontiguousarray(transformed_filter(taps, row_y, row_x))
            a = np.empty((n, len(yin), len(xin), cin), dtype)
            _serial(_transform_cols, n * len(yin), rows, xin, xcin.astype(dtype), a)
            prod = (a.reshape(-1, cin) @ filters[key]).reshape(n, len(yin), len(xin), -1)
            _serial(_scatter_outputs, n * acc.shape[1], prod, yout, ycout.astype(dtype),
                      xout, xcout.astype(dtype), acc)
    target[...] = acc


@cache
def plan(h: int, w: int, rate: int, max_tile: int = 3) -> tuple[Axis, Axis]:
    """The row and column tilings of a "same" 3x3 conv with dilation ``rate`` on an HxW map."""
    return axis_plan(h, rate, max_tile), axis_plan(w, rate, max_tile)


def saving(h: int, w: int, rate: int, max_tile: int = 3) -> float:
    """Winograd's products over direct taps' (padding skipped) on an HxW map: < 1 pays."""
    ay, ax = plan(h, w, rate, max_tile)
    return ay.products * ax.products / (direct_products(h, rate) * direct_products(w, rate))


def run(problem: Any, taps: np.ndarray, filters: dict, x: np.ndarray, out: np.ndarray) -> None:
    """The "winograd" variant of the CPU convolution: ``out = conv(x)`` without bias, for a
    problem that ``spec.winograd_supported`` accepts, both arrays NHWC and contiguous.

    Args:
        problem: the ConvProblem (its map size and rate choose the tilings).
        taps: packed (3, 3, Cout, Cin) weights.
        filters: the transformed-filter cache of these weights (``PackedWeights.winograd``).
    """
    ay, ax = plan(problem.h, problem.w, problem.dilation[0])
    make_filters(problem, taps, filters)
    branch(x, taps.transpose(0, 1, 3, 2), ay, ax, out, filters)


def make_filters(problem: Any, taps: np.ndarray, filters: dict) -> None:
    """Add the transformed filters that ``problem``'s tilings need and ``filters`` lacks:
    all in one product over the (9, Cout * Cin) packed taps."""
    ay, ax = plan(problem.h, problem.w, problem.dilation[0])
    keys = [(fy, fx) for fy in ay.filters for fx in ax.filters if (fy, fx) not in filters]
    if keys:
        mix = np.array([np.outer(fy, fx).ravel() for fy, fx in keys], taps.dtype)
        made = (mix @ taps.reshape(9, -1)).reshape(len(keys), *taps.shape[2:])
        for key, f in zip(keys, made, strict=True):
            filters[key] = f.T  # (Cin, Cout): a transposed view that BLAS reads as is
