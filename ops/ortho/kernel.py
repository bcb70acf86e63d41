"""The compiled per-pixel loop of the ortho: sparse-grid mapping, DEM height, resampling.

Inputs for one output tile (see :mod:`ops.ortho.orthorectify` for how they are built):

* ``U, V`` of shape (nk, nl): at the global sparse-grid nodes (row
  ``(k0 + k) * step``, col ``(l0 + l) * step`` of the output geobox), the
  DEM's fractional node coordinates (column, row; integer = DEM node).
* ``R, C`` of shape (levels, nk, nl): the exact sensor (row, col) of each node
  projected at the global height levels ``h0 + j * dh``.
* ``dem``: the DEM node heights the ``U, V`` refer to.

For an output pixel at global (gr, gc) the loop computes

1. its sparse-grid cell's values, bilinear but separable: once per output
   row the two node rows around it are blended (``_prep_row``), then each
   pixel blends two adjacent node columns with the fraction
   ``(gc mod step) / step`` (step a power of two: a shift, a mask and an
   exact multiplication, no branch). Every number depends on the
   global (gr, gc) only, never on the tile, so tiles assembled equal the
   image processed at once, bit for bit (no fastmath: no reassociation or
   FMA contraction that could differ between loop bodies);
2. ``h = bilinear(dem, u, v)`` (ellipsoidal: :class:`ops.terrain.dem.Dem` has the
   geoid folded in) by the one sampling rule of DEMs and geoids,
   :func:`ops.terrain.geoid.node_bilinear` (outside the DEM's footprint: no height,
   the output nodata), with u, v interpolated in the cell: the DEM is sampled
   exactly at every pixel (its cell edges and building steps are not
   smoothed by the sparse grid; only the smooth map projection is);
3. the sensor point: the cell-interpolated (row, col) at the two levels
   around ``h``, blended linearly in ``h`` (the RPC is nearly linear in
   height; the levels are spaced so that the error stays far below 0.01 px);
4. the resampled value: bilinear (2x2) or bicubic (4x4 Keys, a = -0.5, as
   GDAL's ``cubic``). Taps beyond the image edge are clamped to it; a point
   outside the image's extent (-0.5 .. size - 0.5) or touching a source
   nodata value gives the output nodata. Integer products are rounded
   half-up and clipped to the dtype's range.

A tap with non-zero weight inside the image but outside the window that was
read would mean the input-window declaration was wrong: the loop reports it
through ``flag`` instead of reading garbage, and the caller raises. Taps are
checked for NaN / source nodata only when the source is float or has a
nodata value (``check_taps``); integer sources without nodata take the
plain weighted sum.

Speed: each output row is mapped first into a row buffer (the mapping loop
stays small and tight), then resampled; bilinear on an integer source
without nodata has its own two passes (the taps of every band, vectorised,
then the loads and blend band by band). On a 2048 px
tile this is 1.5x faster than one fused loop (same results, bit for bit).
Two height levels (the usual plan) have their own mapping loop with fixed
level rows: the general loop's data-dependent row choice (level from the
DEM height) cost as much as the DEM sampling; splitting it off took one
thread from 30 to 17 ns per output pixel over an SRTM-like DEM (identical
output); mapping it in three passes per node column pair (vectorised cell
and fractions, the DEM's loads, vectorised sensor point) took the whole
bilinear kernel on the 8000 px scene from 0.93 to 0.65 s, the two-pass
bilinear resampling to 0.51 s (identical output). Loading a DEM cell's four
nodes once per run of pixels in it, instead of a gather per pixel, took the
mapping and the kernel 10 % less (paired runs of the same 20 tiles of that
scene, one thread; identical output); that loop is :func:`_dem_levels`, not
inlined: inlined, it added 7 s to the kernel's compile for each pixel type.
"""

from __future__ import annotations

import math
from typing import Any

import numba
import numpy as np

from ops.terrain.geoid import node_bilinear

CUBIC_A = -0.5
#: _bilinear_taps' states beyond the tap steps (0-3): off the image, off the window read.
_OFF_IMAGE = 4
_OFF_WINDOW = 5


