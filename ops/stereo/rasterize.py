"""Rasterisation of triangulated points onto a map grid (the DSM's cells).

Each point falls in the cell whose footprint holds its (x, y); the
**count** band holds how many points it got and the **confidence** band
their mean matching confidence (NCC). A cell's height is the
Gaussian-weighted mean (sigma one cell, by the distance to the cell's
centre) of the points of its 3 x 3 neighbourhood that lie within
``max_fill_spread_m`` of the mean of its own points, as CARS rasterises
(radius 1, sigma one cell): with 0 to 3 points per cell, the mean of a
cell's own points carries the matcher's whole noise. The spread limit
keeps a roof's edge from being averaged with the ground beside it.
Measured on ``python -m benchmarks.stereo``'s cases, NMAD against the
truth, a cell's own points -> this: synthetic 0.239 -> 0.218 m, with
defects 0.231 -> 0.210 m, urban 0.382 -> 0.358 m; against CARS, Gizeh
1.107 -> 1.060 m, Ventoux 0.728 -> 0.704 m; std from -0.04 m (Ventoux) to
+0.07 m (urban), blunder shares within 0.07 points, Gizeh's coverage
81.7 -> 83.2 %.

Because the matching grid is rotated against the map grid and points move
with their height (slopes facing away from a view stretch its samples),
some cells get no point although their neighbours do. As CARS does with its
rasterisation radius of one cell, such an empty cell takes the mean of the
points of its 3 x 3 neighbourhood when at least ``MIN_NEIGHBOURS`` of its
8 neighbours hold points, two of them on opposite sides of it (interpolation,
not extrapolation: a cell with points on one side only, beside a roof edge
whose own points are missing, took the ground's height and made a ring of
blunders around buildings: on synthetic urban pairs the share beyond 3 m
went 4.75 -> 3.98 %, std 4.70 -> 4.05 m with this rule), and its count is
theirs: the count band holds the points *supporting* a cell, 0 only for
interpolated cells; unless the neighbours span more than
``max_fill_spread_m`` (a gap beside a roof edge is not averaged between
roof and ground). Larger holes stay nodata here.

Blunders left by matching are removed on the raster, as a point-cloud
pipeline removes them from its cloud: :func:`remove_outliers` (statistical:
far from the median of the neighbourhood) and :func:`remove_small_clusters`
(small pieces of surface cut off from the rest by height jumps).

Holes of at most ``max_hole_cells`` cells (shadows without texture, small
occlusions) whose rim lies on a plane are then filled by
:func:`fill_small_holes` (CARS fills every hole of its DSMs with its
rasterisation's ``fill_nodata``) with that plane. Holes touching the
raster's border are left alone: they may continue beyond it. Session 5
(``python -m benchmarks.stereo``'s cases run alone, against the truth, and
Gizeh against CARS 1.3.0's DSM): the holes left are not small ones. Holes of
at most 400 cells hold 0.1 and 0.2 % of the seen cells of the urban and
defects pairs and 1.5 % at Gizeh; holes of over 400 cells 32 %, 14 % and 20 %
(12.9, 3.1 and 13.2 % away from the overlap's border). Filled with their
rim's plane instead of ring-by-ring neighbour means, the same holes gave
std 0.5884 -> 0.5881 m (urban), 0.3868 -> 0.3865 m (defects), Gizeh
1.114 -> 1.107 m, NMAD 0.901 -> 0.898 m, blunders 1.71 -> 1.67 %, the
filled cells themselves 4.5 -> 4.0 % blunders (measured ones 1.5 %). Larger
holes are not supported by a planar rim (a ground rim around a building
whose roof did not match): up to 200 m² the urban std went 0.59 -> 0.77 m
(plane fill), 400 m² 2.04 m, 1600 m² 4.0 m (neighbour means). A rim
residual of 1.5 m instead of 1 m added 0.23 % of Gizeh's cells (std
1.1085 m), 0.5 m removed 1.4 % (std 1.097 m). Hole and border fills are
marked (count 0) and counted apart by the benchmark (``measured``): urban
63.8 % measured of 67.5 % covered, Gizeh 72.7 of 78.7 %; a one-cell gap
filled between points (above) keeps its neighbours' count, as CARS's
rasterisation radius counts them.
Then :func:`fill_edges` grows the surface by a few rings into cells both
views see (the first pixels along the epipolar lines at the edges of the
overlap cannot be matched), from smooth surfaces only (cells whose 9 x 9
neighbourhood spans at most a few metres): grown from any cell, the ground
beside a building ran into the roofs of the border band (the synthetic
urban pair of ``benchmarks.stereo`` had 2.89 % blunders and a std of 3.44 m
with that fill, 2.17 % and 2.70 m without it). It grows across the band only
(from a cell's inward 4-neighbours, those deeper inside the overlap),
never along it: grown along the band, the ground slid under the
unmatched roofs of buildings the border cuts, and the fill made most of
the urban pair's blunders (std 2.46 m with it, 1.68 m without; 2.12 m
grown inward from any of the 8 neighbours, which still creeps along the
band diagonally; grown inward from the 4, with the matcher's support
check, 0.68 m, see :mod:`ops.stereo.matching`).
Callers rasterise onto the tile grown by ``FILL_MARGIN_CELLS`` and keep the
core, so a tile fills exactly the cells the whole product would (up to holes
longer than the margin that cross a tile edge).

What limits the NMAD against CARS on real terrain is not the cells' noise
(session 7, Ventoux, after the planimetric coregistration of 0.5 / 1.5
cells, NMAD 0.43 m): both DSMs' roughness (height minus its Gaussian mean
over 1.5 / 3 cells) is the same, NMAD 0.063 / 0.159 m for eochain and 0.064
/ 0.135 m for CARS (Gizeh 0.122 / 0.306 against 0.156 / 0.314 m), and the
difference between them smoothed over 1, 3, 6 and 12 cells keeps an NMAD of
0.39, 0.32, 0.21 and 0.12 m: they disagree on relief 1.5 to 6 m across, the
size of the matching windows (7 x 7 blocks, the 15 x 15 smoothing of the
sub-pixel correction), not cell by cell. Accordingly the Gaussian's sigma
at 0.7 or 1.4 cells instead of 1 changed no case's NMAD by more than 0.002 m.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import cv2
import numba
import numpy as np
import scipy.ndimage as ndi
from numpy.typing import ArrayLike, NDArray

from planner.geometry.grid import GeoBox

FloatArray = NDArray[np.float64]
Float32Array = NDArray[np.float32]

#: Valid 8-neighbours needed to fill an empty cell.
MIN_NEIGHBOURS = 3
#: Sigma (cells) of the Gaussian weights of a cell's height (CARS's rasterisation: 1 cell).
GAUSSIAN_SIGMA_CELLS = 1.0
#: Cells added around a tile before rasterising, so that hole filling sees beyond its edge.
FILL_MARGIN_CELLS = 16
#: Side (cells) of the neighbourhood whose height spread decides whether a cell may grow
#: into the overlap's border band (:func:`fill_edges`).
EDGE_SOURCE_WINDOW_CELLS = 9


@dataclass(frozen=True, slots=True)
class DsmRaster:
    """Per-cell height (NaN = nodata), supporting point count and mean confidence."""

    height_m: Float32Array
    count: NDArray[np.uint16]
    confidence: Float32Array


def rasterize_points(
    geobox: GeoBox, x: ArrayLike, y: ArrayLike, h_m: ArrayLike, confidence: ArrayLike,
    max_fill_spread_m: float = math.inf,
) -> DsmRaster:
    """Height, supporting count and mean confidence of the points in each cell.

    The height is the Gaussian-weighted mean of the nearby points within
    ``max_fill_spread_m`` of the cell's own (module docstring). An empty cell is filled from its neighbours only if their heights span
    at most ``max_fill_spread_m`` (next to a roof edge, a mean of roof and
    ground would be a height that exists nowhere).
    """
    rows, cols = geobox.rowcol(x, y)
    r = np.floor(rows + 0.5)
    c = np.floor(cols + 0.5)
    h = np.asarray(h_m, dtype=np.float64)
    conf = np.asarray(confidence, dtype=np.float64)
    keep = (r >= 0) & (r < geobox.height) & (c >= 0) & (c < geobox.width) & np.isfinite(h)
    cells = (r[keep] * geobox.width + c[keep]).astype(np.int64)
    n_cells = geobox.height * geobox.width
    count = np.bincount(cells, minlength=n_cells)
    total = np.bincount(cells, weights=h[keep], minlength=n_cells)
    conf_total = np.bincount(cells, weights=np.nan_to_num(conf[keep]), minlength=n_cells)
    shape = geobox.shape
    count2: FloatArray = count.reshape(shape).astype(np.float64)
    total2: FloatArray = total.reshape(shape).astype(np.float64)
    conf2: FloatArray = conf_total.reshape(shape).astype(np.float64)
    # 3 x 3 neighbourhood sums (zero padding: outside the grid holds no point).
    n3 = _box3(count2)
    occupied3 = _box3((count2 > 0).astype(np.float64))
    fill = (count2 == 0) & (occupied3 >= MIN_NEIGHBOURS) & _between_points(count2 > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        own = np.where(count2 > 0, total2 / count2, np.nan)
    height = _gaussian_mean(own, rows[keep], cols[keep], h[keep], max_fill_spread_m)
    if math.isfinite(max_fill_spread_m):
        top = ndi.maximum_filter(np.where(count2 > 0, own, -np.inf), size=3)
        bottom = ndi.minimum_filter(np.where(count2 > 0, own, np.inf), size=3)
        fill &= top - bottom <= max_fill_spread_m
    with np.errstate(divide="ignore", invalid="ignore"):
        mean_conf = np.where(count2 > 0, conf2 / count2, np.nan)
        height[fill] = _box3(total2)[fill] / n3[fill]
        mean_conf[fill] = _box3(conf2)[fill] / n3[fill]
    support = np.where(fill, n3, count2)
    return DsmRaster(
        height.astype(np.float32),
        np.minimum(support, np.iinfo(np.uint16).max).astype(np.uint16),
        mean_conf.astype(np.float32),
    )


def _gaussian_mean(own: FloatArray, rows: FloatArray, cols: FloatArray, h: FloatArray,
                   max_spread_m: float) -> FloatArray:
    """Per cell with points: the Gaussian-weighted mean of the nearby points (module docstring).

    ``own``: the mean of each cell's own points (NaN without); ``rows``,
    ``cols``: the points' fractional grid coordinates, ``h`` their heights.
    """
    flat = np.ascontiguousarray(own, dtype=np.float64).ravel()
    num = np.zeros(flat.size)
    den = np.zeros(flat.size)
    _gaussian_sums(flat, own.shape[1], np.ascontiguousarray(rows, dtype=np.float64),
                   np.ascontiguousarray(cols, dtype=np.float64),
                   np.ascontiguousarray(h, dtype=np.float64), float(max_spread_m),
                   GAUSSIAN_SIGMA_CELLS**2, num, den)
    with np.errstate(divide="ignore", invalid="ignore"):
        out: FloatArray = np.where(np.isfinite(flat) & (den > 0), num / den, flat).reshape(
            own.shape)
    return out


@numba.njit(cache=True, nogil=True)
def _gaussian_sums(own: FloatArray, n_cols: int, rows: FloatArray, cols: FloatArray,
                   h: FloatArray, max_spread_m: float, sigma2: float, num: FloatArray,
                   den: FloatArray) -> None:  # pragma: no cover - compiled
    """Add each point's weight and weighted height to the cells of its 3 x 3 neighbourhood.

    One pass per neighbour offset, each summed apart and then added, in the
    order of the per-offset ``bincount`` sums it replaces (numpy's vectorised
    ``exp`` may differ from this one in the last bit of a weight: heights
    within 6e-14 m of numpy's on random points, before their rounding to
    float32). A point counts for a cell only within ``max_spread_m`` of the
    mean of the cell's own points (``own``; NaN: none).
    """
    n_rows = own.size // n_cols
    pass_num = np.empty(own.size)
    pass_den = np.empty(own.size)
    for dr in (-1, 0, 1):
        for dc in (-1, 0, 1):
            pass_num[:] = 0.0
            pass_den[:] = 0.0
            for k in range(rows.size):
                r = np.int64(np.floor(rows[k] + 0.5)) + dr
                c = np.int64(np.floor(cols[k] + 0.5)) + dc
                if r < 0 or r >= n_rows or c < 0 or c >= n_cols:
                    continue
                cell = r * n_cols + c
                if not abs(h[k] - own[cell]) <= max_spread_m:
                    continue
                dist2 = (rows[k] - r) ** 2 + (cols[k] - c) ** 2
                weight = np.exp(-0.5 * dist2 / sigma2)
                pass_num[cell] += weight * h[k]
                pass_den[cell] += weight
            num += pass_num
            den += pass_den


def _between_points(occupied: NDArray[np.bool_]) -> NDArray[np.bool_]:
    """Cells with occupied neighbours on opposite sides (N-S, E-W or a diagonal pair).

    Filling such a cell interpolates; a cell with neighbours on one side
    only (beside a roof edge whose own points are missing) would extend
    the surface beyond where it was measured.
    """
    p = np.pad(occupied, 1)
    h, w = occupied.shape

    def at(dr: int, dc: int) -> NDArray[np.bool_]:
        return p[1 + dr : 1 + dr + h, 1 + dc : 1 + dc + w]

    out: NDArray[np.bool_] = ((at(-1, 0) & at(1, 0)) | (at(0, -1) & at(0, 1))
                              | (at(-1, -1) & at(1, 1)) | (at(-1, 1) & at(1, -1)))
    return out


def _box3(a: FloatArray) -> FloatArray:
    """Sum over each cell's 3 x 3 neighbourhood, zero outside the array."""
    p = np.pad(a, 1)
    rows = p[:-2] + p[1:-1] + p[2:]
    return rows[:, :-2] + rows[:, 1:-1] + rows[:, 2:]


