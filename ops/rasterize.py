"""Rasterisation of triangulated points onto a map grid (the DSM's cells).

Each point falls in the cell whose footprint holds its (x, y). A cell's
height is the **mean** of its points' heights (matching already removed the
outliers; with the matching step close to the cell size a cell holds 0 to 3
points, where a median would add nothing but cost), weighted equally; the
**count** band holds how many points it got and the **confidence** band
their mean matching confidence (NCC).

Because the matching grid is rotated against the map grid and points move
with their height (slopes facing away from a view stretch its samples),
some cells get no point although their neighbours do. As CARS does with its
rasterisation radius of one cell, such an empty cell takes the mean of the
points of its 3 x 3 neighbourhood when at least ``MIN_NEIGHBOURS`` of its
8 neighbours hold points, and its count is theirs: the count band holds the
points *supporting* a cell, 0 only for interpolated cells. Larger holes
stay nodata here.

Holes of at most ``max_hole_cells`` cells (shadows without texture, small
occlusions) are then filled by :func:`fill_small_holes`, as CARS fills its
DSMs (its rasterisation's ``fill_nodata``): each hole cell takes, ring by
ring from the hole's rim inwards, the mean of its valid 8-neighbours. Holes
touching the raster's border are left alone: they may continue beyond it.
Then :func:`fill_edges` grows the surface by a few rings into cells both
views see (the first pixels along the epipolar lines at the edges of the
overlap cannot be matched).
Callers rasterise onto the tile grown by ``FILL_MARGIN_CELLS`` and keep the
core, so a tile fills exactly the cells the whole product would (up to holes
longer than the margin that cross a tile edge).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.ndimage as ndi
from numpy.typing import ArrayLike, NDArray

from planner.grid import GeoBox

FloatArray = NDArray[np.float64]
Float32Array = NDArray[np.float32]

#: Valid 8-neighbours needed to fill an empty cell.
MIN_NEIGHBOURS = 3
#: Cells added around a tile before rasterising, so that hole filling sees beyond its edge.
FILL_MARGIN_CELLS = 16


@dataclass(frozen=True, slots=True)
class DsmRaster:
    """Per-cell height (NaN = nodata), supporting point count and mean confidence."""

    height_m: Float32Array
    count: NDArray[np.uint16]
    confidence: Float32Array


def rasterize_points(
    geobox: GeoBox, x: ArrayLike, y: ArrayLike, h_m: ArrayLike, confidence: ArrayLike
) -> DsmRaster:
    """Mean height, supporting count and mean confidence of the points in each cell."""
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
    fill = (count2 == 0) & (occupied3 >= MIN_NEIGHBOURS)
    with np.errstate(divide="ignore", invalid="ignore"):
        height = np.where(count2 > 0, total2 / count2, np.nan)
        mean_conf = np.where(count2 > 0, conf2 / count2, np.nan)
        height[fill] = _box3(total2)[fill] / n3[fill]
        mean_conf[fill] = _box3(conf2)[fill] / n3[fill]
    support = np.where(fill, n3, count2)
    return DsmRaster(
        height.astype(np.float32),
        np.minimum(support, np.iinfo(np.uint16).max).astype(np.uint16),
        mean_conf.astype(np.float32),
    )


def _box3(a: FloatArray) -> FloatArray:
    """Sum over each cell's 3 x 3 neighbourhood, zero outside the array."""
    p = np.pad(a, 1)
    rows = p[:-2] + p[1:-1] + p[2:]
    return rows[:, :-2] + rows[:, 1:-1] + rows[:, 2:]


def fill_small_holes(height: Float32Array, max_hole_cells: int) -> NDArray[np.bool_]:
    """Fill NaN components of at most ``max_hole_cells`` not touching the border (in place).

    Returns the mask of filled cells.
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
    todo: NDArray[np.bool_] = np.asarray(small[labels], dtype=bool)
    filled = todo.copy()
    values = np.where(np.isfinite(height), height, 0.0).astype(np.float64)
    known = np.isfinite(height).astype(np.float64)
    while todo.any():
        total, count = _box3(values * known), _box3(known)
        ring = todo & (count > 0)
        if not ring.any():
            break
        values[ring] = total[ring] / count[ring]
        known[ring] = 1.0
        todo &= ~ring
    height[filled] = values[filled].astype(np.float32)
    return filled


def fill_edges(height: Float32Array, allowed: NDArray[np.bool_], rings: int) -> NDArray[np.bool_]:
    """Grow the valid cells into ``allowed`` NaN cells by up to ``rings`` rings (in place).

    Each ring takes the mean of its valid 8-neighbours (GDAL FillNodata's
    search distance, without smoothing). Returns the mask of filled cells.
    """
    values = np.where(np.isfinite(height), height, 0.0).astype(np.float64)
    known = np.isfinite(height).astype(np.float64)
    todo = allowed & ~np.isfinite(height)
    filled = np.zeros(height.shape, dtype=bool)
    for _ in range(max(0, rings)):
        total, count = _box3(values * known), _box3(known)
        ring = todo & (count > 0)
        if not ring.any():
            break
        values[ring] = total[ring] / count[ring]
        known[ring] = 1.0
        todo &= ~ring
        filled |= ring
    height[filled] = values[filled].astype(np.float32)
    return filled
