"""Initial heights: a coarse pass of the pair itself on the DEM, or without one on tie points.

The stereo kernel needs an initial surface for two things: to rectify the
views (resampling on it removes most of the terrain's parallax) and to bound
the disparity search of each tile (its minimum and maximum). The images
give it, as CARS does with its low-resolution first pass, on a DEM where one
is given (5. below) and otherwise (``eochain dsm`` with no ``--dem``) thus:

1. **The RPC height range**: both models are valid over ``height_off +/-
   height_scale``; the scene lies in the intersection of the two ranges
   (their union if they do not meet). A flat surface in that range (at the
   level where the views overlap most: two crops may overlap only near the
   right height) is a valid but wide prior: hundreds of metres of search.
2. **Tie points**: the pair is planned on that flat surface and SIFT ties
   are matched on its central sample (the pointing-correction sample) over
   the whole range; each tie's column disparity is a height
   (``h = h_flat + d / (px per m)``). The 2nd and 98th percentiles of these
   heights, widened by ``TIE_MARGIN_M``, bound the surface; their median is
   the flat surface. With fewer than ``MIN_TIES`` ties (an image without
   texture at its centre) the RPC range is kept: slower, never wrong.
3. **Coarse pass** (:func:`coarse_surface`): the whole overlap is matched by
   the stereo kernel itself on the flat surface, at ``COARSE_FACTOR`` times
   the pair's GSD (raw windows low-passed by a Gaussian of
   ``sqrt(F^2 - 1) / 2`` px before the resampling, against aliasing), with
   the pointing correction measured at full resolution (scaled: ties are too
   few on the coarse frame of a small crop); each coarse tile is reduced at
   once to the median of blocks of ``NODE_CELLS`` x ``NODE_CELLS`` cells
   (memory: one tile's raw windows, ``(512 F)^2`` px, and the node grid).
   Blocks with under a quarter of their cells measured are holes, filled
   from coarser averages (pull-push), and the nodes are resampled onto a
   lon/lat :class:`~ops.terrain.dem.Dem` whose edge heights hold beyond it
   (:class:`SurfaceTerrain`: the matching context past the overlap, other
   views' pairs), so rectification and each tile's disparity bounds (the
   nodes' minimum and maximum around the tile, plus the tiles'
   ``height_margin_*_m``) use it as they use a DEM.
4. **Which surface.** The coarse surface replaces the flat one only where
   the terrain tilts the disparity: its nodes' median slope, in disparity
   pixels per image pixel (slope x px per m x GSD), at least
   ``MIN_TILT_PX_PER_PX`` (the disparity changes by a pixel over 20 px, the
   scale of the matcher's windows: 7-px SGBM blocks, 9-px support, 15-px
   sub-pixel smoothing). On a tilted terrain the flat surface leaves that
   tilt in windows that assume a constant disparity, and the heights come
   out shifted along the slope. Below it the flat surface is kept, with the
   reason in its ``source``: a surface prior then adds what it only partly
   resolves (a pyramid, buildings) and residual disparities near zero, where
   the sub-pixel estimate is least accurate. Measured (``eochain dsm``
   without ``--dem``, this pass against the flat surface): Ventoux, tilt
   0.14: against CARS NMAD 0.70 -> 0.49 m, std 0.75 -> 0.63 m, coverage
   85.3 -> 87.9 %, the truth-free implied error (``benchmarks.stereo_check``'s
   functions; SRTM as the prior: 0.34 m) NMAD 0.54 -> 0.24 m, p90 0.67 -> 0.49
   m; a synthetic pair over 250 m of relief at B/H 0.45 (tilt 0.071) against
   the truth NMAD 0.079 -> 0.065 m, std 0.098 -> 0.087 m, coverage 95.6 ->
   97.8 % (its true 30 m DEM as the prior: 0.072 m). Below
   the threshold the surface lost: a pair over 200 m of relief at B/H 0.25
   (tilt 0.031) 0.122 -> 0.136 m against the truth, Gizeh (0.010) 0.83 ->
   0.86 m against CARS, the synthetic, defects and urban pairs (<= 0.011)
   by up to 0.07 m of std; it won at 0.028 (400 m of relief at B/H 0.3:
   0.139 -> 0.131 m): the threshold keeps the flat surface where the
   measures disagree. With fewer than ``MIN_SURFACE_NODES`` measured nodes
   the flat surface is kept too.
5. **With a DEM** the coarse pass runs on it instead of the flat surface
   (it rectifies the coarse views and bounds their search), and the same
   rule chooses between its surface and the DEM (kept below the threshold,
   or where the DEM does not cover the coarse tiles' context, 4x as wide in
   metres as the full pass's; the reason in its ``source``). A 30 m DEM
   with SRTM's metres of error is a worse rectification surface than the
   pair's own coarse DSM where the terrain tilts. Measured (``eochain dsm --dem``, the DEM -> this):
   Ventoux (SRTM, tilt 0.143): against CARS NMAD 0.521 -> 0.463 m, std
   0.646 -> 0.594 m, coverage 86.1 -> 89.9 %, after coregistration 0.391 ->
   0.398 m (0.389 both on the cells both cover), truth-free implied NMAD
   0.307 -> 0.211 m (p90 0.438 -> 0.454 m); the tilted synthetic pair with
   its 30 m DEM against the truth NMAD 0.067 -> 0.061 m, std 0.090 -> 0.085
   m, coverage 98.1 -> 98.0 %; Gizeh and the flat synthetic pairs keep the
   DEM (same DSM). Cost: the coarse pass, also where the DEM is then kept
   (Gizeh 3.09 -> 3.42 s, Ventoux 1.74 -> 1.68 s; CARS 80 and 77 s). The
   surface's holes and the area beyond its nodes filled from the DEM
   instead lost on Ventoux (NMAD 0.516 m, coverage 84.2 %, coregistered
   0.488 m; the SRTM lies 8.6 m below to 14 m above the nodes, 10th-90th
   percentiles), so they are filled as without a DEM.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import cv2
import numpy as np
import scipy.ndimage as ndi
from numpy.typing import ArrayLike, NDArray

from ops.errors import DemCoverageError, StereoError
from ops.raster.crs import lonlat_transformer, metres_per_degree
from ops.stereo.matching import tie_points
from ops.stereo.pair import (
    StereoConfig,
    StereoPlan,
    StereoView,
    Terrain,
    central_sample,
    compute_tile_points,
    declare_stereo_inputs,
    grid_tile_points,
    overlap_lonlat,
    plan_stereo,
    read_window_band,
)
from ops.stereo.phase_times import phase
from ops.terrain.dem import Dem
from planner.geometry.grid import TileGrid

FloatArray = NDArray[np.float64]

#: Flat surfaces tried across the RPC range for the one the views overlap most on.
OVERLAP_LEVELS = 9
#: Fewest tie points for their heights to replace the RPC range.
MIN_TIES = 30
#: Metres added below and above the tie points' height percentiles.
TIE_MARGIN_M = 30.0
#: Percentiles of the tie heights taken as the surface's bounds (outlying ties dropped).
TIE_PERCENTILES = (2.0, 98.0)
#: The coarse pass's cell, in output cells (GSDs) of the pair.
COARSE_FACTOR = 4
#: Side of the coarse pass's tiles, in coarse cells (a multiple of ``NODE_CELLS``).
COARSE_TILE_CELLS = 512
#: Side of a node of the surface, in coarse cells (the median of its block).
NODE_CELLS = 4
#: Fewest measured nodes for the coarse surface to replace the flat one.
MIN_SURFACE_NODES = 16
#: Median terrain tilt (disparity px per image px) from which the coarse surface is used.
MIN_TILT_PX_PER_PX = 0.05


@dataclass(frozen=True, slots=True)
class ConstantTerrain:
    """A flat initial surface at ``height_m``, between ``low_m`` and ``high_m`` everywhere."""

    height_m: float
    low_m: float
    high_m: float
    source: str = "RPC height range"

    def __post_init__(self) -> None:
        if not (np.isfinite([self.height_m, self.low_m, self.high_m]).all()
                and self.low_m <= self.height_m <= self.high_m):
            raise StereoError(
                f"initial terrain at {self.height_m} m in [{self.low_m}, {self.high_m}] m; "
                "expected finite heights with low <= height <= high"
            )

    def heights(self, lon: ArrayLike, lat: ArrayLike, *, strict: bool = True) -> FloatArray:
        return np.full(np.broadcast(np.asarray(lon), np.asarray(lat)).shape, self.height_m)

    def min_max(
        self, lon_min: float, lat_min: float, lon_max: float, lat_max: float
    ) -> tuple[float, float]:
        return self.low_m, self.high_m


@dataclass(frozen=True, slots=True)
class CoarseNodes:
    """The coarse pass's surface: block medians (NaN: too few cells measured) on a map grid.

    ``transform``: the nodes' corner transform (a, b, c, d, e, f) in ``crs``.
    """

    heights_m: FloatArray
    transform: tuple[float, float, float, float, float, float]
    crs: str

    def __post_init__(self) -> None:
        if self.heights_m.ndim != 2 or min(self.heights_m.shape) < 1:
            raise StereoError(f"coarse nodes of shape {self.heights_m.shape}, expected 2-D")

    @property
    def step_m(self) -> float:
        return self.transform[0]

    @property
    def n_measured(self) -> int:
        return int(np.isfinite(self.heights_m).sum())


@dataclass(frozen=True, slots=True)
class SurfaceTerrain:
    """The coarse pass's surface: a lon/lat DEM whose edge heights hold beyond its grid."""

    dem: Dem

    def __post_init__(self) -> None:
        if not self.dem.is_lonlat:
            raise StereoError(f"surface DEM {self.dem.source} in {self.dem.crs}; expected lon/lat")

    @property
    def source(self) -> str:
        return self.dem.source

    def _held(self, lon: ArrayLike, lat: ArrayLike) -> tuple[FloatArray, FloatArray]:
        """Points moved onto the grid's outermost nodes where they lie beyond them."""
        a, _, c, _, e, f = self.dem.transform
        n_rows, n_cols = self.dem.heights_m.shape
        return (np.clip(np.asarray(lon, np.float64), c + a / 2, c + a * (n_cols - 0.5)),
                np.clip(np.asarray(lat, np.float64), f + e * (n_rows - 0.5), f + e / 2))

    def heights(self, lon: ArrayLike, lat: ArrayLike, *, strict: bool = True) -> FloatArray:
        return self.dem.heights(*self._held(lon, lat), strict=strict)

    def min_max(
        self, lon_min: float, lat_min: float, lon_max: float, lat_max: float
    ) -> tuple[float, float]:
        (lo_0, lo_1), (la_0, la_1) = self._held([lon_min, lon_max], [lat_min, lat_max])
        return self.dem.min_max(float(lo_0), float(la_0), float(lo_1), float(la_1))


