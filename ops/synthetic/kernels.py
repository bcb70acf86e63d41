"""Compiled (numba) inner loops of the synthetic scene generator.

* ``octave_sum``: a field defined everywhere on the ground, the weighted sum of
  a periodic array sampled by Keys cubic convolution (a = -0.5, C1-continuous)
  at several rotated, scaled and shifted copies. Used for the terrain and for
  the reflectance, so both are exactly defined at any (x, y).
* ``bilinear``: the DEM's truth interpolant (pixel centres at integer indices).
* ``march_rays``: the first intersection of each line of sight with the
  bilinear DEM. The sight line of image point (r, c) is the straight segment
  between its ground points at a bottom and a top height, each bilinearly
  interpolated from a coarse node grid of exact inverse-RPC results. The walk
  starts at the highest DEM value within the ray's horizontal reach (a
  dilated-max grid) and visits, top down, every DEM cell the ray's horizontal
  trace crosses (Amanatides-Woo traversal). Inside a cell the bilinear surface
  along the segment is a quadratic in the ray parameter, so the first crossing
  is solved in closed form: no step size, no missed grazing hits. Going from
  the top down finds the first surface hit, so building walls occlude what
  lies behind them.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit
from numpy.typing import NDArray

FloatArray = NDArray[np.float64]


@njit(cache=True, inline="always")
def _keys(t: float) -> float:
    t = abs(t)
    if t < 1.0:
        return (1.5 * t - 2.5) * t * t + 1.0
    if t < 2.0:
        return ((-0.5 * t + 2.5) * t - 4.0) * t + 2.0
    return 0.0


@njit(cache=True)
def _cubic_periodic(arr: FloatArray, u: float, v: float) -> float:
    """Keys cubic convolution of a periodic array whose sides are powers of two."""
    mask_r, mask_c = arr.shape[0] - 1, arr.shape[1] - 1
    fu_i, fv_i = math.floor(u), math.floor(v)
    fu, fv = u - fu_i, v - fv_i
    iu, iv = int(fu_i), int(fv_i)
    wu0, wu1, wu2, wu3 = _keys(fu + 1.0), _keys(fu), _keys(1.0 - fu), _keys(2.0 - fu)
    c0, c1, c2, c3 = (iu - 1) & mask_c, iu & mask_c, (iu + 1) & mask_c, (iu + 2) & mask_c
    total = 0.0
    for a in range(4):
        rr = (iv - 1 + a) & mask_r
        acc = wu0 * arr[rr, c0] + wu1 * arr[rr, c1] + wu2 * arr[rr, c2] + wu3 * arr[rr, c3]
        total += _keys(fv + 1.0 - a) * acc
    return total


@njit(cache=True)
def octave_sum(
    arr: FloatArray,
    x: FloatArray,
    y: FloatArray,
    cos_a: FloatArray,
    sin_a: FloatArray,
    cell_m: FloatArray,
    off_u: FloatArray,
    off_v: FloatArray,
    weight: FloatArray,
) -> FloatArray:
    """sum_k weight[k] * cubic(arr, u_k, v_k), (u_k, v_k) = rotated (x, y) / cell_m[k] + offset."""
    out = np.empty(x.shape[0])
    for i in range(x.shape[0]):
        total = 0.0
        for k in range(weight.shape[0]):
            u = (cos_a[k] * x[i] + sin_a[k] * y[i]) / cell_m[k] + off_u[k]
            v = (-sin_a[k] * x[i] + cos_a[k] * y[i]) / cell_m[k] + off_v[k]
            total += weight[k] * _cubic_periodic(arr, u, v)
        out[i] = total
    return out


@njit(cache=True)
def _bilinear_one(dem: FloatArray, fr: float, fc: float) -> float:
    n_r, n_c = dem.shape
    if not (fr >= 0.0 and fc >= 0.0 and fr <= n_r - 1 and fc <= n_c - 1):
        return math.nan
    i = min(int(fr), n_r - 2) if n_r > 1 else 0
    j = min(int(fc), n_c - 2) if n_c > 1 else 0
    dr, dc = fr - i, fc - j
    i1, j1 = min(i + 1, n_r - 1), min(j + 1, n_c - 1)
    top = dem[i, j] * (1.0 - dc) + dem[i, j1] * dc
    bottom = dem[i1, j] * (1.0 - dc) + dem[i1, j1] * dc
    return float(top * (1.0 - dr) + bottom * dr)


@njit(cache=True)
def bilinear(dem: FloatArray, frac_row: FloatArray, frac_col: FloatArray) -> FloatArray:
    """Bilinear samples of ``dem`` at fractional indices; NaN outside the pixel-centre hull."""
    out = np.empty(frac_row.shape[0])
    for i in range(frac_row.shape[0]):
        out[i] = _bilinear_one(dem, frac_row[i], frac_col[i])
    return out


@njit(cache=True)
def _node_interp(grid: FloatArray, gr: float, gc: float) -> float:
    n_r, n_c = grid.shape
    i = min(max(math.floor(gr), 0), max(n_r - 2, 0))
    j = min(max(math.floor(gc), 0), max(n_c - 2, 0))
    dr, dc = gr - i, gc - j
    i1, j1 = min(i + 1, n_r - 1), min(j + 1, n_c - 1)
    top = grid[i, j] * (1.0 - dc) + grid[i, j1] * dc
    bottom = grid[i1, j] * (1.0 - dc) + grid[i1, j1] * dc
    return float(top * (1.0 - dr) + bottom * dr)


@njit(cache=True)
def _first_root_in_cell(
    dem: FloatArray, i: int, j: int, r0: float, c0: float, ar: float, ac: float,
    h_hi: float, dh: float, s0: float, s1: float,
) -> float:
    """Smallest s in [s0, s1] where h(s) - bilinear(s) <= 0 inside cell (i, j); -1 if none.

    Along the ray, h = h_hi - dh s, row index r0 + ar s, col index c0 + ac s; the bilinear
    surface restricted to the segment is a quadratic in s, solved in closed form.
    """
    z00, z01, z10, z11 = dem[i, j], dem[i, j + 1], dem[i + 1, j], dem[i + 1, j + 1]
    p = z01 - z00
    q = z10 - z00
    w = z00 - z01 - z10 + z11
    u0 = c0 - j
    v0 = r0 - i
    a = -w * ac * ar
    b = -dh - (p * ac + q * ar + w * (u0 * ar + v0 * ac))
    c = h_hi - (z00 + p * u0 + q * v0 + w * u0 * v0)
    tol = 1e-12
    if c + s0 * (b + a * s0) <= 0.0:
        return s0
    best = -1.0
    if abs(a) < 1e-14 * (abs(b) + 1e-300):
        if b != 0.0:
            root = -c / b
            if s0 - tol <= root <= s1 + tol:
                best = root
    else:
        disc = b * b - 4.0 * a * c
        if disc >= 0.0:
            sq = math.sqrt(disc)
            qq = -0.5 * (b + sq) if b >= 0.0 else -0.5 * (b - sq)
            roots = (qq / a, c / qq if qq != 0.0 else math.inf)
            for root in roots:
                if s0 - tol <= root <= s1 + tol and (best < 0.0 or root < best):
                    best = root
    if best >= 0.0:
        return min(max(best, s0), s1)
    return -1.0


@njit(cache=True)
def march_rays(
    rows: FloatArray,
    cols: FloatArray,
    node_row0: float,
    node_col0: float,
    node_step: float,
    bottom_x: FloatArray,
    bottom_y: FloatArray,
    top_x: FloatArray,
    top_y: FloatArray,
    h_bottom: float,
    h_top: float,
    dem: FloatArray,
    dem_max: FloatArray,
    dem_min: FloatArray,
    dem_left: float,
    dem_top: float,
    dem_res: float,
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """First intersection (x, y, h) of each image point's sight line with the DEM window.

    ``dem_max``/``dem_min`` are ``dem`` dilated by at least the horizontal half-reach
    of any ray over [h_bottom, h_top] plus two cells. NaN where the ray leaves the window.
    """
    n = rows.shape[0]
    n_r, n_c = dem.shape
    out_x = np.full(n, math.nan)
    out_y = np.full(n, math.nan)
    out_h = np.full(n, math.nan)
    dh_all = h_top - h_bottom
    for k in range(n):
        gr = (rows[k] - node_row0) / node_step
        gc = (cols[k] - node_col0) / node_step
        xa = _node_interp(bottom_x, gr, gc)
        ya = _node_interp(bottom_y, gr, gc)
        dx = _node_interp(top_x, gr, gc) - xa
        dy = _node_interp(top_y, gr, gc) - ya
        # fractional DEM indices, linear in height
        fc_a = (xa - dem_left) / dem_res - 0.5
        fr_a = (dem_top - ya) / dem_res - 0.5
        dfc = dx / dem_res / dh_all
        dfr = -dy / dem_res / dh_all
        hm = 0.5 * (h_bottom + h_top)
        im = round(fr_a + dfr * (hm - h_bottom))
        jm = round(fc_a + dfc * (hm - h_bottom))
        if im < 0 or jm < 0 or im >= n_r or jm >= n_c:
            continue
        hi = min(dem_max[im, jm] + 1e-6, h_top)
        lo = max(dem_min[im, jm] - 1e-6, h_bottom)
        if not (hi > lo):
            continue
        # walk the cells crossed from height hi (s = 0) down to lo (s = 1)
        dh = hi - lo
        r0 = fr_a + dfr * (hi - h_bottom)
        c0 = fc_a + dfc * (hi - h_bottom)
        ar = -dfr * dh
        ac = -dfc * dh
        i = math.floor(r0)
        j = math.floor(c0)
        if ar < 0.0 and r0 == i:
            i -= 1
        if ac < 0.0 and c0 == j:
            j -= 1
        di = 1 if ar > 0.0 else -1
        dj = 1 if ac > 0.0 else -1
        inf = math.inf
        s_r = ((i + 1 - r0) / ar if ar > 0.0 else (i - r0) / ar) if ar != 0.0 else inf
        s_c = ((j + 1 - c0) / ac if ac > 0.0 else (j - c0) / ac) if ac != 0.0 else inf
        ds_r = 1.0 / abs(ar) if ar != 0.0 else inf
        ds_c = 1.0 / abs(ac) if ac != 0.0 else inf
        s = 0.0
        hit = -1.0
        while True:
            if i < 0 or j < 0 or i > n_r - 2 or j > n_c - 2:
                break
            s_end = min(s_r, s_c, 1.0)
            hit = _first_root_in_cell(dem, i, j, r0, c0, ar, ac, hi, dh, s, s_end)
            if hit >= 0.0 or s_end >= 1.0:
                break
            if s_r < s_c:
                i += di
                s = s_r
                s_r += ds_r
            else:
                j += dj
                s = s_c
                s_c += ds_c
        if hit < 0.0:
            continue
        h = hi - dh * hit
        t = (h - h_bottom) / dh_all
        out_x[k] = xa + dx * t
        out_y[k] = ya + dy * t
        out_h[k] = h
    return out_x, out_y, out_h