@numba.njit(cache=True, inline="always")
def _keys(t: float) -> float:
    t = abs(t)
    if t < 1.0:
        return ((CUBIC_A + 2.0) * t - (CUBIC_A + 3.0)) * t * t + 1.0
    if t < 2.0:
        return ((CUBIC_A * t - 5.0 * CUBIC_A) * t + 8.0 * CUBIC_A) * t - 4.0 * CUBIC_A
    return 0.0


@numba.njit(cache=True, inline="always")
def _prep_row(gr: int, step: int, k0: int, U: Any, V: Any, R: Any, C: Any, rb: Any) -> None:
    """Blend the two node rows around global output row ``gr`` into ``rb``.

    ``rb`` rows: 0 = U, 1 = V, 2 + L = R[L], 2 + levels + L = C[L]; columns = nodes.
    Each value depends on (gr, node column) only, never on the tile.
    """
    kk = gr // step
    fr = (gr - kk * step) / step
    k = kk - k0
    n_levels = R.shape[0]
    for m in range(U.shape[1]):
        rb[0, m] = (1.0 - fr) * U[k, m] + fr * U[k + 1, m]
        rb[1, m] = (1.0 - fr) * V[k, m] + fr * V[k + 1, m]
        for lev in range(n_levels):
            rb[2 + lev, m] = (1.0 - fr) * R[lev, k, m] + fr * R[lev, k + 1, m]
            rb[2 + n_levels + lev, m] = (1.0 - fr) * C[lev, k, m] + fr * C[lev, k + 1, m]


@numba.njit(cache=True, inline="always")
def _dem_height(u: float, v: float, dem: Any, guarded: bool) -> float:
    """DEM height at fractional node (col u, row v): :func:`ops.terrain.geoid.node_bilinear`'s rule.

    NaN outside the DEM's footprint, so that pixel gets the output nodata.
    """
    h: float = node_bilinear(dem, v, u, guarded)
    return h


@numba.njit(cache=True, inline="always")
def _sensor_point(
    m: int, f: float, rb: Any, n_levels: int, dem: Any, guarded: bool, h0: float, inv_dh: float,
) -> tuple[float, float]:
    """Sensor (row, col) at fraction ``f`` between node columns m and m+1 of a prepared row."""
    g = 1.0 - f
    t = (_dem_height(g * rb[0, m] + f * rb[0, m + 1], g * rb[1, m] + f * rb[1, m + 1], dem,
                     guarded) - h0) * inv_dh
    # Branch-free level choice (a NaN height gives a NaN point through s).
    tc = 0.0 if math.isnan(t) else t
    a = int(min(max(tc, 0.0), n_levels - 2.0))
    s = t - a
    ra = 2 + a
    ca = 2 + n_levels + a
    r_a = g * rb[ra, m] + f * rb[ra, m + 1]
    r_b = g * rb[ra + 1, m] + f * rb[ra + 1, m + 1]
    c_a = g * rb[ca, m] + f * rb[ca, m + 1]
    c_b = g * rb[ca + 1, m] + f * rb[ca + 1, m + 1]
    return r_a + s * (r_b - r_a), c_a + s * (c_b - c_a)


@numba.njit(cache=True, inline="always")
def _sensor_point_2(
    m: int, f: float, rb: Any, dem: Any, guarded: bool, h0: float, inv_dh: float,
) -> tuple[float, float]:
    """:func:`_sensor_point` for two levels (a = 0 always): the same numbers, fixed rows.

    The data-dependent row index of the general case costs as much as the
    DEM sampling itself; two levels is the usual plan (the RPC is nearly
    linear in height).
    """
    g = 1.0 - f
    s = (_dem_height(g * rb[0, m] + f * rb[0, m + 1], g * rb[1, m] + f * rb[1, m + 1], dem,
                     guarded) - h0) * inv_dh
    r_a = g * rb[2, m] + f * rb[2, m + 1]
    r_b = g * rb[3, m] + f * rb[3, m + 1]
    c_a = g * rb[4, m] + f * rb[4, m + 1]
    c_b = g * rb[5, m] + f * rb[5, m + 1]
    return r_a + s * (r_b - r_a), c_a + s * (c_b - c_a)


