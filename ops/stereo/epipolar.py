"""Epipolar rectification of an RPC stereo pair in ground geometry (the matching frame).

Stereo matchers such as semi-global matching search along image rows, so
both images must first be resampled so that the projections of one ground
point lie on the same row ("epipolar resampling"). For pushbroom sensors
described by RPCs there are no exact epipolar lines, only local ones; CARS
and s2p build them per tile by sampling the left image, localising each
sample at two heights and projecting the two ground points into the right
image (de Franchis et al., "An automatic and modular stereo pipeline for
pushbroom images", ISPRS Annals 2014; Michel et al., "A new
satellite imagery stereo pipeline designed for scalability, robustness and
performance", ISPRS Annals 2020).

We build the same local geometry, but resample through the ground, which
makes the grid *global* (one for the whole product, so tiles cut from it are
exact sub-windows and tiled results equal the whole):

* The **matching frame** is a rotated map grid (step ``step_m``, in the
  product's projected CRS). Frame pixel (i, j) is a ground point g(i, j) on
  the **reference surface** (the initial DEM, bilinear). Its rectified left
  value is the left image at ``left.project(g, h_dem(g))``, and likewise for
  the right image: each rectified image is an ortho-image of its view on the
  DEM, on the same rotated grid.
* A point at height h_dem + dh on the left line of sight through g appears in
  the right ortho displaced by ``dh * p`` where ``p`` (metres per metre) is
  the difference of the two views' ground parallax vectors, i.e. the
  horizontal trace of the (nearly vertical) epipolar plane. ``p`` is
  computed once at the scene centre by localising a left pixel at two heights
  and re-projecting through the right RPC; the frame's column axis u is
  ``-p / |p|``. Hence a matched point has zero row disparity and a column
  disparity d = ``dh * |p| / step_m`` pixels, positive for points above the
  reference surface. ``|p|`` is the base-to-height ratio B/H.
* The epipolar planes of a pushbroom pair are nearly vertical, so their
  horizontal traces keep the direction of ``p`` whatever the reference
  surface's slope; the residual row disparity is measured on the
  rectified pair with SIFT ties (below 0.1 px on a synthetic pair, where the
  RPCs are exact). On real pairs the views' RPC errors add a constant row
  offset (0.5 px at Gizeh, 4.8 px at Ventoux): the *pointing correction*
  (``right_row_shift_px``, s2p's term) samples the right image that many
  rows further.
* Resampling (:func:`resample_window`) is bicubic, with OpenCV's 1/32-pixel
  steps taken from image coordinates, so a frame pixel gets the same value
  through any window.
* Every pixel keeps its exact sensor coordinates (the resampling maps), so
  triangulation goes back to the raw images through the RPCs rigorously:
  rectification only has to be good enough for matching, never for heights.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Protocol

import cv2
import numba
import numpy as np
from numpy.typing import ArrayLike, NDArray

from ops.errors import StereoError
from ops.raster.crs import lonlat_transformer
from ops.sensor.rpc import RpcModel
from planner.geometry.grid import GeoBox, Window

FloatArray = NDArray[np.float64]
Float32Array = NDArray[np.float32]

#: Height step (m) used to measure the parallax vector at the scene centre.
PARALLAX_PROBE_M = 50.0
#: OpenCV's sub-pixel interpolation steps per pixel (INTER_TAB_SIZE = 2**INTER_BITS).
REMAP_STEPS = 32
#: Spacing (frame pixels) of the lattice where the sensor maps are computed exactly.
MAP_NODE_STEP_PX = 8
#: Below this base-to-height ratio the pair has no usable stereo (a single view twice).
MIN_BASE_TO_HEIGHT = 0.01


class HeightSurface(Protocol):
    """Anything with ``heights(lon, lat) -> h`` above the ellipsoid (``ops.terrain.dem.Dem``)."""

    def heights(self, lon: ArrayLike, lat: ArrayLike) -> FloatArray: ...


@dataclass(frozen=True, slots=True)
class MatchingFrame:
    """The rotated ground grid both images are resampled onto for matching.

    ``transform`` maps frame (row, col) corners to map (x, y) in ``crs``, in
    rasterio order; columns run along the epipolar direction.
    ``disparity_px_per_m`` is the column disparity per metre above the
    reference surface; ``left_shift_m_per_m`` the planimetric (x, y) shift per
    metre of a point moving up the left line of sight.
    """

    crs: str
    transform: tuple[float, float, float, float, float, float]
    step_m: float
    disparity_px_per_m: float
    left_shift_m_per_m: tuple[float, float]

    def __post_init__(self) -> None:
        if not (math.isfinite(self.step_m) and self.step_m > 0):
            raise StereoError(f"matching frame step {self.step_m!r} m, expected > 0")
        if not (math.isfinite(self.disparity_px_per_m) and self.disparity_px_per_m > 0):
            raise StereoError(
                f"matching frame disparity {self.disparity_px_per_m!r} px/m, expected > 0"
            )

    @property
    def base_to_height(self) -> float:
        return self.disparity_px_per_m * self.step_m

    def geobox(self, window: Window) -> GeoBox:
        """The frame's pixels in ``window`` as a (rotated) geobox."""
        base = GeoBox(self.crs, self.transform, 1, 1)
        return base.window_geobox(window)

    def window_covering(
        self, geobox: GeoBox, pad_m: float, sweep_m: tuple[float, float] = (0.0, 0.0)
    ) -> Window:
        """The frame window covering a map geobox swept along the left shift, plus a pad.

        The geobox's corners are moved by ``t * left_shift_m_per_m`` for t in
        ``sweep_m`` (metres of height relative to the reference: where the
        reference points of the tile's cells can be) and the result is grown
        by ``pad_m`` metres on every side.
        """
        left, bottom, right, top = geobox.bounds
        sx, sy = self.left_shift_m_per_m
        xs, ys = [], []
        for t in (0.0, *sweep_m):
            for x, y in ((left, bottom), (right, bottom), (left, top), (right, top)):
                for dx, dy in ((-pad_m, -pad_m), (pad_m, -pad_m), (-pad_m, pad_m), (pad_m, pad_m)):
                    xs.append(x + t * sx + dx)
                    ys.append(y + t * sy + dy)
        rows, cols = GeoBox(self.crs, self.transform, 1, 1).rowcol(np.array(xs), np.array(ys))
        return Window.bounding(rows, cols, margin_px=1.0)


