"""Compiled (numba) inner loops of the synthetic scene generator.

* ``octave_sum``: a field defined everywhere on the ground, the weighted sum of
  a periodic array sampled by Keys cubic convolution (a = -0.5, C1-continuous)
  at several rotated, scaled and shifted copies. Used for the terrain and for
  the reflectance, so both are exactly defined at any (x, y).
* ``bilinear``: the DEM's truth interpolant (pixel centres at integer indices).
* ``march_rays``: the first intersection of each line of sight with the
  bilinear DEM. The sight line of image point (r, c) is the straight segment
  between its ground points at a bottom and a top height, each bilinearly
  interpolated from a coarse node grid of exact inverse-RPC results. The march
  starts at the highest DEM value within the ray's horizontal reach (a
  dilated-max grid), steps down by half a DEM cell of horizontal travel until
  the ray is at or below the surface, then refines the bracket with the
  Illinois (modified regula falsi) method to 1e-6 m. Stepping from the top
  down finds the first surface hit, so building walls occlude what lies
  behind them.
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
    n_r, n_c = arr.shape
    iu, iv = math.floor(u), math.floor(v)
    fu, fv = u - iu, v - iv
    wu = (_keys(fu + 1.0), _keys(fu), _keys(1.0 - fu), _keys(2.0 - fu))
    wv = (_keys(fv + 1.0), _keys(fv), _keys(1.0 - fv), _keys(2.0 - fv))
    total = 0.0
    for a in range(4):
        rr = (iv - 1 + a) % n_r
        acc = 0.0
        for b in range(4):
            acc += wu[b] * arr[rr, (iu - 1 + b) % n_c]
        total += wv[a] * acc
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
    max_step_m: float,
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """First intersection (x, y, h) of each image point's sight line with the DEM window.

    ``dem_max``/``dem_min`` are ``dem`` dilated by at least the horizontal half-reach
    of any ray over [h_bottom, h_top] plus two cells. NaN where the ray leaves the window.
    """
    n = rows.shape[0]
    out_x = np.full(n, math.nan)
    out_y = np.full(n, math.nan)
    out_h = np.full(n, math.nan)
    dh = h_top - h_bottom
    for i in range(n):
        gr = (rows[i] - node_row0) / node_step
        gc = (cols[i] - node_col0) / node_step
        xa = _node_interp(bottom_x, gr, gc)
        ya = _node_interp(bottom_y, gr, gc)
        dx = _node_interp(top_x, gr, gc) - xa
        dy = _node_interp(top_y, gr, gc) - ya
        # fractional DEM indices at height h: linear in h
        fc_a = (xa - dem_left) / dem_res - 0.5
        fr_a = (dem_top - ya) / dem_res - 0.5
        dfc = dx / dem_res / dh
        dfr = -dy / dem_res / dh
        hm = 0.5 * (h_bottom + h_top)
        im = round(fr_a + dfr * (hm - h_bottom))
        jm = round(fc_a + dfc * (hm - h_bottom))
        if im < 0 or jm < 0 or im >= dem.shape[0] or jm >= dem.shape[1]:
            continue
        hi = min(dem_max[im, jm] + 1e-6, h_top)
        lo = max(dem_min[im, jm] - 1e-6, h_bottom)
        if not (hi > lo):
            continue
        reach = math.sqrt(dfc * dfc + dfr * dfr)  # DEM cells per metre of height
        step = max_step_m if reach * max_step_m <= 0.5 else 0.5 / reach
        h = hi
        f = h - _bilinear_one(dem, fr_a + dfr * (h - h_bottom), fc_a + dfc * (h - h_bottom))
        if not f > 0.0:
            continue
        found = False
        a = lo
        fa = 0.0
        while True:
            hn = max(h - step, lo)
            fn = hn - _bilinear_one(
                dem, fr_a + dfr * (hn - h_bottom), fc_a + dfc * (hn - h_bottom)
            )
            if math.isnan(fn):
                break
            if fn <= 0.0:
                a, fa, found = hn, fn, True
                break
            if hn <= lo:
                break
            h, f = hn, fn
        if not found:
            continue
        # Illinois on [a, h]: fa <= 0 < f
        b, fb = h, f
        side = 0
        m = a
        for _ in range(100):
            if b - a < 1e-6 or fa == 0.0:
                m = a if fa == 0.0 else m
                break
            m = (a * fb - b * fa) / (fb - fa)
            fm = m - _bilinear_one(
                dem, fr_a + dfr * (m - h_bottom), fc_a + dfc * (m - h_bottom)
            )
            if math.isnan(fm):
                break
            if fm > 0.0:
                b, fb = m, fm
                if side == 1:
                    fa *= 0.5
                side = 1
            else:
                a, fa = m, fm
                if side == -1:
                    fb *= 0.5
                side = -1
            if abs(fm) < 1e-9:
                break
        t = (m - h_bottom) / dh
        out_x[i] = xa + dx * t
        out_y[i] = ya + dy * t
        out_h[i] = m
    return out_x, out_y, out_h
