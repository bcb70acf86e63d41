"""Truth-free check of a DSM: the residual parallax between two orthos made through it.

Model. The ortho of view k through a surface h shows at cell x the image
point ``P_k(x, h(x))``. If ``h = h_true + dh``, that image point sees the
ground where its line of sight meets the true surface, ``x - dh g_k``, where
``g_k`` (cells per metre) is the horizontal displacement of view k's line of
sight per metre of height (:func:`line_of_sight_shift`, from the RPC). So::

    ortho_r(x + p) = ortho_l(x)   with   p = dh (g_r - g_l) = dh v

and the height error of the surface at x follows from the measured
parallax p, with its sign: ``dh = p.v / |v|^2`` (:func:`implied_height_error`;
|v| is the base-to-height ratio over the cell size). The component of p
across v (``across_px``) does not depend on the surface: it is the pair's
epipolar residual (a pointing error between the RPCs). A right surface
leaves no parallax.

A surface displaced horizontally by s cells, ``h(x) = h_true(x - s)``, has
``dh = -s . grad h``: :func:`surface_offset` fits ``dh = dz - s_r dh/drow -
s_c dh/dcol`` by least squares over the measured nodes, which gives the
surface's vertical offset dz and its planimetric offset s against the
RPCs' geometry.

Measurement (:func:`measure_parallax`): windows centred on nodes every
``step_px`` cells; the integer shift of best normalised cross-correlation
(NaN pixels weigh nothing) within ``search_px``, a parabola through the NCC
peak on each axis, then Lucas-Kanade iterations on the normalised windows
(the right window resampled by cubic spline at the current shift), which
removes most of the parabola's pixel locking.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.ndimage as ndi
from numpy.typing import NDArray

from ops.errors import StereoError
from ops.raster.crs import lonlat_transformer
from ops.sensor.rpc import RpcModel
from planner.geometry.grid import GeoBox

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]


@dataclass(frozen=True, slots=True)
class ParallaxMap:
    """Shift (px) of the right ortho against the left at each node; NaN where unmeasured.

    ``ortho_r(row + d_row_px, col + d_col_px) = ortho_l(row, col)`` at node
    (``rows[i]``, ``cols[j]``); ``ncc`` is the correlation at the integer peak.
    """

    rows: IntArray
    cols: IntArray
    d_row_px: FloatArray
    d_col_px: FloatArray
    ncc: FloatArray

    @property
    def measured(self) -> NDArray[np.bool_]:
        return np.isfinite(self.d_row_px) & np.isfinite(self.d_col_px)


def _patches(image: FloatArray, rows: IntArray, cols: IntArray, half: int) -> FloatArray:
    """Square windows (n, 2 half + 1, 2 half + 1) centred on the nodes; NaN outside the image."""
    padded = np.pad(image, half, constant_values=np.nan)
    off = np.arange(-half, half + 1)
    r = rows[:, None, None] + half + off[None, :, None]
    c = cols[:, None, None] + half + off[None, None, :]
    patches: FloatArray = padded[r, c]
    return patches


def _weighted_ncc(a: FloatArray, b: FloatArray, min_weight: float) -> FloatArray:
    """NCC per window (axis 1, 2) over the pixels finite in both; NaN below ``min_weight``."""
    w = (np.isfinite(a) & np.isfinite(b)).astype(np.float64)
    a0, b0 = np.where(w > 0, a, 0.0), np.where(w > 0, b, 0.0)
    n = w.sum(axis=(1, 2))
    with np.errstate(divide="ignore", invalid="ignore"):
        ma, mb = a0.sum(axis=(1, 2)) / n, b0.sum(axis=(1, 2)) / n
        da = (a0 - ma[:, None, None]) * w
        db = (b0 - mb[:, None, None]) * w
        cov = (da * db).sum(axis=(1, 2))
        var = (da * da).sum(axis=(1, 2)) * (db * db).sum(axis=(1, 2))
        ncc = cov / np.sqrt(var)
    return np.where((n >= min_weight) & (var > 0), ncc, np.nan)


def _vertex(minus: FloatArray, centre: FloatArray, plus: FloatArray) -> FloatArray:
    """Offset of a parabola's vertex through three equally spaced values, in [-0.5, 0.5]."""
    curv = minus - 2.0 * centre + plus
    with np.errstate(divide="ignore", invalid="ignore"):
        off = np.where(curv < 0, 0.5 * (minus - plus) / curv, 0.0)
    clipped: FloatArray = np.clip(np.nan_to_num(off), -0.5, 0.5)
    return clipped


