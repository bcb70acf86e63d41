"""The stereo operation: a digital surface model from two RPC images, tile by tile.

Method (the choice and why)
---------------------------
1. **Rectification in ground geometry** (:mod:`ops.stereo.epipolar`): both images
   are resampled (bicubic) onto one rotated map grid on the initial DEM,
   whose columns follow the epipolar direction, so that matches differ only
   by a column disparity proportional to the height above the DEM. This is
   the local epipolar resampling of CARS and s2p (sample the left image,
   localise at two heights, project into the right one) made global: the
   grid depends on the pair only, so a tile's rectified images are exact
   sub-windows of the whole product's and tiles assemble into the whole.
   Resampling on the DEM also removes most of the terrain's parallax, which
   keeps the disparity search short and the two images alike.
2. **Pointing correction**: the two RPCs disagree by a fraction of a pixel
   to a few pixels across the epipolar lines (0.5 px at Gizeh, 4.8 px at
   Ventoux). SIFT ties on a central sample of the rectified pair measure
   that row offset once per pair; the right image is then sampled that many
   rows further (s2p's pointing correction, de Franchis et al. 2014).
3. **Semi-global matching** (:mod:`ops.stereo.matching`): OpenCV's ``StereoSGBM``
   (Hirschmüller 2008, 5 paths in one pass: a row of costs in memory, not
   the cost volume) over the tile's disparity range, derived from the
   DEM's minimum and maximum around the tile plus ``height_margin_*_m``;
   uniqueness, a true left-right check (a second pass, right against left),
   speckle filtering, a texture mask and an NCC confidence (matches below
   0.5 dropped) and a support check (a match whose 9 x 9 neighbourhood
   lost over 30 % of its matches to these filters is dropped too); at a
   disparity discontinuity (a 5 x 5 neighbourhood spanning over 4 px: a
   roof's edge) a match needs an NCC of 0.8. SGM is
   the matcher of CARS, s2p and most production
   pipelines. Its 8-bit input is rounded after a local contrast stretch
   (low-contrast ground keeps its texture). Sub-pixel: SGBM's disparities
   on the right view shifted by thirds of a pixel are averaged, then the
   NCC peak's correction, averaged over 15 x 15
   pixels, removes the SGBM parabola's bias towards whole pixels without
   the NCC peak's pixel noise (:func:`ops.stereo.matching.match`, measured on
   exactly shifted real textures). Matches far from the median of their
   3 x 3 neighbourhood are dropped.
4. **Triangulation** (:mod:`ops.stereo.triangulation`): each match goes back to
   its exact raw-image coordinates (kept from step 1) and the two RPC lines
   of sight are intersected in the least-squares sense; the ray distance
   rejects matches that break the epipolar geometry.
5. **Rasterisation and blunder removal** (:mod:`ops.stereo.rasterize`): mean
   height of the points per map cell, supporting-point count and mean
   confidence bands. Then the point cloud's outlier filters, on the raster:
   cells far from the median of their 5 x 5 neighbourhood
   (``outlier_*``), and small clusters (pieces of surface of fewer than
   ``cluster_min_cells`` cells, neighbours joined when within
   ``cluster_step_m``) are removed. Holes are filled only where their
   surroundings support it: one-cell gaps whose neighbours span at most
   ``gap_fill_spread_m``, holes up to ``max_hole_area_m2`` whose rim lies
   on a plane (``fill_rim_residual_m``), and ``edge_fill_cells`` rings
   along the overlap's border (the first pixels of the epipolar lines
   cannot be matched), grown across that band only (never along it), from
   smooth surfaces only (a 9 x 9
   neighbourhood spanning at most ``edge_fill_source_spread_m``); count 0
   marks interpolated cells. Heights are above
   the WGS84 ellipsoid, or above a geoid on request.

The initial DEM's relief can hurt (session 7, measured in process, not
acted on: the DEM reaches this kernel from its callers). SRTM sees the Great
Pyramid as a bump of 125 m (its apex is at 204 m) on ground at 54 m;
rectified on it, Gizeh's DSM covers 78.8 % (NMAD 0.885 m, 1.65 % beyond 3 m
of CARS) and the pyramid's east / west faces 86 / 70 % (5.4 / 0.6 % beyond 3
m of their planes, ``benchmarks.stereo``'s ``pyramid_faces``); rectified on a
flat surface at 54 m instead, 82.2 % (0.863 m, 0.78 %), the faces 100 / 100 %
(0.1 / 0.0 %), the south face 96 -> 99 % (3.2 -> 1.8 %); on SRTM smoothed
by a Gaussian of 2 posts, 82.2 % (0.857 m, 1.11 %), faces 100 / 100 %; the
north face stays empty (3-6 %) in every case. Ventoux (1 km of relief) on SRTM
smoothed by 1 / 2 posts: against CARS (which starts from the raw SRTM there)
NMAD 0.592 -> 0.689 / 0.712 m before and 0.428 -> 0.399 / 0.395 m after the
planimetric coregistration, coverage 86.1 -> 84.4 / 85.1 %. The synthetic
cases' 30 m DEM (the truth without buildings) smoothed by 2 posts: NMAD
0.114 -> 0.133 m (clean), 0.119 -> 0.143 m (defects), 0.108 -> 0.079 m
(urban, whose std rose 0.41 -> 0.56 m), coverage within 1.4 points. A DEM that
resolves part of a steep object, not all of it, leaves residual relief
whose disparity bends sharply where SGM expects steps or ramps; smoothing
the prior (or a flat one where the relief is small) looked like the lead to
follow, but the truth-free check (``benchmarks.stereo_check``'s functions, NMAD
/ p90 of the implied height error on the nodes eochain and CARS both cover)
rejects it at Ventoux: rectified on SRTM smoothed by a Gaussian of 1 / 2 posts,
0.384 -> 0.557 / 0.590 m and p90 0.57 -> 0.66 / 0.73 m (the 95 % interval of
the paired change, 1000 bootstraps of ~390 nodes, +0.10 to +0.23 / +0.13 to
+0.30 m): closer agreement with CARS there did not mean a truer surface.

Ground-geometry matching at several height hypotheses (orthos of both views
compared plane by plane) was the alternative: it needs one resampling per
hypothesis where rectification needs one per view, and its cost volume has
no SGM regularisation; rectify-then-SGM is what the measured pipelines do.

Tiling contract: for an output tile, :func:`declare_stereo_inputs` computes
(from the DEM only) the matching-frame window the tile needs (the tile
grown by the hole-filling margin, swept by the planimetric shift of the
highest and lowest possible points along the left line of sight, plus
``context_px`` of matching context, plus the disparity range along
columns) and from it the raw-image windows of both views;
:func:`compute_tile_points` then needs only those pixels, and
:func:`input_windows` gives them to the planner. A tile is computed in two
steps, a campaign's ``stereo`` and ``dsm`` tasks (:mod:`planner.stages`):
:func:`run_stereo_tile` (steps 1-4: the points landing on the tile grown by
the hole-filling margin, :class:`TilePoints`) and :func:`grid_tile_points`
(step 5: the DSM tile from those points alone); :func:`run_dsm_tile` runs both. A tile's rectified pixels
are bit-identical to the whole product's, and so are its grey levels
except within half the local-contrast window of its frame window's border
(matching context); tiles differ from the whole only where SGM's
aggregation paths, cut at the tile's context border, change a decision
(the tests state and bound that difference).

Bad input is refused with the reason by :func:`ops.stereo.views.open_view`
(a uniform, texture-free image), :func:`ops.stereo.views.check_pair` (views
of different missions or taken further apart than ``max_days_apart``) and
:func:`plan_stereo` (views that do not overlap on the DEM, a base-to-height
ratio too small for stereo, a geographic output CRS); a tile where nothing
matches comes back empty with its reason (:attr:`DsmTile.reason`).

Three or more views: :mod:`ops.stereo.multiview` runs this kernel per pair
and fuses the tiles (:mod:`ops.stereo.dsm_fusion`). Without a DEM the initial
surface comes from the images (:mod:`ops.stereo.initial_terrain`: tie points,
then, where the terrain tilts, this kernel run at a quarter of the resolution).

Measured: ``python -m benchmarks.stereo`` (figures in
``benchmarks/results/stereo.json``, the state before the blunder filters
in ``stereo_baseline.json``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import pyproj
import scipy.ndimage as ndi
from numpy.typing import NDArray

from ops.errors import OpsError, StereoError
from ops.raster.crs import lonlat_transformer, round_gsd_m, sensor_gsd_m, utm_crs
from ops.raster.raster_io import read_window
from ops.sensor.footprint import declare_input_window, geobox_lonlat, lonlat_bounds
from ops.stereo.epipolar import MatchingFrame, SensorMaps, build_frame, resample_window, sensor_maps
from ops.stereo.matching import (
    DisparityMap,
    MatchingConfig,
    estimate_row_shift,
    match,
    to_grey_levels,
)
from ops.stereo.phase_times import phase
from ops.stereo.rasterize import (
    FILL_MARGIN_CELLS,
    fill_edges,
    fill_small_holes,
    rasterize_points,
    remove_outliers,
    remove_small_clusters,
)
from ops.stereo.triangulation import triangulate
from ops.stereo.views import (
    StereoConfig,
    StereoView,
    Terrain,
    Undulation,
    check_pair,
    open_view,
)
from planner.geometry.grid import GeoBox, InputWindow, TileGrid, Window

__all__ = [
    "DsmTile",
    "RectifiedPair",
    "StereoConfig",
    "StereoPlan",
    "StereoTileInputs",
    "StereoView",
    "Terrain",
    "TilePoints",
    "Undulation",
    "assemble_dsm",
    "central_sample",
    "check_pair",
    "compute_tile_points",
    "declare_stereo_inputs",
    "grid_tile_points",
    "input_windows",
    "iter_dsm_tiles",
    "open_view",
    "overlap_mask",
    "plan_stereo",
    "read_window_band",
    "rectify",
    "run_dsm_tile",
    "run_stereo_tile",
]

FloatArray = NDArray[np.float64]
Float32Array = NDArray[np.float32]

#: Pixels read beyond the resampling points (bicubic support plus rounding).
RESAMPLING_MARGIN_PX = 3.0
#: Points per side of the grid used to find the overlap of the two views.
OVERLAP_SAMPLES = 65
#: Slack (m) on where a match lands, estimated from its disparity, before triangulation.
LAND_SLACK_M = 5.0
#: Fixed-point iterations putting the overlap samples on the DEM.
OVERLAP_ITERATIONS = 4
#: Image pixels between a tile's projected samples and the image border for the
#: tile to count as wholly seen (covers the RPC's curvature between samples, < 0.01 px).
SEEN_MARGIN_PX = 4.0
#: Side (cells) of the blocks :func:`overlap_mask` shows wholly seen from their samples.
SEEN_BLOCK_CELLS = 128
#: Side (output cells) of the central sample the pointing correction is measured on.
POINTING_SAMPLE_PX = 512


@dataclass(frozen=True, slots=True)
class StereoPlan:
    """Everything fixed for the whole product: views, output grid, matching frame."""

    left: StereoView
    right: StereoView
    geobox: GeoBox
    frame: MatchingFrame
    config: StereoConfig
    right_row_shift_px: float = 0.0
    n_tie_points: int = 0


def overlap_lonlat(
    left: StereoView, right: StereoView, dem: Terrain
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Ground points (on the DEM) of a grid over the left image that the right one sees.

    Each sample is localised at the DEM's height under its previous ground
    point, a few times over (the fixed point converges while slope times
    tan(incidence) stays below 1); samples off the DEM are dropped.
    """
    n = OVERLAP_SAMPLES
    rows, cols = (a.ravel() for a in np.meshgrid(
        np.linspace(-0.5, left.shape[0] - 0.5, n), np.linspace(-0.5, left.shape[1] - 0.5, n),
        indexing="ij",
    ))
    h = np.full(n * n, left.rpc.height_off)
    on_dem = np.zeros(n * n, dtype=bool)
    for _ in range(OVERLAP_ITERATIONS):
        lon, lat = left.rpc.localize(rows, cols, h, check=False)
        h_dem = np.asarray(dem.heights(lon, lat, strict=False), dtype=np.float64)
        on_dem = np.isfinite(h_dem)
        h = np.where(on_dem, h_dem, h)
    ok = on_dem & np.isfinite(lon) & np.isfinite(lat)
    r_r, c_r = right.rpc.project(lon[ok], lat[ok], h[ok], check=False)
    inside = (r_r >= -0.5) & (r_r <= right.shape[0] - 0.5) & (c_r >= -0.5) & (
        c_r <= right.shape[1] - 0.5
    )
    return lon[ok][inside], lat[ok][inside], h[ok][inside]