def rpc_terrain(left: StereoView, right: StereoView) -> ConstantTerrain:
    """The flat prior from the two RPCs' height ranges (see the module docstring)."""
    ranges = [(v.rpc.height_off - v.rpc.height_scale, v.rpc.height_off + v.rpc.height_scale)
              for v in (left, right)]
    low, high = max(r[0] for r in ranges), min(r[1] for r in ranges)
    if low > high:
        low, high = min(r[0] for r in ranges), max(r[1] for r in ranges)
    # the flat surface on which the views overlap most (crops of two
    # products may overlap only at the right height)
    levels = np.linspace(low, high, OVERLAP_LEVELS)
    seen = [overlap_lonlat(left, right, ConstantTerrain(h, low, high))[0].size for h in levels]
    middle = float(levels[int(np.argmax(seen))])
    return ConstantTerrain(middle, float(low), float(high))


def estimate_terrain(
    left: StereoView, right: StereoView, config: StereoConfig | None = None,
    dem: Dem | None = None,
) -> ConstantTerrain | SurfaceTerrain | Dem:
    """The initial surface: the coarse pass's on the prior (``dem``, else the flat tie
    surface), or that prior with the reason in its ``source`` (see above)."""
    cfg = StereoConfig() if config is None else config
    with phase("initial terrain"):
        prior: ConstantTerrain | Dem
        if dem is None:
            prior, plan = tie_terrain(left, right, cfg)
        else:
            prior, plan = dem, plan_stereo(left, right, dem, config=cfg)
        kept = "flat" if dem is None else "DEM"
        try:
            nodes = coarse_surface(plan, prior)
        except DemCoverageError as exc:
            # its tiles' matching context, in coarse cells, reaches 4x as far past the overlap
            return dataclasses.replace(prior, source=(
                f"{prior.source}; DEM kept: the coarse pass reaches beyond it ({exc})"))
        if nodes.n_measured < MIN_SURFACE_NODES:
            return dataclasses.replace(prior, source=(
                f"{prior.source}; {kept} kept: the coarse pass measured {nodes.n_measured} "
                f"nodes (< {MIN_SURFACE_NODES})"))
        tilt = terrain_tilt_px_per_px(nodes, plan)
        if not tilt >= MIN_TILT_PX_PER_PX:
            return dataclasses.replace(prior, source=(
                f"{prior.source}; {kept} kept: terrain tilt {tilt:.3f} disparity px per px "
                f"(< {MIN_TILT_PX_PER_PX})"))
        on_dem = "" if dem is None else f" on {dem.source}"
        return SurfaceTerrain(surface_dem(nodes, source=(
            f"coarse pass{on_dem}: {nodes.n_measured} nodes of {nodes.step_m:.3g} m, terrain "
            f"tilt {tilt:.3f} disparity px per px")))