def measure_parallax(
    left: NDArray[np.floating],
    right: NDArray[np.floating],
    *,
    step_px: int = 8,
    window_px: int = 21,
    search_px: int = 3,
    min_ncc: float = 0.5,
    min_valid: float = 0.8,
    iterations: int = 4,
    centre_px: tuple[int, int] = (0, 0),
) -> ParallaxMap:
    """The parallax map of two co-registered images (orthos on one grid; NaN = no data).

    The integer search spans ``centre_px`` +/- ``search_px`` (rows, cols): a pair
    whose RPCs leave a constant offset between the orthos (a pointing error)
    is searched around it (:func:`global_parallax`).
    """
    a_img = np.asarray(left, np.float64)
    b_img = np.asarray(right, np.float64)
    if a_img.shape != b_img.shape or a_img.ndim != 2:
        raise StereoError(f"parallax of images {a_img.shape} and {b_img.shape}; "
                          "expected two 2-D images on one grid")
    if window_px < 5 or window_px % 2 == 0 or step_px < 1 or search_px < 1:
        raise StereoError(f"parallax window_px={window_px}, step_px={step_px}, "
                          f"search_px={search_px}; expected an odd window >= 5, step and "
                          "search >= 1")
    half = window_px // 2
    node_rows = np.arange(half, a_img.shape[0] - half, step_px, dtype=np.int64)
    node_cols = np.arange(half, a_img.shape[1] - half, step_px, dtype=np.int64)
    rr, cc = (g.ravel() for g in np.meshgrid(node_rows, node_cols, indexing="ij"))
    a = _patches(a_img, rr, cc, half)
    b_wide = _patches(b_img, rr + centre_px[0], cc + centre_px[1], half + search_px + 1)
    min_weight = min_valid * window_px**2
    span = 2 * search_px + 3
    scores = np.full((rr.size, span, span), np.nan)
    for i in range(span):
        for j in range(span):
            scores[:, i, j] = _weighted_ncc(a, b_wide[:, i : i + window_px, j : j + window_px],
                                            min_weight)
    inner = scores[:, 1:-1, 1:-1]
    flat = np.where(np.isfinite(inner), inner, -np.inf).reshape(rr.size, -1)
    best = flat.argmax(axis=1)
    bi, bj = best // (span - 2) + 1, best % (span - 2) + 1
    k = np.arange(rr.size)
    peak = scores[k, bi, bj]
    d_row = (bi - 1 - search_px + centre_px[0]
             + _vertex(scores[k, bi - 1, bj], peak, scores[k, bi + 1, bj]))
    d_col = (bj - 1 - search_px + centre_px[1]
             + _vertex(scores[k, bi, bj - 1], peak, scores[k, bi, bj + 1]))
    on_edge = (bi == 1) | (bi == span - 2) | (bj == 1) | (bj == span - 2)
    ok = np.isfinite(peak) & (peak >= min_ncc) & ~on_edge
    d_row, d_col = _refine(a_img, b_img, a, rr, cc, d_row, d_col, ok, iterations)
    shape = (node_rows.size, node_cols.size)
    keep = ok & np.isfinite(d_row) & np.isfinite(d_col)
    return ParallaxMap(node_rows, node_cols,
                       np.where(keep, d_row, np.nan).reshape(shape),
                       np.where(keep, d_col, np.nan).reshape(shape),
                       np.where(np.isfinite(peak), peak, np.nan).reshape(shape))