def plan_stereo(
    left: StereoView,
    right: StereoView,
    dem: Terrain,
    *,
    crs: str | None = None,
    gsd_m: float | None = None,
    config: StereoConfig | None = None,
    right_row_shift_px: float | None = None,
) -> StereoPlan:
    """The output grid (the overlap of the views) and the matching frame of a pair.

    ``right_row_shift_px``: the pointing correction when already measured (on
    a finer frame of the same pair, scaled to this one's step); None measures it.
    """
    with phase("planning"):
        return _plan_stereo(left, right, dem, crs, gsd_m,
                            StereoConfig() if config is None else config, right_row_shift_px)


def _plan_stereo(left: StereoView, right: StereoView, dem: Terrain, crs: str | None,
                 gsd_m: float | None, cfg: StereoConfig, row_shift_px: float | None
                 ) -> StereoPlan:
    check_pair(left, right, cfg)
    lon, lat, h = overlap_lonlat(left, right, dem)
    if lon.size < 4:
        raise StereoError(
            f"{left.path} and {right.path} do not overlap on the ground (on the DEM "
            f"{getattr(dem, 'source', '')}); expected two views of the same area inside the DEM"
        )
    centre = int(np.argmin(np.hypot(lon - np.median(lon), lat - np.median(lat))))
    lon_c, lat_c, h_c = float(lon[centre]), float(lat[centre]), float(h[centre])
    out_crs = crs or utm_crs(lon_c, lat_c)
    if pyproj.CRS.from_user_input(out_crs).is_geographic:
        raise StereoError(
            f"output CRS {out_crs!r} is geographic; expected a projected CRS in metres "
            "(e.g. the overlap's UTM zone, the default)"
        )
    if gsd_m is None:
        gsd_m = round_gsd_m(
            0.5 * (sensor_gsd_m(left.rpc, lon_c, lat_c, h_c)
                   + sensor_gsd_m(right.rpc, lon_c, lat_c, h_c))
        )
    if not (math.isfinite(gsd_m) and gsd_m > 0):
        raise StereoError(f"gsd {gsd_m!r} m, expected a positive number of metres")
    x, y = lonlat_transformer(out_crs, inverse=True).transform(lon, lat)
    geobox = GeoBox.from_bounds(
        out_crs, float(np.min(x)), float(np.min(y)), float(np.max(x)), float(np.max(y)), gsd_m
    )
    frame = build_frame(left.rpc, right.rpc, lon_c, lat_c, h_c, out_crs, gsd_m)
    plan = StereoPlan(left, right, geobox, frame, cfg)
    if row_shift_px is not None:
        return dataclasses.replace(plan, right_row_shift_px=row_shift_px)
    shift, n_ties = _pointing_correction(plan, dem)
    return dataclasses.replace(plan, right_row_shift_px=shift, n_tie_points=n_ties)