@numba.njit(cache=True, inline="always")
def _segment_off_image(rb: Any, m: int, n_levels: int, img_h: int, img_w: int) -> bool:
    """Whether every pixel between node columns m and m+1 maps over a pixel off the image.

    A pixel's sensor point is a convex blend of the cell's node points at the
    levels (weights ``f``, ``1 - f`` and ``s`` in [0, 1]), so it lies in their
    bounding box; the pixel margin covers rounding.
    """
    r_lo = c_lo = math.inf
    r_hi = c_hi = -math.inf
    for lev in range(n_levels):
        for mm in (m, m + 1):
            r = rb[2 + lev, mm]
            c = rb[2 + n_levels + lev, mm]
            r_lo = min(r_lo, r)
            r_hi = max(r_hi, r)
            c_lo = min(c_lo, c)
            c_hi = max(c_hi, c)
    return r_hi < -1.5 or r_lo > img_h + 0.5 or c_hi < -1.5 or c_lo > img_w + 0.5


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _dem_levels(frac_r: Any, frac_c: Any, cell: Any, j0: int, j1: int, dem_flat: Any,
                n_cols: int, h0: float, inv_dh: float) -> None:
    """The DEM's bilinear height of pixels j0..j1-1 from their cells and fractions, as a
    fraction of the height levels' spacing (in ``frac_r``).

    A DEM cell spans many output pixels (about 50 for a 1" DEM under a 0.5 m ortho): its
    four nodes are loaded once per run of pixels in it, not gathered per pixel. Not
    inlined: compiled once, not in each pixel type's kernel.
    """
    last = -1
    d00 = d01 = d10 = d11 = 0.0
    for j in range(j0, j1):
        if cell[j] != last:
            last = cell[j]
            at = np.uint64(last)
            d00 = dem_flat[at]
            d01 = dem_flat[at + 1]
            d10 = dem_flat[at + n_cols]
            d11 = dem_flat[at + n_cols + 1]
        fr = frac_r[j]
        fc = frac_c[j]
        h = (1.0 - fr) * ((1.0 - fc) * d00 + fc * d01) + fr * ((1.0 - fc) * d10 + fc * d11)
        frac_r[j] = (h - h0) * inv_dh


@numba.njit(cache=True, inline="always")
def _segment_2_unguarded(
    ys: Any, xs: Any, j0: int, j1: int, win_c0: int, mask: int, inv_step: float, rb: Any,
    m: int, dem: Any, dem_flat: Any, h0: float, inv_dh: float, cell: Any, frac_r: Any,
    frac_c: Any,
) -> None:
    """:func:`_sensor_point_2` (unguarded DEM, >= 2 x 2 nodes) for pixels j0..j1-1 of a row.

    The same numbers in three passes over the node column pair: each pixel's
    DEM cell and fractions (``cell``, ``frac_r``, ``frac_c``; no data-dependent load, so the
    compiler vectorises it), the DEM's bilinear blend (the loads), then the
    sensor point (vectorised again). The fused loop's data-dependent loads
    kept the compiler from vectorising any of it: 30 % of the kernel's time.
    """
    n_rows, n_cols = dem.shape
    u0, u1, v0, v1 = rb[0, m], rb[0, m + 1], rb[1, m], rb[1, m + 1]
    ra0, ra1, rb0, rb1 = rb[2, m], rb[2, m + 1], rb[3, m], rb[3, m + 1]
    ca0, ca1, cb0, cb1 = rb[4, m], rb[4, m + 1], rb[5, m], rb[5, m + 1]
    r_max = n_rows - 1.0
    c_max = n_cols - 1.0
    for j in range(j0, j1):
        f = ((win_c0 + j) & mask) * inv_step
        g = 1.0 - f
        # node_bilinear's rule (unguarded): clamp to the nodes, then the cell below
        r = min(max(g * v0 + f * v1, 0.0), r_max)
        c = min(max(g * u0 + f * u1, 0.0), c_max)
        i = max(min(int(r), n_rows - 2), 0)
        k = max(min(int(c), n_cols - 2), 0)
        frac_r[j] = r - i
        frac_c[j] = c - k
        cell[j] = i * n_cols + k
    _dem_levels(frac_r, frac_c, cell, j0, j1, dem_flat, n_cols, h0, inv_dh)
    for j in range(j0, j1):
        f = ((win_c0 + j) & mask) * inv_step
        g = 1.0 - f
        s = frac_r[j]
        r_a = g * ra0 + f * ra1
        r_b = g * rb0 + f * rb1
        c_a = g * ca0 + f * ca1
        c_b = g * cb0 + f * cb1
        ys[j] = r_a + s * (r_b - r_a)
        xs[j] = c_a + s * (c_b - c_a)