def build_frame(
    left: RpcModel, right: RpcModel, lon: float, lat: float, h: float, crs: str, step_m: float
) -> MatchingFrame:
    """The matching frame of a pair, from the epipolar geometry at one ground point.

    (lon, lat, h) should be the centre of the overlap at the reference height.
    Raises StereoError when the base-to-height ratio is too small for stereo.
    """
    to_map = lonlat_transformer(crs, inverse=True)
    row_l, col_l = left.project([lon], [lat], [h])
    hs = np.array([h - PARALLAX_PROBE_M, h + PARALLAX_PROBE_M])
    lon_l, lat_l = left.localize(np.repeat(row_l, 2), np.repeat(col_l, 2), hs, check=False)
    row_r, col_r = right.project(lon_l, lat_l, hs, check=False)
    lon_r, lat_r = right.localize(row_r, col_r, np.full(2, h), check=False)
    x_l, y_l = (np.asarray(v, dtype=np.float64) for v in to_map.transform(lon_l, lat_l))
    x_r, y_r = (np.asarray(v, dtype=np.float64) for v in to_map.transform(lon_r, lat_r))
    values = np.concatenate([x_l, y_l, x_r, y_r])
    if not np.all(np.isfinite(values)):
        raise StereoError(
            f"{left.source} / {right.source}: the RPCs give no ground point at lon {lon}, "
            f"lat {lat}, h {h} m; expected a point both models cover"
        )
    shift = ((x_l[1] - x_l[0]) / (2 * PARALLAX_PROBE_M), (y_l[1] - y_l[0]) / (2 * PARALLAX_PROBE_M))
    px = (x_r[1] - x_r[0]) / (2 * PARALLAX_PROBE_M)
    py = (y_r[1] - y_r[0]) / (2 * PARALLAX_PROBE_M)
    b_h = math.hypot(px, py)
    if b_h < MIN_BASE_TO_HEIGHT:
        raise StereoError(
            f"{left.source} / {right.source}: base-to-height ratio {b_h:.4f} at lon {lon:.5f}, "
            f"lat {lat:.5f}; expected >= {MIN_BASE_TO_HEIGHT} (two views of the same geometry "
            "cannot measure heights)"
        )
    # Column axis u = -p/|p| so that points above the reference have positive disparity.
    cos_t, sin_t = -px / b_h, -py / b_h
    x0 = math.floor(float(x_l[0]) / step_m) * step_m
    y0 = math.ceil(float(y_l[0]) / step_m) * step_m
    transform = (step_m * cos_t, step_m * sin_t, x0, step_m * sin_t, -step_m * cos_t, y0)
    return MatchingFrame(
        crs=crs,
        transform=transform,
        step_m=step_m,
        disparity_px_per_m=b_h / step_m,
        left_shift_m_per_m=(float(shift[0]), float(shift[1])),
    )