def fill_small_holes(
    height: Float32Array, max_hole_cells: int, max_rim_residual_m: float = math.inf
) -> NDArray[np.bool_]:
    """Fill NaN components of at most ``max_hole_cells`` not touching the border (in place).

    A hole is filled only where its surroundings support it: the valid
    cells around it (its rim) must lie on a plane within
    ``max_rim_residual_m`` (RMS of the residuals of a least-squares plane).
    A hole between a roof and the ground (an occlusion) has a rim on two
    levels and stays empty: interpolating it would invent a ramp. A
    supported hole takes that plane's heights. Returns the mask of filled
    cells (the caller marks them: count 0).
    """
    holes = ~np.isfinite(height)
    if max_hole_cells <= 0 or not holes.any() or holes.all():
        return np.zeros(height.shape, dtype=bool)
    labels, n = ndi.label(holes)
    sizes = np.bincount(labels.ravel(), minlength=n + 1)
    border = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    small = sizes <= max_hole_cells
    small[0] = False
    small[border] = False
    planes = _rim_planes(height, labels, small)
    small &= (planes.n_rim >= 3) & (planes.rms_m <= max_rim_residual_m)
    filled: NDArray[np.bool_] = np.asarray(small[labels], dtype=bool)
    rr, cc = np.nonzero(filled)
    hole = labels[rr, cc]
    height[rr, cc] = (planes.mean_m[hole] + planes.slope[hole, 0] * (rr - planes.row[hole])
                      + planes.slope[hole, 1] * (cc - planes.col[hole])).astype(np.float32)
    return filled