@numba.njit(cache=True, inline="always")
def _map_row(
    ys: Any, xs: Any, win_c0: int, shift: int, l0: int, rb: Any, n_levels: int, dem: Any,
    guarded: bool, h0: float, inv_dh: float, img_h: int, img_w: int, cell: Any, frac_r: Any,
    frac_c: Any,
) -> None:
    """Sensor (row, col) of every pixel of a prepared output row (step = 2**shift).

    Node column by node column. With ``img_h > 0`` the pixels of a column
    pair that maps wholly off the image get NaN without sampling the DEM:
    their output is nodata either way (8 % of the pixels of the 8000 px
    scene's tiles that see the image, 10 % of the kernel's time). ``cell``,
    ``frac_r`` and ``frac_c`` are scratch rows (see :func:`_segment_2_unguarded`).
    """
    split = n_levels == 2 and not guarded and dem.shape[0] > 1 and dem.shape[1] > 1
    dem_flat = dem.ravel()
    step = 1 << shift
    mask = step - 1
    inv_step = 1.0 / step
    n = ys.shape[0]
    j = 0
    while j < n:
        gc = win_c0 + j
        m = (gc >> shift) - l0
        end = min(n, j + step - (gc & mask))
        if img_h > 0 and _segment_off_image(rb, m, n_levels, img_h, img_w):
            for jj in range(j, end):
                ys[jj] = math.nan
                xs[jj] = math.nan
        elif split:
            _segment_2_unguarded(ys, xs, j, end, win_c0, mask, inv_step, rb, m, dem, dem_flat,
                                 h0, inv_dh, cell, frac_r, frac_c)
        elif n_levels == 2:
            for jj in range(j, end):
                ys[jj], xs[jj] = _sensor_point_2(
                    m, ((win_c0 + jj) & mask) * inv_step, rb, dem, guarded, h0, inv_dh
                )
        else:
            for jj in range(j, end):
                ys[jj], xs[jj] = _sensor_point(
                    m, ((win_c0 + jj) & mask) * inv_step, rb, n_levels, dem, guarded, h0,
                    inv_dh,
                )
        j = end