@dataclass(frozen=True, slots=True)
class SensorMaps:
    """Raw-image coordinates of every frame pixel of a window, on the reference surface.

    ``rows_l``/``cols_l`` (and ``_r``) have the window's shape; ``h_ref_m`` is
    the reference (DEM) height under each frame pixel. The right maps include
    the pointing correction (where the right image is sampled); the
    ``_model`` right maps are without it: where the right RPC *says* the
    point is, which is what triangulation must use to intersect rays of one
    consistent geometry (the correction then acts as a bias fix of the right
    RPC, perpendicular to the epipolar lines, so it leaves heights alone).
    The points then lie on the left view's rays; CARS intersects the sampled
    right position with the raw RPC (mid-point of rays that miss by the
    pointing offset), which puts its surface half the offset away: at Ventoux
    (4.8 px) its DSM sits 0.8 m west of eochain's, and eochain triangulating
    CARS's way is 0.40 m NMAD from CARS instead of 0.60 m
    (``python -m benchmarks.stereo_check``). Neither is known right without
    ground control; charging the whole offset to one view keeps the pairs of
    a multi-view set that share their left view on one set of rays.
    """

    window: Window
    h_ref_m: FloatArray
    rows_l: FloatArray
    cols_l: FloatArray
    rows_r: FloatArray
    cols_r: FloatArray
    rows_r_model: FloatArray
    cols_r_model: FloatArray