@dataclass(frozen=True, slots=True)
class RimPlanes:
    """Per hole label: the least-squares plane of its rim and how well the rim fits it.

    The plane is ``mean_m + slope[0] (r - row) + slope[1] (c - col)`` (m, cells).
    """

    row: FloatArray
    col: FloatArray
    mean_m: FloatArray
    slope: FloatArray
    rms_m: FloatArray
    n_rim: FloatArray


def _rim_planes(height: Float32Array, labels: NDArray[np.int32],
                small: NDArray[np.bool_]) -> RimPlanes:
    """The plane of each ``small`` hole's rim (the valid cells 8-adjacent to it).

    z = a + b r + c c is fitted to each rim by least squares, all holes at
    once (normal equations accumulated per hole with ``bincount``).
    """
    valid = np.isfinite(height)
    h, w = height.shape
    n_labels = small.size
    cells, owners = [], []
    flat_labels = np.pad(labels, 1)
    for dr in (-1, 0, 1):
        for dc in (-1, 0, 1):
            if dr == 0 and dc == 0:
                continue
            neighbour = flat_labels[1 + dr : 1 + dr + h, 1 + dc : 1 + dc + w]
            rim = valid & (neighbour > 0) & small[neighbour]
            cells.append(np.flatnonzero(rim))
            owners.append(neighbour[rim])
    cell = np.concatenate(cells)
    owner = np.concatenate(owners).astype(np.int64)
    pair = np.unique(owner * (h * w) + cell)
    owner, cell = pair // (h * w), pair % (h * w)
    r, c = (cell // w).astype(np.float64), (cell % w).astype(np.float64)
    z = height.ravel()[cell].astype(np.float64)

    def total(values: FloatArray) -> FloatArray:
        return np.bincount(owner, weights=values, minlength=n_labels).astype(np.float64)

    n = np.bincount(owner, minlength=n_labels).astype(np.float64)
    safe = np.maximum(n, 1.0)
    # centred coordinates: the normal equations stay well conditioned
    mean_r, mean_c, mean_z = total(r) / safe, total(c) / safe, total(z) / safe
    r = r - mean_r[owner]
    c = c - mean_c[owner]
    z = z - mean_z[owner]
    a = np.stack([np.stack([total(r * r), total(r * c)], -1),
                  np.stack([total(r * c), total(c * c)], -1)], -2)
    b = np.stack([total(r * z), total(c * z)], -1)
    a += 1e-9 * np.eye(2)
    coef: FloatArray = np.asarray(np.linalg.solve(a, b[..., None])[..., 0], np.float64)
    rss = np.maximum(total(z * z) - np.sum(coef * b, axis=-1), 0.0)
    return RimPlanes(mean_r, mean_c, mean_z, coef, np.sqrt(rss / safe), n)


def fill_edges(height: Float32Array, allowed: NDArray[np.bool_], depth: FloatArray,
               rings: int, max_source_spread_m: float = math.inf) -> NDArray[np.bool_]:
    """Grow the valid cells into ``allowed`` NaN cells by up to ``rings`` rings (in place).

    Each ring takes the mean of its valid inward 4-neighbours: those at
    least half a cell deeper inside the overlap, by ``depth`` (each cell's
    distance from the overlap's border). Only a smooth surface is grown:
    a measured cell is a source when the valid cells of its
    ``EDGE_SOURCE_WINDOW_CELLS``² neighbourhood span at most
    ``max_source_spread_m`` (beside a roof edge, ground grown into the
    border band covered the next roofs with ground heights). The surface
    is extended across the band towards the border, never along it
    (module docstring). Returns the mask of filled cells.
    """
    valid = np.isfinite(height)
    values = np.where(valid, height, 0.0).astype(np.float64)
    source = valid
    if math.isfinite(max_source_spread_m):
        w = EDGE_SOURCE_WINDOW_CELLS
        top = ndi.maximum_filter(np.where(valid, height, -np.inf), size=w)
        bottom = ndi.minimum_filter(np.where(valid, height, np.inf), size=w)
        source = valid & (top - bottom <= max_source_spread_m)
    # The rings only reach cells of ``allowed``: work on those, by flat index
    # into the arrays padded by one cell (each cell then has four neighbours).
    width = height.shape[1] + 2
    pv = np.pad(values, 1).ravel()
    pk = np.pad(source.astype(np.float64), 1).ravel()
    pd = np.pad(depth, 1, constant_values=-np.inf).ravel()
    todo = np.flatnonzero(np.pad(allowed & ~valid, 1))
    filled = np.zeros(pv.size, dtype=bool)
    for _ in range(max(0, rings)):
        total, count = _inward_sums(pv, pk, pd, todo, (-width, width, -1, 1))
        ring = count > 0
        if not ring.any():
            break
        cells = todo[ring]
        pv[cells] = total[ring] / count[ring]
        pk[cells] = 1.0
        filled[cells] = True
        todo = todo[~ring]
    inside = (slice(1, -1), slice(1, -1))
    grown: NDArray[np.bool_] = filled.reshape(-1, width)[inside]
    height[grown] = pv.reshape(-1, width)[inside][grown].astype(np.float32)
    return grown


def _inward_sums(values: FloatArray, known: FloatArray, depth: FloatArray,
                 cells: NDArray[np.intp], steps: tuple[int, ...]
                 ) -> tuple[FloatArray, FloatArray]:
    """Sums of ``values * known`` and ``known`` over each of ``cells``' inward 4-neighbours.

    The arrays are flat; ``cells`` index them and ``steps`` are the flat
    offsets of the four neighbours.

    Inward: at least half a cell deeper than the cell. Across a straight
    border that is the one neighbour towards the inside; across a diagonal
    one, the two (0.7 cells deeper). Diagonal neighbours would let the
    surface creep along the band by a cell per ring.
    """
    total = np.zeros(cells.size)
    count = np.zeros(cells.size)
    deeper = depth[cells] + 0.5
    for step in steps:
        near = cells + step
        inward = depth[near] >= deeper
        weight = known[near]
        total += np.where(inward, values[near] * weight, 0.0)
        count += np.where(inward, weight, 0.0)
    return total, count


def remove_small_clusters(height: Float32Array, min_cells: int, max_step_m: float) -> int:
    """Drop (in place) clusters of fewer than ``min_cells`` cells; return how many cells.

    Two 4-neighbouring cells belong to one cluster when their heights differ
    by at most ``max_step_m``: a cluster is a piece of surface. A blunder
    surrounded by correct heights, or a few wrong matches on their own, make
    small clusters; a roof or a slope makes large ones (the point cloud's
    small-cluster filter of CARS, on the raster: OpenCV's ``filterSpeckles``
    on heights in centimetres relative to the tile's median).
    """
    ok = np.isfinite(height)
    if min_cells <= 0 or not ok.any():
        return 0
    ref = float(np.median(height[ok]))
    cm = np.clip(np.rint((height - ref) * 100.0), -32000, 32000)
    fixed = np.ascontiguousarray(np.where(ok, cm, -32768).astype(np.int16))
    cv2.filterSpeckles(fixed, -32768, min_cells, max(1, round(max_step_m * 100)))
    dropped = ok & (fixed == -32768)
    height[dropped] = np.nan
    return int(dropped.sum())


def remove_outliers(height: Float32Array, window_cells: int, max_deviation_m: float,
                    min_neighbours: int) -> int:
    """Drop (in place) cells far from the median of their neighbourhood; return how many.

    The statistical outlier removal of a point cloud, on the raster: a cell
    whose height differs by more than ``max_deviation_m`` from the median of
    the valid cells of its ``window_cells``² neighbourhood is dropped when it
    has at least ``min_neighbours`` of them (a lone cell is left to the
    cluster filter). A step edge keeps its cells: on either side of it, the
    majority of a centred window lies on the cell's own side.
    """
    if window_cells < 3 or not np.isfinite(height).any():
        return 0
    bad = np.zeros(height.shape, np.bool_)
    n_bad = _median_outliers(np.ascontiguousarray(height), window_cells // 2,
                             height.dtype.type(max_deviation_m), min_neighbours, bad)
    height[bad] = np.nan
    return int(n_bad)


#: Relative margin (of |height| + deviation) inside which a cell's median is
#: computed exactly: far more than float32's rounding of the median and the
#: difference (a few 1e-7 of the values).
_CLEAR_MARGIN = 4e-6


@numba.njit(cache=True, nogil=True)
def _median_outliers(height: Float32Array, r: int, max_dev: Any, min_neighbours: int,
                     bad: NDArray[np.bool_]) -> int:  # pragma: no cover - compiled
    """Mark the cells farther than ``max_dev`` from the median of their window; return how many.

    The median of the ``(2r + 1)``² window's non-NaN values is the mean of
    the two middle values in sorted order (the middle of the *finite*
    count, as numpy's sort of the window would give it). Most
    cells are decided by counting: when no more values than the median's
    rank lie below the cell's height minus the deviation (less a margin),
    and likewise above, both middle values lie within it and the cell
    stays. Only the others sort their window. ``max_dev`` has the raster's
    float type: the arithmetic is numpy's on it.
    """
    h, w = height.shape
    buf = np.empty((2 * r + 1) ** 2, dtype=height.dtype)
    half = height.dtype.type(0.5)
    dev = float(max_dev)
    count = 0
    for i in range(h):
        i0, i1 = max(i - r, 0), min(i + r + 1, h)
        for j in range(w):
            c = height[i, j]
            if not np.isfinite(c):
                continue
            j0, j1 = max(j - r, 0), min(j + r + 1, w)
            inner = dev - _CLEAR_MARGIN * (abs(float(c)) + dev)
            low, high = float(c) - inner, float(c) + inner
            m = n = below = above = 0
            for ii in range(i0, i1):
                for jj in range(j0, j1):
                    v = height[ii, jj]
                    m += not np.isnan(v)
                    n += np.isfinite(v)
                    below += v < low
                    above += v > high
            if n <= min_neighbours:
                continue
            k1, k2 = max((n - 1) // 2, 0), max(n // 2, 0)
            if below <= k1 and above <= m - 1 - k2:
                continue
            m = 0  # insertion sort of the window's non-NaN values (-inf first, inf last)
            for ii in range(i0, i1):
                for jj in range(j0, j1):
                    v = height[ii, jj]
                    if np.isnan(v):
                        continue
                    k = m
                    while k > 0 and buf[k - 1] > v:
                        buf[k] = buf[k - 1]
                        k -= 1
                    buf[k] = v
                    m += 1
            if abs(c - half * (buf[k1] + buf[k2])) > max_dev:
                bad[i, j] = True
                count += 1
    return count