@numba.njit(cache=True, inline="always")
def _bilinear_taps(
    ys: Any, xs: Any, src_r0: int, src_c0: int, img_h: int, img_w: int, src_h: int,
    src_w: int, tap: Any, state: Any,
) -> None:
    """Bilinear taps of one output row, for every band: the first of two passes.

    Leaves in ``ys``, ``xs`` the fractions (fy, fx), in ``tap`` the flat index
    (in the window read) of the top-left tap, in ``state`` bit 0 / bit 1 set
    when the next row / column is another one (not at the image's edge, where
    taps are clamped), :data:`_OFF_IMAGE` for a point outside the image's
    extent (output nodata) and :data:`_OFF_WINDOW` for taps outside the window
    read. Branch-free, so the compiler vectorises it; the loads follow in
    :func:`_bilinear_blend`. The numbers are those of one fused loop.
    """
    y_max = img_h - 0.5
    x_max = img_w - 0.5
    for j in range(ys.shape[0]):
        y = ys[j]
        x = xs[j]
        on = (-0.5 <= y) & (y <= y_max) & (-0.5 <= x) & (x <= x_max)
        y = y if on else 0.0  # NaN (mapped off the image) has no floor
        x = x if on else 0.0
        y0 = math.floor(y)
        x0 = math.floor(x)
        ys[j] = y - y0
        xs[j] = x - x0
        ty0 = min(max(y0, 0), img_h - 1) - src_r0
        ty1 = min(y0 + 1, img_h - 1) - src_r0
        tx0 = min(max(x0, 0), img_w - 1) - src_c0
        tx1 = min(x0 + 1, img_w - 1) - src_c0
        inside = (ty0 >= 0) & (ty1 < src_h) & (tx0 >= 0) & (tx1 < src_w)
        tap[j] = ty0 * src_w + tx0
        steps = (ty1 - ty0) | ((tx1 - tx0) << 1)
        state[j] = (steps if inside else _OFF_WINDOW) if on else _OFF_IMAGE


@numba.njit(cache=True, inline="always")
def _bilinear_blend(
    o: Any, s_flat: Any, src_w: int, fys: Any, fxs: Any, tap: Any, state: Any,
    out_nodata: float, is_int: bool, lo: float, hi: float,
) -> bool:
    """One band's output row from :func:`_bilinear_taps`; True when a tap fell off the window."""
    outside = False
    for j in range(o.shape[0]):
        st = state[j]
        if st >= _OFF_IMAGE:
            o[j] = out_nodata
            outside = outside or st == _OFF_WINDOW
            continue
        # unsigned indices: no negative-index wraparound code
        a = np.uint64(tap[j])
        dy = np.uint64((st & 1) * src_w)
        dx = np.uint64(st >> 1)
        fy = fys[j]
        fx = fxs[j]
        top = (1.0 - fx) * s_flat[a] + fx * s_flat[a + dx]
        bottom = (1.0 - fx) * s_flat[a + dy] + fx * s_flat[a + dy + dx]
        acc = (1.0 - fy) * top + fy * bottom
        if is_int:
            o[j] = min(max(math.floor(acc + 0.5), lo), hi)
        else:
            o[j] = acc
    return outside


@numba.njit(cache=True, parallel=True)
def sensor_loop(
    rows_out: Any, cols_out: Any, win_r0: int, win_c0: int, shift: int, k0: int, l0: int,
    U: Any, V: Any, R: Any, C: Any, dem: Any, guarded: bool, h0: float, dh: float,
) -> None:
    """The mapping alone: sensor (row, col) of every pixel of a window (step = 2**shift)."""
    n_levels = R.shape[0]
    inv_dh = 1.0 / dh
    for i in numba.prange(rows_out.shape[0]):
        rb = np.empty((2 + 2 * n_levels, U.shape[1]))
        cell = np.empty(rows_out.shape[1], dtype=np.int64)
        frac_r = np.empty(rows_out.shape[1])
        frac_c = np.empty(rows_out.shape[1])
        _prep_row(win_r0 + i, 1 << shift, k0, U, V, R, C, rb)
        _map_row(rows_out[i], cols_out[i], win_c0, shift, l0, rb, n_levels, dem, guarded, h0,
                 inv_dh, 0, 0, cell, frac_r, frac_c)