def _nodes(start: int, count: int, step: int) -> NDArray[np.int64]:
    """Multiples of ``step`` covering ``start .. start + count - 1`` (global node lattice)."""
    first = (start // step) * step
    last = -(-(start + count - 1) // step) * step
    return np.arange(first, last + step, step, dtype=np.int64)


def _exact_at_nodes(
    frame: MatchingFrame, rows: NDArray[np.int64], cols: NDArray[np.int64], rpc: RpcModel,
    dem: HeightSurface, row_shift_px: float,
) -> tuple[FloatArray, FloatArray, FloatArray]:
    rr, cc = np.meshgrid(rows.astype(np.float64) + row_shift_px, cols.astype(np.float64),
                         indexing="ij")
    x, y = GeoBox(frame.crs, frame.transform, 1, 1).xy(rr, cc)
    lon, lat = lonlat_transformer(frame.crs).transform(x, y)
    lon = np.asarray(lon, dtype=np.float64)
    lat = np.asarray(lat, dtype=np.float64)
    h = np.asarray(dem.heights(lon, lat), dtype=np.float64)
    r, c = rpc.project(lon, lat, h, check=False)
    return h, r, c


def _interpolate(
    values: FloatArray, node_rows: NDArray[np.int64], node_cols: NDArray[np.int64],
    window: Window, step: int,
) -> FloatArray:
    """Bilinear interpolation of node values onto every pixel of the window (separable).

    Along the columns on the node rows first, then along the rows (numba,
    one pass over the window).
    """
    fr = (np.arange(window.row_off, window.row_stop) - node_rows[0]) / step
    fc = (np.arange(window.col_off, window.col_stop) - node_cols[0]) / step
    i0 = np.minimum(fr.astype(np.int64), len(node_rows) - 2)
    j0 = np.minimum(fc.astype(np.int64), len(node_cols) - 2)
    wc = (fc - j0)[None, :]
    along = np.ascontiguousarray(values[:, j0] * (1.0 - wc) + values[:, j0 + 1] * wc)
    out: FloatArray = np.empty((len(fr), len(fc)))
    _interpolate_rows(along, i0, fr - i0, out)
    return out


@numba.njit(cache=True, nogil=True)
def _interpolate_rows(along: Any, i0: Any, wr: Any, out: Any) -> None:  # pragma: no cover
    for i in range(out.shape[0]):
        k, w = i0[i], wr[i]
        for j in range(out.shape[1]):
            out[i, j] = along[k, j] * (1.0 - w) + along[k + 1, j] * w


def sensor_maps(
    frame: MatchingFrame,
    window: Window,
    left: RpcModel,
    right: RpcModel,
    dem: HeightSurface,
    right_row_shift_px: float = 0.0,
    node_step_px: int = MAP_NODE_STEP_PX,
) -> SensorMaps:
    """Project every frame pixel of ``window``, on the DEM, into both raw images.

    The projection is exact at the nodes of a global lattice every
    ``node_step_px`` frame pixels and bilinear in between (the ground-to-image
    mapping is smooth; the lattice is global so that any tile gets the same
    values as the whole). Only the rectification uses the interpolated
    values as an approximation: triangulation starts from the raw-image
    coordinates themselves, so it stays exact.

    ``right_row_shift_px`` is the pointing correction: the right image is
    sampled that many frame rows further, which cancels the row offset
    between the views that their RPC errors leave.
    """
    step = max(1, int(node_step_px))
    rows = _nodes(window.row_off, window.height, step)
    cols = _nodes(window.col_off, window.width, step)
    if len(rows) < 2:
        rows = np.array([rows[0], rows[0] + step])
    if len(cols) < 2:
        cols = np.array([cols[0], cols[0] + step])
    h_l, r_l, c_l = _exact_at_nodes(frame, rows, cols, left, dem, 0.0)
    _, r_r, c_r = _exact_at_nodes(frame, rows, cols, right, dem, right_row_shift_px)
    if right_row_shift_px:
        _, r_m, c_m = _exact_at_nodes(frame, rows, cols, right, dem, 0.0)
    else:
        r_m, c_m = r_r, c_r
    return SensorMaps(
        window,
        *(_interpolate(v, rows, cols, window, step) for v in (h_l, r_l, c_l, r_r, c_r, r_m, c_m)),
    )


def resample_window(
    pixels: NDArray[np.generic], window: Window, rows: FloatArray, cols: FloatArray
) -> Float32Array:
    """Bicubic resampling of a raw window at image (rows, cols); NaN outside it.

    OpenCV interpolates at 1/32 pixel steps; the steps are taken here from
    the *image* coordinates (float64) and passed as fixed-point maps, so a
    pixel gets bit-identical values whatever window it is read through
    (float32 window-relative maps would round differently per window, and
    SGM can turn one grey level into a different decision).
    """
    image = np.asarray(pixels, dtype=np.float32)
    if image.ndim == 3:
        image = image[0]
    whole = np.empty((*rows.shape, 2), np.int16)
    frac = np.empty(rows.shape, np.uint16)
    inside = np.empty(rows.shape, np.bool_)
    _fixed_point_maps(np.ascontiguousarray(rows, dtype=np.float64),
                      np.ascontiguousarray(cols, dtype=np.float64), REMAP_STEPS,
                      window.row_off, window.col_off, image.shape[0], image.shape[1],
                      whole, frac, inside)
    out = np.asarray(cv2.remap(
        image, whole, frac, cv2.INTER_CUBIC, borderMode=cv2.BORDER_CONSTANT,
        borderValue=float("nan"),
    ), np.float32)
    out[~inside] = np.nan
    return out


@numba.njit(cache=True, nogil=True)
def _fixed_point_maps(
    rows: Any, cols: Any, steps: int, row_off: int, col_off: int, height: int, width: int,
    whole: Any, frac: Any, inside: Any,
) -> None:  # pragma: no cover - compiled
    """OpenCV's fixed-point remap maps (whole pixel, 1/steps fraction) and the inside mask.

    A NaN coordinate maps far outside the window (the border value).
    """
    for i in range(rows.shape[0]):
        for j in range(rows.shape[1]):
            r, c = rows[i, j], cols[i, j]
            qx = np.int64(np.rint((-1e6 if math.isnan(c) else c) * steps))
            qy = np.int64(np.rint((-1e6 if math.isnan(r) else r) * steps))
            whole[i, j, 0] = min(max(qx // steps - col_off, -2), width + 1)
            whole[i, j, 1] = min(max(qy // steps - row_off, -2), height + 1)
            frac[i, j] = (qy % steps) * steps + qx % steps
            x, y = c - col_off, r - row_off
            inside[i, j] = x >= 0 and x <= width - 1 and y >= 0 and y <= height - 1