def global_parallax(left: NDArray[np.floating], right: NDArray[np.floating], *,
                    search_px: int = 12) -> tuple[int, int]:
    """The median parallax (rounded, px) of large windows: where to centre the fine search."""
    pmap = measure_parallax(left, right, step_px=32, window_px=63, search_px=search_px,
                            iterations=0)
    if not pmap.measured.any():
        raise StereoError(f"no parallax found within {search_px} px between the two images; "
                          "expected orthos of the same ground on one grid")
    return (round(float(np.nanmedian(pmap.d_row_px))),
            round(float(np.nanmedian(pmap.d_col_px))))


def _refine(a_img: FloatArray, b_img: FloatArray, a: FloatArray, rr: IntArray, cc: IntArray,
            d_row: FloatArray, d_col: FloatArray, ok: NDArray[np.bool_], iterations: int
            ) -> tuple[FloatArray, FloatArray]:
    """Lucas-Kanade iterations on the normalised windows from the parabola's estimate."""
    d_row, d_col = d_row.copy(), d_col.copy()
    idx = np.flatnonzero(ok)
    if idx.size == 0 or iterations == 0:
        return d_row, d_col
    half = a.shape[1] // 2
    off = np.arange(-half, half + 1, dtype=np.float64)
    valid_b = np.isfinite(b_img).astype(np.float64)
    filled = ndi.spline_filter(np.where(np.isfinite(b_img), b_img, np.nanmean(b_img)), order=3)
    a_sel = a[idx]
    w_a = np.isfinite(a_sel)
    for _ in range(iterations):
        r = rr[idx, None, None] + d_row[idx, None, None] + off[None, :, None]
        c = cc[idx, None, None] + d_col[idx, None, None] + off[None, None, :]
        r, c = np.broadcast_arrays(r, c)
        b = ndi.map_coordinates(filled, [r, c], order=3, prefilter=False, mode="nearest")
        inside = ndi.map_coordinates(valid_b, [r, c], order=1, mode="constant") > 0.999
        w = (w_a & inside).astype(np.float64)
        n = np.maximum(w.sum(axis=(1, 2)), 1.0)
        a0 = np.where(w > 0, a_sel, 0.0)
        ma, mb = (a0 * w).sum(axis=(1, 2)) / n, (b * w).sum(axis=(1, 2)) / n
        sa = np.sqrt((((a0 - ma[:, None, None]) * w) ** 2).sum(axis=(1, 2)) / n)
        sb = np.sqrt((((b - mb[:, None, None]) * w) ** 2).sum(axis=(1, 2)) / n)
        with np.errstate(divide="ignore", invalid="ignore"):
            an = (a0 - ma[:, None, None]) / sa[:, None, None]
            bn = (b - mb[:, None, None]) / sb[:, None, None]
        g_r, g_c = np.gradient(bn, axis=(1, 2))
        e = (an - bn) * w
        h_rr, h_cc, h_rc = ((g_r * g_r * w).sum(axis=(1, 2)), (g_c * g_c * w).sum(axis=(1, 2)),
                            (g_r * g_c * w).sum(axis=(1, 2)))
        b_r, b_c = (g_r * e).sum(axis=(1, 2)), (g_c * e).sum(axis=(1, 2))
        with np.errstate(divide="ignore", invalid="ignore"):
            det = h_rr * h_cc - h_rc * h_rc
            step_r = np.clip((h_cc * b_r - h_rc * b_c) / det, -0.5, 0.5)
            step_c = np.clip((h_rr * b_c - h_rc * b_r) / det, -0.5, 0.5)
        d_row[idx] += step_r
        d_col[idx] += step_c
    return d_row, d_col