@numba.njit(cache=True, parallel=True, nogil=True)
def ortho_loop(
    out: Any, src: Any, src_r0: int, src_c0: int, img_h: int, img_w: int,
    win_r0: int, win_c0: int, shift: int, k0: int, l0: int,
    U: Any, V: Any, R: Any, C: Any, dem: Any, guarded: bool, h0: float, dh: float,
    radius: int, src_nodata: float, has_src_nodata: bool, src_may_nan: bool, out_nodata: float,
    is_int: bool, lo: float, hi: float, flag: Any,
) -> None:
    """Mapping and resampling of every pixel of a window into ``out`` (bands, rows, cols)."""
    n_bands, out_h, out_w = out.shape
    src_h, src_w = src.shape[1], src.shape[2]
    first = 0 if radius == 1 else -1
    taps = 2 * radius
    n_levels = R.shape[0]
    step = 1 << shift
    inv_dh = 1.0 / dh
    check_taps = has_src_nodata or src_may_nan
    src_flat = np.ascontiguousarray(src).reshape(n_bands, src_h * src_w)
    for i in numba.prange(out_h):
        wy = np.empty(4)
        wx = np.empty(4)
        tys = np.empty(4, dtype=np.int64)
        txs = np.empty(4, dtype=np.int64)
        rb = np.empty((2 + 2 * n_levels, U.shape[1]))
        ys = np.empty(out_w)
        xs = np.empty(out_w)
        cell = np.empty(out_w, dtype=np.int64)
        frac_r = np.empty(out_w)
        frac_c = np.empty(out_w)
        _prep_row(win_r0 + i, step, k0, U, V, R, C, rb)
        _map_row(ys, xs, win_c0, shift, l0, rb, n_levels, dem, guarded, h0, inv_dh, img_h, img_w,
                 cell, frac_r, frac_c)
        if radius == 1 and not check_taps:
            state = np.empty(out_w, dtype=np.int64)
            _bilinear_taps(ys, xs, src_r0, src_c0, img_h, img_w, src_h, src_w, cell, state)
            for b in range(n_bands):
                if _bilinear_blend(out[b, i], src_flat[b], src_w, ys, xs, cell, state,
                                   out_nodata, is_int, lo, hi):
                    flag[0] = 1
            continue
        for j in range(out_w):
            y = ys[j]
            x = xs[j]
            if not (-0.5 <= y <= img_h - 0.5 and -0.5 <= x <= img_w - 0.5):
                for b in range(n_bands):
                    out[b, i, j] = out_nodata
                continue
            y0 = math.floor(y)
            x0 = math.floor(x)
            fy = y - y0
            fx = x - x0
            if radius == 1:
                wy[0] = 1.0 - fy
                wy[1] = fy
                wx[0] = 1.0 - fx
                wx[1] = fx
            else:
                for d in range(4):
                    wy[d] = _keys(fy - (d - 1))
                    wx[d] = _keys(fx - (d - 1))
            # Tap indices, clamped to the image, then made local to the window read.
            outside = False
            for d in range(taps):
                ty = min(max(y0 + first + d, 0), img_h - 1) - src_r0
                tx = min(max(x0 + first + d, 0), img_w - 1) - src_c0
                if (wy[d] != 0.0 and (ty < 0 or ty >= src_h)) or (
                    wx[d] != 0.0 and (tx < 0 or tx >= src_w)
                ):
                    outside = True
                tys[d] = min(max(ty, 0), src_h - 1)  # zero-weight taps: any valid index
                txs[d] = min(max(tx, 0), src_w - 1)
            if outside:
                flag[0] = 1
                for b in range(n_bands):
                    out[b, i, j] = out_nodata
                continue
            for b in range(n_bands):
                acc = 0.0
                bad = False
                if check_taps:
                    # Skip zero weights: a NaN or nodata there must not leak in.
                    for dy in range(taps):
                        if wy[dy] == 0.0:
                            continue
                        row_acc = 0.0
                        for dx in range(taps):
                            if wx[dx] == 0.0:
                                continue
                            val = float(src[b, tys[dy], txs[dx]])
                            if math.isnan(val) or (has_src_nodata and val == src_nodata):
                                bad = True
                            row_acc += wx[dx] * val
                        acc += wy[dy] * row_acc
                else:
                    for dy in range(taps):
                        row_acc = 0.0
                        for dx in range(taps):
                            row_acc += wx[dx] * src[b, tys[dy], txs[dx]]
                        acc += wy[dy] * row_acc
                if bad:
                    out[b, i, j] = out_nodata
                elif is_int:
                    out[b, i, j] = min(max(math.floor(acc + 0.5), lo), hi)
                else:
                    out[b, i, j] = acc