def tie_terrain(left: StereoView, right: StereoView, cfg: StereoConfig
                ) -> tuple[ConstantTerrain, StereoPlan]:
    """The flat prior narrowed by tie points' heights, and the pair planned on the RPC range."""
    coarse = rpc_terrain(left, right)
    plan = plan_stereo(left, right, coarse, config=cfg)
    sample = central_sample(plan, coarse)
    if sample is None:
        return coarse, plan
    grey_l, grey_r, valid_l, valid_r, (d_lo, d_hi) = sample
    pts_l, pts_r = tie_points(grey_l, grey_r, d_lo, d_hi, valid_left=valid_l,
                              valid_right=valid_r)
    if len(pts_l) < MIN_TIES:
        return coarse, plan
    heights = coarse.height_m + (pts_l[:, 0] - pts_r[:, 0]) / plan.frame.disparity_px_per_m
    low, mid, high = np.percentile(heights, [TIE_PERCENTILES[0], 50.0, TIE_PERCENTILES[1]])
    flat = dataclasses.replace(
        coarse, height_m=float(mid), low_m=float(low) - TIE_MARGIN_M,
        high_m=float(high) + TIE_MARGIN_M, source=f"{len(pts_l)} tie points",
    )
    return flat, plan


def coarse_surface(plan: StereoPlan, prior: Terrain) -> CoarseNodes:
    """The pair matched at ``COARSE_FACTOR`` x its GSD on ``prior``, as block medians.

    ``plan``: the pair at full resolution (its GSD, CRS and pointing correction).
    """
    f = COARSE_FACTOR
    coarse = plan_stereo(plan.left, plan.right, prior, crs=plan.geobox.crs,
                         gsd_m=plan.geobox.resolution[0] * f, config=plan.config,
                         right_row_shift_px=plan.right_row_shift_px / f)
    box = coarse.geobox
    b = NODE_CELLS
    nodes = np.full((-(-box.height // b), -(-box.width // b)), np.nan)
    grid = TileGrid(box, COARSE_TILE_CELLS, COARSE_TILE_CELLS)
    sigma_px = 0.5 * math.sqrt(f * f - 1)
    for idx in grid.tiles():
        tile = grid.tile_geobox(idx)
        inputs = declare_stereo_inputs(coarse, tile, prior)
        if inputs.left_window is None or inputs.right_window is None:
            continue
        left_px, right_px = (
            cv2.GaussianBlur(read_window_band(view.path, window).astype(np.float32), (0, 0),
                             sigma_px)
            for view, window in ((coarse.left, inputs.left_window),
                                 (coarse.right, inputs.right_window))
        )
        points = compute_tile_points(coarse, inputs, left_px, right_px, prior)
        heights = grid_tile_points(coarse, tile, points, prior).height_m
        window = grid.window(idx)
        r0, c0 = window.row_off // b, window.col_off // b
        block = block_medians(heights.astype(np.float64), b)
        nodes[r0:r0 + block.shape[0], c0:c0 + block.shape[1]] = block
    a, _, x0, _, e, y1 = box.transform
    return CoarseNodes(nodes, (a * b, 0.0, x0, 0.0, e * b, y1), box.crs)


def block_medians(heights_m: FloatArray, block: int) -> FloatArray:
    """Median of each ``block`` x ``block`` cells (the last ones partial); NaN where under a
    quarter of the block's cells hold a height."""
    rows, cols = -(-heights_m.shape[0] // block), -(-heights_m.shape[1] // block)
    padded = np.full((rows * block, cols * block), np.nan)
    padded[: heights_m.shape[0], : heights_m.shape[1]] = heights_m
    cells = padded.reshape(rows, block, cols, block).transpose(0, 2, 1, 3).reshape(
        rows, cols, block * block)
    enough = np.isfinite(cells).sum(axis=2) >= max(1, block * block // 4)
    out = np.full((rows, cols), np.nan)
    out[enough] = np.nanmedian(cells[enough], axis=1)
    return out


def terrain_tilt_px_per_px(nodes: CoarseNodes, plan: StereoPlan) -> float:
    """Median slope of the measured nodes as disparity pixels per image pixel of ``plan``."""
    slope_row, slope_col = np.gradient(nodes.heights_m, nodes.step_m)
    slope = np.hypot(slope_row, slope_col)
    slope = slope[np.isfinite(slope)]
    if slope.size == 0:
        return 0.0
    return float(np.median(slope)) * plan.frame.disparity_px_per_m * plan.geobox.resolution[0]


def fill_holes(heights_m: FloatArray) -> FloatArray:
    """NaN nodes filled from coarser averages (pull-push: halve the grid until a level has
    no hole, then fill each level's holes from the one above, bilinearly)."""
    known = np.isfinite(heights_m)
    if known.all() or not known.any():
        return heights_m.copy()
    rows, cols = -(-heights_m.shape[0] // 2), -(-heights_m.shape[1] // 2)
    total = np.zeros((rows * 2, cols * 2))
    count = np.zeros((rows * 2, cols * 2))
    total[: heights_m.shape[0], : heights_m.shape[1]] = np.where(known, heights_m, 0.0)
    count[: heights_m.shape[0], : heights_m.shape[1]] = known
    sums = total.reshape(rows, 2, cols, 2).sum(axis=(1, 3))
    counts = count.reshape(rows, 2, cols, 2).sum(axis=(1, 3))
    upper = fill_holes(np.where(counts > 0, sums / np.maximum(counts, 1), np.nan))
    # node (i, j) of this level lies at (i - 0.5) / 2 on the level above
    r = np.clip((np.arange(heights_m.shape[0]) - 0.5) / 2, 0, rows - 1)
    c = np.clip((np.arange(heights_m.shape[1]) - 0.5) / 2, 0, cols - 1)
    rr, cc = np.meshgrid(r, c, indexing="ij")
    from_above = ndi.map_coordinates(upper, [rr, cc], order=1, mode="nearest")
    return np.where(known, heights_m, from_above)


def surface_dem(nodes: CoarseNodes, source: str) -> Dem:
    """The nodes, holes filled, as a DEM on a lon/lat grid over their extent (the nodes'
    spacing in metres; lon/lat nodes off the map grid take its edge heights)."""
    filled = fill_holes(nodes.heights_m)
    a, _, x0, _, e, y1 = nodes.transform
    n_rows, n_cols = nodes.heights_m.shape
    lon_min, lat_min, lon_max, lat_max = lonlat_transformer(nodes.crs).transform_bounds(
        x0, y1 + e * n_rows, x0 + a * n_cols, y1, densify_pts=21)
    m_lon, m_lat = metres_per_degree(0.5 * (lat_min + lat_max))
    d_lon, d_lat = nodes.step_m / m_lon, nodes.step_m / m_lat
    lon = lon_min + d_lon * np.arange(math.ceil((lon_max - lon_min) / d_lon) + 1)
    lat = lat_max - d_lat * np.arange(math.ceil((lat_max - lat_min) / d_lat) + 1)
    lon_grid, lat_grid = np.meshgrid(lon, lat)
    x, y = lonlat_transformer(nodes.crs, inverse=True).transform(lon_grid, lat_grid)
    rows = (np.asarray(y) - y1) / e - 0.5
    cols = (np.asarray(x) - x0) / a - 0.5
    grid = ndi.map_coordinates(filled, [rows, cols], order=1, mode="nearest")
    transform = (d_lon, 0.0, lon_min - d_lon / 2, 0.0, -d_lat, lat_max + d_lat / 2)
    return Dem.from_array(grid.astype(np.float32), transform, "EPSG:4326", source=source)