def _pointing_correction(plan: StereoPlan, dem: Terrain) -> tuple[float, int]:
    """Row offset between the rectified views, from SIFT ties in a central sample."""
    sample = central_sample(plan, dem)
    if sample is None:
        return 0.0, 0
    grey_l, grey_r, valid_l, valid_r, (d_lo, d_hi) = sample
    with phase("pointing correction"):
        # The initial terrain's plan and the product's measure the same sample when the
        # prior is kept and the grid is the default one: SIFT runs once for it.
        key = hashlib.blake2b(b"".join(
            [np.array([d_lo, d_hi], np.float64).tobytes(), np.array(grey_l.shape, np.int64).tobytes(),
             *(np.ascontiguousarray(a).tobytes() for a in (grey_l, grey_r, valid_l, valid_r))]
        )).digest()
        with _ROW_SHIFTS_LOCK:
            known = _ROW_SHIFTS.get(key)
        if known is None:
            known = estimate_row_shift(grey_l, grey_r, d_lo, d_hi, valid_left=valid_l,
                                       valid_right=valid_r)
            with _ROW_SHIFTS_LOCK:  # plan tasks may run on several threads
                while len(_ROW_SHIFTS) >= _ROW_SHIFTS_KEPT:
                    _ROW_SHIFTS.pop(next(iter(_ROW_SHIFTS)))
                _ROW_SHIFTS[key] = known
        return known