def line_of_sight_shift(rpc: RpcModel, geobox: GeoBox, rows: FloatArray, cols: FloatArray,
                        h_m: FloatArray) -> tuple[FloatArray, FloatArray]:
    """(rows, cols) per metre that the line of sight of ``rpc`` moves on ``geobox`` when
    the height of the ground point at (rows, cols, h_m) rises by one metre."""
    x, y = geobox.xy(rows, cols)
    to_lonlat = lonlat_transformer(geobox.crs)
    lon, lat = to_lonlat.transform(x, y)
    img_r, img_c = rpc.project(lon, lat, h_m, check=False)
    lon_up, lat_up = rpc.localize(img_r, img_c, np.asarray(h_m) + 1.0, check=False)
    x_up, y_up = lonlat_transformer(geobox.crs, inverse=True).transform(lon_up, lat_up)
    r_up, c_up = geobox.rowcol(x_up, y_up)
    return r_up - np.asarray(rows, np.float64), c_up - np.asarray(cols, np.float64)


@dataclass(frozen=True, slots=True)
class ImpliedHeights:
    """Per node: the surface's height error (m, + = too high) and the parallax across the
    epipolar direction (px), with the parallax per metre of height used (px/m)."""

    dh_m: FloatArray
    across_px: FloatArray
    px_per_m: FloatArray


def implied_height_error(parallax: ParallaxMap, v_row_px_per_m: FloatArray,
                         v_col_px_per_m: FloatArray) -> ImpliedHeights:
    """``dh = p.v / |v|^2`` and the across component ``p.v_perp / |v|`` (module model);
    ``v`` = right minus left line-of-sight shift at each node (same shape as the map)."""
    vr = np.asarray(v_row_px_per_m, np.float64)
    vc = np.asarray(v_col_px_per_m, np.float64)
    norm = np.hypot(vr, vc)
    if not np.all(norm[np.isfinite(norm)] > 0):
        raise StereoError("implied height error with a zero base (the views' lines of sight "
                          "are parallel); expected two views of different incidence")
    dh = (parallax.d_row_px * vr + parallax.d_col_px * vc) / norm**2
    across = (parallax.d_col_px * vr - parallax.d_row_px * vc) / norm
    return ImpliedHeights(dh, across, norm)


@dataclass(frozen=True, slots=True)
class SurfaceOffset:
    """A surface's offsets against the RPCs' geometry: vertical (m) and planimetric (cells,
    + = the surface sits towards higher rows / columns), over ``n_nodes``, with the
    standard errors of the planimetric ones (flat ground leaves them undetermined)."""

    dz_m: float
    row_cells: float
    col_cells: float
    n_nodes: int
    row_se_cells: float
    col_se_cells: float


def surface_offset(dh_m: FloatArray, slope_row_m_per_cell: FloatArray,
                   slope_col_m_per_cell: FloatArray) -> SurfaceOffset:
    """Least squares ``dh = dz - s_r dh/drow - s_c dh/dcol`` over the finite nodes, with
    two passes of rejection beyond 3 NMAD of the residual (blunders)."""
    dh = np.asarray(dh_m, np.float64).ravel()
    gr = np.asarray(slope_row_m_per_cell, np.float64).ravel()
    gc = np.asarray(slope_col_m_per_cell, np.float64).ravel()
    ok = np.isfinite(dh) & np.isfinite(gr) & np.isfinite(gc)
    if ok.sum() < 3:
        raise StereoError(f"surface offset from {int(ok.sum())} nodes; expected at least 3")
    design = np.stack([np.ones_like(dh), -gr, -gc], axis=1)
    coef = np.linalg.lstsq(design[ok], dh[ok], rcond=None)[0]
    keep = ok
    for _ in range(2):
        resid = dh - design @ coef
        centre = np.median(resid[keep])
        spread = 1.4826 * np.median(np.abs(resid[keep] - centre))
        keep = ok & (np.abs(resid - centre) <= 3.0 * max(spread, 1e-9))
        coef = np.linalg.lstsq(design[keep], dh[keep], rcond=None)[0]
    resid = (dh - design @ coef)[keep]
    dof = max(int(keep.sum()) - 3, 1)
    cov = np.linalg.pinv(design[keep].T @ design[keep]) * float(resid @ resid) / dof
    return SurfaceOffset(float(coef[0]), float(coef[1]), float(coef[2]), int(keep.sum()),
                         float(np.sqrt(cov[1, 1])), float(np.sqrt(cov[2, 2])))