#: Pointing corrections measured in this process, by the digest of their sample (bytes of
#: both views' grey levels and validity, the disparity range): a few, oldest out first.
_ROW_SHIFTS: dict[bytes, tuple[float, int]] = {}
_ROW_SHIFTS_KEPT = 8
_ROW_SHIFTS_LOCK = threading.Lock()


def central_sample(
    plan: StereoPlan, dem: Terrain
) -> tuple[NDArray[np.uint8], NDArray[np.uint8], NDArray[np.bool_], NDArray[np.bool_],
           tuple[float, float]] | None:
    """Both views rectified on a central sample of the grid, and its disparity range.

    Grey levels and validity of the sample only (not its matching context);
    None where the sample sees nothing of one view.
    """
    g = plan.geobox
    size = min(POINTING_SAMPLE_PX, g.height, g.width)
    sample = g.window_geobox(
        Window((g.height - size) // 2, (g.width - size) // 2, size, size)
    )
    inputs = declare_stereo_inputs(plan, sample, dem)
    if inputs.left_window is None or inputs.right_window is None:
        return None
    pair = rectify(
        plan, inputs, read_window_band(plan.left.path, inputs.left_window),
        read_window_band(plan.right.path, inputs.right_window), dem,
    )
    # Tie points only in the sample itself (the frame window adds matching context).
    core = plan.frame.window_covering(sample, 0.0)
    ext = inputs.frame_window
    r0, c0 = max(core.row_off - ext.row_off, 0), max(core.col_off - ext.col_off, 0)
    crop = (slice(r0, r0 + core.height), slice(c0, c0 + core.width))
    return (pair.grey_l[crop], pair.grey_r[crop], pair.valid_l[crop], pair.valid_r[crop],
            inputs.disparity_range_px)


def overlap_mask(plan: StereoPlan, dem: Terrain, geobox: GeoBox | None = None) -> NDArray[np.bool_]:
    """Cells of the output grid (or ``geobox``) whose ground, on the DEM, both views see.

    Cells off the DEM count as unseen. Blocks of ``SEEN_BLOCK_CELLS``² that
    :func:`_wholly_seen` shows seen from their samples are set whole; the
    cells of the other blocks (along the overlap's border, or outside it)
    are evaluated one by one (:func:`_seen_cells`).
    """
    box = plan.geobox if geobox is None else geobox
    seen = np.zeros(box.shape, dtype=bool)
    exact = np.zeros(box.shape, dtype=bool)
    for r0 in range(0, box.height, SEEN_BLOCK_CELLS):
        for c0 in range(0, box.width, SEEN_BLOCK_CELLS):
            window = Window(r0, c0, min(SEEN_BLOCK_CELLS, box.height - r0),
                            min(SEEN_BLOCK_CELLS, box.width - c0))
            block = (slice(r0, r0 + window.height), slice(c0, c0 + window.width))
            if _wholly_seen(plan, dem, box.window_geobox(window)):
                seen[block] = True
            else:
                exact[block] = True
    rows, cols = np.nonzero(exact)
    seen[rows, cols] = _seen_cells(plan, dem, box, rows, cols)
    return seen


def _seen_cells(plan: StereoPlan, dem: Terrain, box: GeoBox, rows: NDArray[np.intp],
                cols: NDArray[np.intp]) -> NDArray[np.bool_]:
    """Whether both views see the ground, on the DEM, of each of ``box``'s cells (rows, cols)."""
    x, y = box.xy(rows, cols)
    lon, lat = lonlat_transformer(box.crs).transform(x, y)
    h = np.asarray(dem.heights(lon, lat, strict=False), dtype=np.float64)
    seen = np.isfinite(h)
    for view in (plan.left, plan.right):
        r, c = view.rpc.project(lon, lat, h, check=False)
        seen &= (r >= -0.5) & (r <= view.shape[0] - 0.5) & (c >= -0.5) & (
            c <= view.shape[1] - 0.5
        )
    return seen


def _wholly_seen(plan: StereoPlan, dem: Terrain, box: GeoBox) -> bool:
    """Whether both views see every cell of ``box`` on the DEM, shown from samples alone.

    True when the DEM has a height under the whole box (``min_max`` covers
    it, with no hole) and its samples (every 32 cells, edges included),
    projected at the DEM's lowest and highest heights, stay
    ``SEEN_MARGIN_PX`` inside both images: every cell then passes
    :func:`overlap_mask`, which an interior tile need not evaluate cell by cell.
    """
    lon, lat = geobox_lonlat(box)
    try:
        hmin, hmax = dem.min_max(*lonlat_bounds(lon, lat, pad_deg=1e-5))
    except OpsError:
        return False
    if not (math.isfinite(hmin) and math.isfinite(hmax)):
        return False
    n = lon.size
    heights = np.repeat([hmin, hmax], n)
    for view in (plan.left, plan.right):
        r, c = view.rpc.project(np.tile(lon, 2), np.tile(lat, 2), heights, check=False)
        lo = -0.5 + SEEN_MARGIN_PX
        if not (np.all(np.isfinite(r)) and np.all(np.isfinite(c)) and r.min() >= lo
                and c.min() >= lo and r.max() <= view.shape[0] - 0.5 - SEEN_MARGIN_PX
                and c.max() <= view.shape[1] - 0.5 - SEEN_MARGIN_PX):
            return False
    return True


@dataclass(frozen=True, slots=True)
class StereoTileInputs:
    """What a DSM tile needs: frame window, raw windows of both views, ranges."""

    tile: GeoBox
    frame_window: Window
    left_window: Window | None
    right_window: Window | None
    height_range_m: tuple[float, float]
    disparity_range_px: tuple[float, float]

    @property
    def empty(self) -> bool:
        return self.left_window is None or self.right_window is None


def _dem_range(dem: Terrain, geobox: GeoBox) -> tuple[float, float]:
    lon, lat = geobox_lonlat(geobox)
    return dem.min_max(*lonlat_bounds(lon, lat, pad_deg=1e-5))


def declare_stereo_inputs(plan: StereoPlan, tile: GeoBox, dem: Terrain) -> StereoTileInputs:
    """The frame and raw-image windows an output tile needs (from the DEM only)."""
    cfg, frame = plan.config, plan.frame
    k = frame.disparity_px_per_m
    context_m = cfg.context_px * frame.step_m
    m = FILL_MARGIN_CELLS + 1
    grown = tile.window_geobox(Window(-m, -m, tile.height + 2 * m, tile.width + 2 * m))
    hmin, hmax = _dem_range(dem, grown)
    for _ in range(3):
        # Heights anywhere in [hmin - below, hmax + above] over references in
        # [hmin, hmax]: the reference of a tile cell lies up to rel * left_shift away.
        h_lo, h_hi = hmin - cfg.height_margin_below_m, hmax + cfg.height_margin_above_m
        rel_lo, rel_hi = h_lo - hmax, h_hi - hmin
        window = frame.window_covering(grown, context_m, (-rel_hi, -rel_lo))
        lo, hi = _dem_range(dem, frame.geobox(window))
        if lo >= hmin and hi <= hmax:
            break
        hmin, hmax = min(hmin, lo), max(hmax, hi)
    d_lo, d_hi = rel_lo * k, rel_hi * k
    extra = math.ceil(max(abs(d_lo), abs(d_hi))) + 2
    ext = Window(window.row_off, window.col_off - extra, window.height, window.width + 2 * extra)
    ext_box = frame.geobox(ext)
    left_w = declare_input_window(plan.left.rpc, dem, ext_box, plan.left.shape, RESAMPLING_MARGIN_PX)
    right_w = declare_input_window(
        plan.right.rpc, dem, ext_box, plan.right.shape, RESAMPLING_MARGIN_PX
    )
    return StereoTileInputs(tile, ext, left_w, right_w, (h_lo, h_hi), (d_lo, d_hi))


def input_windows(plan: StereoPlan, inputs: StereoTileInputs) -> tuple[InputWindow, ...]:
    """The tile's raw-image reads as the planner's declarations (none if it sees nothing)."""
    if inputs.left_window is None or inputs.right_window is None:
        return ()
    return (
        InputWindow(plan.left.path, inputs.left_window),
        InputWindow(plan.right.path, inputs.right_window),
    )


@dataclass(frozen=True, slots=True)
class DsmTile:
    """A DSM tile: heights (NaN = nodata), point counts, confidence, and why it is empty."""

    height_m: Float32Array
    count: NDArray[np.uint16]
    confidence: Float32Array
    n_matches: int
    reason: str | None = None

    @property
    def valid_fraction(self) -> float:
        return float(np.isfinite(self.height_m).mean())


def _empty_tile(tile: GeoBox, reason: str) -> DsmTile:
    shape = tile.shape
    return DsmTile(
        np.full(shape, np.nan, np.float32), np.zeros(shape, np.uint16),
        np.full(shape, np.nan, np.float32), 0, reason,
    )


def _interp_columns(values: FloatArray, rows: NDArray[np.intp], cols: FloatArray) -> FloatArray:
    """Linear interpolation of ``values[rows, cols]`` along fractional columns."""
    c0 = np.clip(np.floor(cols).astype(np.intp), 0, values.shape[1] - 2)
    frac = cols - c0
    return values[rows, c0] * (1.0 - frac) + values[rows, c0 + 1] * frac


@dataclass(frozen=True, slots=True)
class RectifiedPair:
    """Both views resampled on a frame window: 8-bit grey levels, validity, sensor maps."""

    grey_l: NDArray[np.uint8]
    grey_r: NDArray[np.uint8]
    valid_l: NDArray[np.bool_]
    valid_r: NDArray[np.bool_]
    maps: SensorMaps


def rectify(
    plan: StereoPlan,
    inputs: StereoTileInputs,
    left_pixels: NDArray[np.generic],
    right_pixels: NDArray[np.generic],
    dem: Terrain,
) -> RectifiedPair:
    """Resample both views' declared windows onto the tile's frame window."""
    if inputs.left_window is None or inputs.right_window is None:
        raise StereoError(f"tile {inputs.tile} sees nothing of one view; nothing to rectify")
    with phase("rectification"):
        maps = sensor_maps(
            plan.frame, inputs.frame_window, plan.left.rpc, plan.right.rpc, dem,
            plan.right_row_shift_px,
        )
        rect_l = resample_window(left_pixels, inputs.left_window, maps.rows_l, maps.cols_l)
        rect_r = resample_window(right_pixels, inputs.right_window, maps.rows_r, maps.cols_r)
        grey_l, valid_l = _grey_levels(rect_l, plan.left.grey_range, plan.config.matching)
        grey_r, valid_r = _grey_levels(rect_r, plan.right.grey_range, plan.config.matching)
    return RectifiedPair(grey_l, grey_r, valid_l, valid_r, maps)


def _grey_levels(rect: Float32Array, grey_range: tuple[float, float], m: MatchingConfig
                 ) -> tuple[NDArray[np.uint8], NDArray[np.bool_]]:
    return to_grey_levels(rect, *grey_range, contrast_window_px=m.contrast_window_px,
                          contrast_target_std=m.contrast_target_std,
                          contrast_max_gain=m.contrast_max_gain)


def _hole_cells(config: StereoConfig, tile: GeoBox) -> int:
    cell_m2 = tile.resolution[0] * tile.resolution[1]
    return int(config.max_hole_area_m2 / cell_m2)


@dataclass(frozen=True, slots=True)
class TilePoints:
    """The stereo step of a tile: its triangulated points, on the tile grown by the fill margin.

    Map coordinates (the plan's CRS), heights (ellipsoid, or above the geoid
    asked for) and matching confidences of the matches that land near the
    tile; ``reason`` says why there are none where matching found nothing.
    """

    x_m: FloatArray
    y_m: FloatArray
    h_m: FloatArray
    confidence: Float32Array
    n_matches: int
    reason: str | None = None


def _no_points(reason: str) -> TilePoints:
    empty = np.empty(0, np.float64)
    return TilePoints(empty, empty, empty, np.empty(0, np.float32), 0, reason)


def compute_tile_points(
    plan: StereoPlan,
    inputs: StereoTileInputs,
    left_pixels: NDArray[np.generic] | None,
    right_pixels: NDArray[np.generic] | None,
    dem: Terrain,
    geoid: Undulation | None = None,
) -> TilePoints:
    """Rectify, match and triangulate one tile from the declared raw windows of both views."""
    if inputs.left_window is None or inputs.right_window is None or left_pixels is None or (
        right_pixels is None
    ):
        return _no_points("the tile is outside one of the images")
    pair = rectify(plan, inputs, left_pixels, right_pixels, dem)
    if not pair.valid_l.any() or not pair.valid_r.any():
        return _no_points("the tile is outside the overlap of the images")
    disp = match(
        pair.grey_l, pair.grey_r, pair.valid_l, pair.valid_r, *inputs.disparity_range_px,
        plan.config.matching,
    )
    ii, jj = np.nonzero(disp.valid)
    if ii.size == 0:
        return _no_points("no pixel matched (no texture, or no correlation)")
    with phase("triangulation"):
        x, y, h, confidence, n_kept = _triangulate_matches(plan, inputs, pair.maps, disp, ii,
                                                           jj, geoid)
    return TilePoints(x, y, h, confidence, n_kept)


def grid_tile_points(plan: StereoPlan, tile: GeoBox, points: TilePoints, dem: Terrain
                     ) -> DsmTile:
    """The DSM tile of a tile's points: rasterised, blunders removed, supported holes filled."""
    if points.reason is not None:
        return _empty_tile(tile, points.reason)
    cfg = plan.config
    with phase("rasterisation"):
        m = FILL_MARGIN_CELLS
        grown = tile.window_geobox(Window(-m, -m, tile.height + 2 * m, tile.width + 2 * m))
        raster = rasterize_points(grown, points.x_m, points.y_m, points.h_m, points.confidence,
                                  cfg.gap_fill_spread_m)
    with phase("raster filters"):
        remove_outliers(raster.height_m, cfg.outlier_window_cells, cfg.outlier_max_m,
                        cfg.outlier_window_cells**2 // 3)
        remove_small_clusters(raster.height_m, cfg.cluster_min_cells, cfg.cluster_step_m)
        fill_small_holes(raster.height_m, _hole_cells(cfg, tile), cfg.fill_rim_residual_m)
        if cfg.edge_fill_cells and not _wholly_seen(plan, dem, grown):
            seen = overlap_mask(plan, dem, grown)
            # only near the overlap's border, where the epipolar lines start
            inner = ndi.binary_erosion(seen, iterations=2 * cfg.edge_fill_cells, border_value=1)
            fill_edges(raster.height_m, seen & ~inner, ndi.distance_transform_edt(seen),
                       cfg.edge_fill_cells, cfg.edge_fill_source_spread_m)
    core = (slice(m, tile.height + m), slice(m, tile.width + m))
    height = raster.height_m[core]
    measured = np.isfinite(height)
    reason = None if measured.any() else "matches found, none on this tile"
    return DsmTile(
        np.ascontiguousarray(height),
        np.where(measured, raster.count[core], 0).astype(np.uint16),
        np.where(measured, raster.confidence[core], np.nan).astype(np.float32),
        points.n_matches, reason,
    )


def _triangulate_matches(
    plan: StereoPlan, inputs: StereoTileInputs, maps: SensorMaps, disp: DisparityMap,
    ii: NDArray[np.intp], jj: NDArray[np.intp], geoid: Undulation | None,
) -> tuple[FloatArray, FloatArray, FloatArray, Float32Array, int]:
    """Map coordinates, heights and confidences of the matches that land near the tile."""
    tile, frame, cfg = inputs.tile, plan.frame, plan.config
    d = disp.disparity_px[ii, jj].astype(np.float64)
    h_est = maps.h_ref_m[ii, jj] + d / frame.disparity_px_per_m
    # Triangulate only the matches that can land on the (grown) tile: the
    # frame window also holds matching context and the reach of other heights.
    m = FILL_MARGIN_CELLS
    grown = tile.window_geobox(Window(-m, -m, tile.height + 2 * m, tile.width + 2 * m))
    x0, y0 = frame.geobox(inputs.frame_window).xy(ii, jj)
    rise = h_est - maps.h_ref_m[ii, jj]
    r, c = grown.rowcol(x0 + rise * frame.left_shift_m_per_m[0],
                        y0 + rise * frame.left_shift_m_per_m[1])
    slack = LAND_SLACK_M / tile.resolution[0]
    near = (r > -slack) & (r < grown.height + slack) & (c > -slack) & (c < grown.width + slack)
    ii, jj, d, h_est = ii[near], jj[near], d[near], h_est[near]
    cols_right = jj - d
    rows_r = _interp_columns(maps.rows_r_model, ii, cols_right)
    cols_r = _interp_columns(maps.cols_r_model, ii, cols_right)
    points = _triangulate(plan, maps.rows_l[ii, jj], maps.cols_l[ii, jj], rows_r, cols_r, h_est)
    lon, lat, h, ray = points
    keep = np.isfinite(h) & (ray <= cfg.max_ray_distance_m)
    if geoid is not None and keep.any():
        h = h - np.asarray(geoid.undulation(lon, lat), dtype=np.float64)
    x, y = lonlat_transformer(frame.crs, inverse=True).transform(lon[keep], lat[keep])
    return (np.asarray(x, np.float64), np.asarray(y, np.float64), h[keep],
            disp.confidence[ii, jj][keep], int(keep.sum()))


def _triangulate(
    plan: StereoPlan, rows_l: FloatArray, cols_l: FloatArray, rows_r: FloatArray,
    cols_r: FloatArray, h_est: FloatArray,
) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray]:
    pts = triangulate(plan.left.rpc, plan.right.rpc, rows_l, cols_l, rows_r, cols_r, h_est)
    return pts.lon, pts.lat, pts.h_m, pts.ray_distance_m


def read_window_band(path: str, window: Window) -> NDArray[np.generic]:
    """Band 1 of a raster in a window (the raw-image read of a stereo tile)."""
    with phase("read"):
        band: NDArray[np.generic] = read_window(path, window)[0]
    return band


def run_stereo_tile(
    plan: StereoPlan, tile: GeoBox, dem: Terrain, geoid: Undulation | None = None,
    inputs: StereoTileInputs | None = None,
) -> TilePoints:
    """Declare, read, match and triangulate one tile (a campaign's ``stereo`` task).

    ``inputs``: the tile's windows when declared already (a campaign declares
    them while surveying, :func:`declare_stereo_inputs`, so the plan knows them).
    """
    if inputs is None:
        with phase("tile inputs"):
            inputs = declare_stereo_inputs(plan, tile, dem)
    if inputs.left_window is None or inputs.right_window is None:
        return _no_points("the tile is outside one of the images")
    left_pixels = read_window_band(plan.left.path, inputs.left_window)
    right_pixels = read_window_band(plan.right.path, inputs.right_window)
    return compute_tile_points(plan, inputs, left_pixels, right_pixels, dem, geoid)


def run_dsm_tile(
    plan: StereoPlan, tile: GeoBox, dem: Terrain, geoid: Undulation | None = None
) -> DsmTile:
    """Both steps of one tile: its points (:func:`run_stereo_tile`), then its DSM tile."""
    return grid_tile_points(plan, tile, run_stereo_tile(plan, tile, dem, geoid), dem)


def iter_dsm_tiles(
    plan: StereoPlan,
    dem: Terrain,
    *,
    tile_px: int = 512,
    geoid: Undulation | None = None,
    on_tile: Callable[[int, int], None] | None = None,
) -> Iterator[tuple[Window, DsmTile]]:
    """Every tile of the product's grid with its DSM, row-major."""
    grid = TileGrid(plan.geobox, tile_px, tile_px)
    n = len(grid)
    for k, idx in enumerate(grid.tiles()):
        tile = run_dsm_tile(plan, grid.tile_geobox(idx), dem, geoid)
        if on_tile is not None:
            on_tile(k + 1, n)
        yield grid.window(idx), tile


def assemble_dsm(plan: StereoPlan, dem: Terrain, *, tile_px: int = 512,
                 geoid: Undulation | None = None) -> DsmTile:
    """The whole product in memory (tests, small scenes)."""
    return assemble_tiles(plan.geobox.shape,
                          iter_dsm_tiles(plan, dem, tile_px=tile_px, geoid=geoid),
                          "no pixel matched anywhere")


def assemble_tiles(shape: tuple[int, int], tiles: Iterable[tuple[Window, DsmTile]],
                   empty_reason: str) -> DsmTile:
    """Tiles pasted into one in-memory product; ``empty_reason`` when no cell has a height."""
    height = np.full(shape, np.nan, np.float32)
    count = np.zeros(shape, np.uint16)
    conf = np.full(shape, np.nan, np.float32)
    n = 0
    for window, tile in tiles:
        height[window.slices()] = tile.height_m
        count[window.slices()] = tile.count
        conf[window.slices()] = tile.confidence
        n += tile.n_matches
    reason = None if np.isfinite(height).any() else empty_reason
    return DsmTile(height, count, conf, n, reason)
