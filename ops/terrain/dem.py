"""Digital elevation models: read, mosaic, fill, convert to ellipsoidal heights, sample.

A :class:`Dem` is a grid of heights above the WGS84 ellipsoid at the nodes
of a regular, axis-aligned grid in some CRS, sampled bilinearly (the node
model and the compiled sampler live in :mod:`ops.terrain.geoid`). It is built by

1. **Reading tiles** (:mod:`ops.terrain.dem_tiles`, local or remote). SRTM ``.hgt``
   files are read directly: a square of n x n big-endian int16 (n = 1201 for
   3", 3601 for 1"), north row first, -32768 for voids. SRTM is *pixel-is-point*: the file named
   ``N44E005`` has its node [0, 0] at exactly (5 E, 45 N) and its last node at
   (6 E, 44 N), so neighbouring tiles share their edge rows/columns. GDAL's
   SRTMHGT driver (the independent check in the tests) reports the same grid
   with its corner half a node further out. Every other format is read
   through rasterio, band 1; GDAL already turns ``AREA_OR_POINT=Point``
   GeoTIFFs into corner geotransforms, so node (i, j) is at the centre of
   pixel (i, j) for every source.
2. **Mosaicking.** All tiles must share one CRS, one node spacing and one
   node lattice (offsets a whole number of nodes apart); anything else is
   refused with the files named (reproject them first, e.g. with gdalwarp).
   Valid values of later tiles overwrite earlier ones (shared SRTM edges hold
   equal values). Geographic tiles are shifted by 360 degrees where that puts
   them beside the first one, so a mosaic may run past 180 E (sampling
   wraps longitudes). Nodes no tile covers are *gaps*: sampling there is a
   coverage error, never filled. With ``bounds_lonlat`` only the nodes inside
   that box, plus a margin of :data:`MARGIN_NODES`, are read.
3. **Filling holes** (:mod:`ops.terrain.dem_fill`). Nodata nodes inside a tile are
   *holes*. They are filled by Laplace (harmonic) interpolation: each hole node equals the mean of its
   4-neighbours that exist, solved exactly as one sparse linear system per
   4-connected hole, whose known values are the valid nodes on its rim. This
   reproduces planes exactly, never leaves the rim's height range (maximum
   principle), and is cheap for SRTM voids (4822 in the Ventoux tile: 0.1 s);
   one 1000 x 1000-node hole takes ~15 s (sparse LU). ``holes_filled`` counts
   them; a hole touching no valid node stays NaN (``holes_left``).
4. **Geoid.** Every source has a vertical reference (:mod:`ops.terrain.vertical`:
   stated, from its CRS or tags, or by format: SRTM is EGM96; else assumed
   ellipsoidal). Heights above a geoid need a geoid grid: the undulation
   N(lon, lat) of each node is added (h = H + N), so the grid holds
   ellipsoidal heights and sampling and min/max need no further correction.
   A geoid reference without a grid is an error, never a silent skip.
5. **Holes limit.** Holes filled by interpolation are guesses: where more
   than ``max_hole_fraction`` (default :data:`MAX_HOLE_FRACTION`) of the
   nodes under the requested box (or of the whole mosaic without one) are
   holes, ``open`` refuses, naming the share; a caller that accepts the
   guesses raises the limit (1.0 allows any share short of all nodata).

Heights are stored as float32 (0.5 mm steps at 8 km) and sampled in float64.
Coverage of a point follows the node model: inside the grid's pixel footprint,
edge nodes held constant over the outer half pixel.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyproj
import pyproj.exceptions
from numpy.typing import ArrayLike, NDArray
from rasterio.crs import CRS

from ops.errors import DemCoverageError, DemError
from ops.raster.crs import is_wgs84_lonlat, lonlat_transformer
from ops.terrain import vertical
from ops.terrain.dem_fill import MAX_HOLE_FRACTION as MAX_HOLE_FRACTION  # noqa: PLC0414 (re-export)
from ops.terrain.dem_fill import check_hole_share, fill_holes_laplace
from ops.terrain.dem_tiles import Transform6, list_sources, probe, read_nodes
from ops.terrain.geoid import (
    FLAG_NAN_NODE,
    FLAG_OUTSIDE,
    WRAP_NEAREST,
    WRAP_NONE,
    FloatArray,
    Geoid,
    describe_box,
    sample_bilinear,
)

#: Extra nodes read around a requested box, so that bilinear stencils and
#: hole filling near the box's edge have their neighbours.
MARGIN_NODES = 2
_ROWS_PER_CHUNK = 512

LonLatBox = tuple[float, float, float, float]


def _native_box(crs: CRS, box: LonLatBox) -> tuple[float, float, float, float]:
    """The box in the DEM's CRS (densified edges, so it encloses the lon/lat box)."""
    lon_min, lat_min, lon_max, lat_max = box
    if _is_wgs84(crs):
        return box
    t = lonlat_transformer(crs.to_wkt(), inverse=True)
    xmin, ymin, xmax, ymax = t.transform_bounds(lon_min, lat_min, lon_max, lat_max, densify_pts=21)
    return float(xmin), float(ymin), float(xmax), float(ymax)


def _is_wgs84(crs: CRS | str) -> bool:
    return is_wgs84_lonlat(crs if isinstance(crs, str) else crs.to_wkt())


def _check_box(box: Sequence[float], what: str) -> LonLatBox:
    lon_min, lat_min, lon_max, lat_max = (float(v) for v in box)
    if not (lon_min <= lon_max and lat_min <= lat_max) or not all(
        math.isfinite(v) for v in (lon_min, lat_min, lon_max, lat_max)
    ):
        raise DemError(
            f"{what} = {tuple(box)}; expected finite (lon_min, lat_min, lon_max, lat_max) "
            "with min <= max"
        )
    return lon_min, lat_min, lon_max, lat_max


@dataclass(frozen=True, slots=True, eq=False)
class Dem:
    """Ellipsoidal (or as-given) heights at grid nodes, sampled bilinearly.

    ``heights_m[i, j]`` is the height at the centre of pixel (i, j) of
    ``transform`` (rasterio order, pixel corners) in ``crs``; NaN marks holes
    left unfilled and gaps (``gap_mask``) no tile covered. ``vertical_datum``
    is the reference of the source heights ('ellipsoid', 'egm96', 'egm2008'
    or 'geoid'), ``vertical_reason`` how it is known; with a geoid grid
    (``geoid_source``) the heights were converted to ellipsoidal ones.
    """

    heights_m: NDArray[np.float32]
    transform: Transform6
    crs: str
    source: str
    holes_filled: int = 0
    holes_left: int = 0
    geoid_source: str | None = None
    gap_mask: NDArray[np.bool_] | None = None
    vertical_datum: str = "ellipsoid"
    vertical_reason: str = "heights given as ellipsoidal"

    def __post_init__(self) -> None:
        if self.heights_m.ndim != 2 or min(self.heights_m.shape) < 1:
            raise DemError(f"DEM {self.source}: heights shape {self.heights_m.shape}, expected 2-D")
        a, b, _, d, e, _ = self.transform
        if b != 0 or d != 0 or a <= 0 or e >= 0:
            raise DemError(
                f"DEM {self.source}: transform {self.transform}; expected north-up, unrotated "
                "(a > 0, b = d = 0, e < 0)"
            )

    # ------------------------------------------------------------------ build
    @classmethod
    def open(
        cls,
        source: str | Path | Sequence[str | Path],
        *,
        geoid: Geoid | str | Path | None = None,
        bounds_lonlat: Sequence[float] | None = None,
        fill_holes: bool = True,
        pad_deg: float = 0.0,
        require_bounds: bool = True,
        vertical_datum: str | None = None,
        max_hole_fraction: float = MAX_HOLE_FRACTION,
    ) -> Dem:
        """Read a DEM file, a folder of tiles or a list of files into one mosaic.

        ``geoid``: the geoid grid the files' heights are above (SRTM: EGM96);
        ``vertical_datum`` states their reference ('ellipsoid', 'egm96', 'egm2008')
        over what the files say (:mod:`ops.terrain.vertical`). A geoid reference
        without ``geoid`` is a DemError, as is a geoid for heights known to
        be ellipsoidal. ``max_hole_fraction``: see the module docstring.
        ``bounds_lonlat`` (lon_min, lat_min,
        lon_max, lat_max) reads only that area plus a margin, and raises
        DemCoverageError when the tiles do not cover all of it. ``pad_deg``
        more degrees around it are read where the tiles have them, and not
        required: a footprint must be covered, its surroundings are a bonus.
        With ``require_bounds=False`` the box only says what to read: a
        footprint box taken at an RPC's whole height range is far wider than
        the ground a sensor sees, and coverage is then enforced where heights
        are sampled (:meth:`heights` names the uncovered area).
        """
        if not (math.isfinite(pad_deg) and pad_deg >= 0.0):
            raise DemError(f"pad_deg = {pad_deg!r}, expected a finite number >= 0")
        if not (math.isfinite(max_hole_fraction) and 0.0 <= max_hole_fraction <= 1.0):
            raise DemError(f"max_hole_fraction = {max_hole_fraction!r}, expected 0..1")
        paths, name = list_sources(source)
        tiles = [probe(p) for p in paths]
        reference = vertical.stated(vertical_datum) if vertical_datum else vertical.combine(
            [(t.path, t.vertical) for t in tiles], name)
        geo = Geoid.open(geoid) if isinstance(geoid, (str, Path)) else geoid
        reference = vertical.check_geoid_use(reference, name, None if geo is None else geo.source)
        ref = tiles[0]
        for t in tiles[1:]:
            if t.crs != ref.crs:
                raise DemError(
                    f"DEM tiles in different CRSs: {ref.path} is {ref.crs}, {t.path} is {t.crs}; "
                    "expected one CRS (reproject the tiles first)"
                )
            if not np.allclose((t.transform[0], t.transform[4]), (ref.transform[0], ref.transform[4]),
                               rtol=1e-9, atol=0):
                raise DemError(
                    f"DEM tiles with different node spacing: {ref.path} has "
                    f"{ref.transform[0]} x {ref.transform[4]}, {t.path} has "
                    f"{t.transform[0]} x {t.transform[4]}; expected one resolution"
                )
        a, _, c, _, e, f = ref.transform
        offsets = []
        for t in tiles:
            x_west = t.transform[2]
            if ref.crs.is_geographic:  # across the antimeridian: keep tiles side by side
                x_west -= 360.0 * round((x_west - c) / 360.0)
            col_off, row_off = (x_west - c) / a, (t.transform[5] - f) / e
            if abs(col_off - round(col_off)) > 1e-3 or abs(row_off - round(row_off)) > 1e-3:
                raise DemError(
                    f"DEM tile {t.path} is offset by ({row_off:.4f}, {col_off:.4f}) nodes from "
                    f"{ref.path}; expected tiles on one node lattice (whole-node offsets)"
                )
            offsets.append((round(row_off), round(col_off)))
        r_lo = min(o[0] for o in offsets)
        c_lo = min(o[1] for o in offsets)
        r_hi = max(o[0] + t.height for o, t in zip(offsets, tiles))
        c_hi = max(o[1] + t.width for o, t in zip(offsets, tiles))
        x0, y0 = c + a / 2, f + e / 2  # node [0, 0] of the reference tile
        box: LonLatBox | None = None
        if bounds_lonlat is not None:
            box = _check_box(bounds_lonlat, "bounds_lonlat")
            if ref.crs.is_geographic:
                shift = 360.0 * round(((box[0] + box[2]) / 2 - (x0 + a * (c_lo + c_hi) / 2)) / 360)
                box = (box[0] - shift, box[1], box[2] - shift, box[3])
            wanted = (box[0] - pad_deg, max(-90.0, box[1] - pad_deg),
                      box[2] + pad_deg, min(90.0, box[3] + pad_deg))
            xmin, ymin, xmax, ymax = _native_box(ref.crs, wanted)
            r_lo = max(r_lo, math.floor((ymax - y0) / e) - MARGIN_NODES)
            r_hi = min(r_hi, math.ceil((ymin - y0) / e) + 1 + MARGIN_NODES)
            c_lo = max(c_lo, math.floor((xmin - x0) / a) - MARGIN_NODES)
            c_hi = min(c_hi, math.ceil((xmax - x0) / a) + 1 + MARGIN_NODES)
            if r_hi <= r_lo or c_hi <= c_lo:
                raise DemCoverageError(
                    f"DEM {name} does not cover the requested area lon [{box[0]}, {box[2]}], "
                    f"lat [{box[1]}, {box[3]}] at all; expected tiles covering it"
                )
        heights: NDArray[np.float32] = np.full((r_hi - r_lo, c_hi - c_lo), np.nan, dtype=np.float32)
        covered = np.zeros(heights.shape, dtype=bool)
        for (ro, co), t in zip(offsets, tiles):
            r0, r1 = max(ro, r_lo), min(ro + t.height, r_hi)
            c0, c1 = max(co, c_lo), min(co + t.width, c_hi)
            if r1 <= r0 or c1 <= c0:
                continue
            block = read_nodes(t, r0 - ro, r1 - ro, c0 - co, c1 - co)
            dst = heights[r0 - r_lo:r1 - r_lo, c0 - c_lo:c1 - c_lo]
            valid = ~np.isnan(block)
            dst[valid] = block[valid]
            covered[r0 - r_lo:r1 - r_lo, c0 - c_lo:c1 - c_lo] = True
        holes = covered & np.isnan(heights)
        if holes.sum() == covered.sum():
            raise DemError(f"DEM {name} holds only nodata in the area read; expected heights")
        if box is not None:
            xmin, ymin, xmax, ymax = _native_box(ref.crs, box)
            core = (slice(max(math.floor((ymax - y0) / e) - r_lo, 0),
                          max(math.ceil((ymin - y0) / e) + 1 - r_lo, 0)),
                    slice(max(math.floor((xmin - x0) / a) - c_lo, 0),
                          max(math.ceil((xmax - x0) / a) + 1 - c_lo, 0)))
            check_hole_share(name, holes[core], covered[core], max_hole_fraction,
                              f"lon [{box[0]}, {box[2]}], lat [{box[1]}, {box[3]}]")
        else:
            check_hole_share(name, holes, covered, max_hole_fraction, "the whole DEM")
        # no holes, no filling: nor scipy's import (0.06 s of a command's start)
        filled = fill_holes_laplace(heights, holes, covered) if fill_holes and holes.any() else 0
        transform: Transform6 = (a, 0.0, c + a * c_lo, 0.0, e, f + e * r_lo)
        dem = cls.from_array(
            heights, transform, ref.crs.to_string(), source=name, geoid=geo, fill_holes=False
        )
        gaps = None if covered.all() else ~covered
        if gaps is not None:
            gaps.flags.writeable = False
        dem = cls(dem.heights_m, dem.transform, dem.crs, name, filled, int(holes.sum()) - filled,
                  dem.geoid_source, gaps, reference.datum, reference.reason)
        if box is not None and require_bounds:
            dem._box_nodes(box)
        return dem

    @classmethod
    def from_array(
        cls,
        heights: ArrayLike,
        transform: Sequence[float],
        crs: str | CRS,
        *,
        source: str = "<array>",
        geoid: Geoid | str | Path | None = None,
        fill_holes: bool = True,
    ) -> Dem:
        """A DEM from a height array (NaN = hole) and its corner transform (a, b, c, d, e, f)."""
        grid = np.array(heights, dtype=np.float32)
        if grid.ndim != 2:
            raise DemError(f"DEM {source}: heights shape {grid.shape}, expected 2-D")
        t6 = tuple(float(v) for v in tuple(transform)[:6])
        if len(t6) != 6:
            raise DemError(f"DEM {source}: transform {transform!r}, expected 6 numbers")
        crs_text = crs.to_string() if isinstance(crs, CRS) else str(crs)
        try:
            pyproj.CRS.from_user_input(crs_text)
        except pyproj.exceptions.CRSError as exc:
            raise DemError(f"DEM {source}: CRS {crs_text!r} is not understood ({exc})") from exc
        holes = np.isnan(grid)
        filled = (fill_holes_laplace(grid, holes, np.ones_like(holes))
                  if fill_holes and holes.any() else 0)
        geo = Geoid.open(geoid) if isinstance(geoid, (str, Path)) else geoid
        datum, reason = ("ellipsoid", "heights given as ellipsoidal") if geo is None else (
            "geoid", f"heights given above the geoid grid {geo.source}")
        dem = cls(grid, (t6[0], t6[1], t6[2], t6[3], t6[4], t6[5]), crs_text, source, filled,
                  int(holes.sum()) - filled, None if geo is None else geo.source, None,
                  datum, reason)
        if geo is not None:
            dem._add_undulation(geo)
        grid.flags.writeable = False
        return dem

    def _add_undulation(self, geoid: Geoid) -> None:
        """h = H + N at every node, in row chunks (bounded memory)."""
        n_rows, n_cols = self.heights_m.shape
        cols = np.arange(n_cols, dtype=np.float64)
        for r0 in range(0, n_rows, _ROWS_PER_CHUNK):
            rows = np.arange(r0, min(r0 + _ROWS_PER_CHUNK, n_rows), dtype=np.float64)
            x, y = self.node_xy(rows[:, None], cols[None, :])
            lon, lat = self._to_lonlat(x, y)
            block = self.heights_m[r0:r0 + rows.size]
            block += geoid.undulation(lon, lat).astype(np.float32)

    # ----------------------------------------------------------- geometry
    @property
    def is_lonlat(self) -> bool:
        """True when the grid's CRS is WGS84 longitude/latitude."""
        return _is_wgs84(self.crs)

    def node_xy(self, rows: ArrayLike, cols: ArrayLike) -> tuple[FloatArray, FloatArray]:
        """CRS coordinates of nodes (fractional indices allowed)."""
        a, _, c, _, e, f = self.transform
        r = np.asarray(rows, dtype=np.float64)
        k = np.asarray(cols, dtype=np.float64)
        return a * (k + 0.5) + c, e * (r + 0.5) + f

    def _to_lonlat(self, x: FloatArray, y: FloatArray) -> tuple[FloatArray, FloatArray]:
        if self.is_lonlat:
            return np.broadcast_arrays(x, y)  # type: ignore[return-value]
        t = lonlat_transformer(self.crs)
        xb, yb = np.broadcast_arrays(x, y)
        lon, lat = t.transform(xb, yb)
        return np.asarray(lon, np.float64), np.asarray(lat, np.float64)

    def _to_native(self, lon: ArrayLike, lat: ArrayLike) -> tuple[FloatArray, FloatArray]:
        lo, la = np.broadcast_arrays(np.asarray(lon, np.float64), np.asarray(lat, np.float64))
        if self.is_lonlat:
            return lo, la
        t = lonlat_transformer(self.crs, inverse=True)
        x, y = t.transform(lo, la)
        return np.asarray(x, np.float64), np.asarray(y, np.float64)

    @property
    def bounds_native(self) -> tuple[float, float, float, float]:
        """(left, bottom, right, top) of the pixel footprint in the DEM's CRS."""
        a, _, c, _, e, f = self.transform
        n_rows, n_cols = self.heights_m.shape
        return c, f + e * n_rows, c + a * n_cols, f

    @property
    def bounds_lonlat(self) -> LonLatBox:
        """(lon_min, lat_min, lon_max, lat_max) enclosing the pixel footprint."""
        left, bottom, right, top = self.bounds_native
        if self.is_lonlat:
            return left, bottom, right, top
        t = lonlat_transformer(self.crs)
        b = t.transform_bounds(left, bottom, right, top, densify_pts=21)
        return float(b[0]), float(b[1]), float(b[2]), float(b[3])

    def _center_lon(self) -> float:
        left, _, right, _ = self.bounds_native
        return (left + right) / 2

    # ----------------------------------------------------------- sampling
    def heights(self, lon: ArrayLike, lat: ArrayLike, *, strict: bool = True) -> FloatArray:
        """Bilinear heights (metres; ellipsoidal when a geoid was given) at (lon, lat) degrees.

        NaN coordinates give NaN. Raises DemCoverageError for points outside
        the DEM or beside a gap, DemError for points on an unfilled hole; with
        ``strict=False`` those points get NaN instead (for iterative callers
        that probe beyond the DEM and mask afterwards).
        """
        x, y = self._to_native(lon, lat)
        a, _, c, _, e, f = self.transform
        s = sample_bilinear(
            self.heights_m, (c + a / 2, f + e / 2), (a, e), x, y,
            wrap_mode=WRAP_NEAREST if self.is_lonlat else WRAP_NONE, wrap_ref=self._center_lon(),
        )
        if s.n_bad and strict:
            lo, la = np.broadcast_arrays(np.asarray(lon, np.float64), np.asarray(lat, np.float64))
            nan_node = s.flags == FLAG_NAN_NODE
            in_gap = np.zeros(nan_node.shape, dtype=bool)
            if self.gap_mask is not None and nan_node.any():
                in_gap[nan_node] = self._stencil_touches(self.gap_mask, x[nan_node], y[nan_node])
            outside = (s.flags == FLAG_OUTSIDE) | in_gap
            if outside.any():
                raise DemCoverageError(
                    f"DEM {self.source} (covering {self._extent_text()}) does not cover "
                    f"{describe_box(lo[outside], la[outside])}; expected points inside the DEM "
                    "(open it with tiles covering that area)"
                )
            raise DemError(
                f"DEM {self.source} has a nodata hole at {describe_box(lo[nan_node], la[nan_node])}"
                f"; first at lon {lo[nan_node][0]:.6f}, lat {la[nan_node][0]:.6f}. Open it with "
                "fill_holes=True to interpolate holes"
            )
        return s.values

    def _stencil_touches(self, mask: NDArray[np.bool_], x: FloatArray, y: FloatArray
                         ) -> NDArray[np.bool_]:
        """Whether a weighted node of each point's bilinear stencil is in ``mask``."""
        a, _, c, _, e, f = self.transform
        n_rows, n_cols = mask.shape
        r = np.clip((y - (f + e / 2)) / e, 0, n_rows - 1)
        k = np.clip((x - (c + a / 2)) / a, 0, n_cols - 1)
        hit = np.zeros(r.shape, dtype=bool)
        for rr in (np.floor(r), np.ceil(r)):
            for kk in (np.floor(k), np.ceil(k)):
                hit |= mask[rr.astype(np.int64), kk.astype(np.int64)]
        return hit

    def _box_nodes(self, box: LonLatBox) -> tuple[slice, slice]:
        """Node slices whose bilinear stencils reach into the lon/lat box; raises if uncovered."""
        if self.is_lonlat:
            shift = 360.0 * round(((box[0] + box[2]) / 2 - self._center_lon()) / 360)
            xmin, ymin, xmax, ymax = box[0] - shift, box[1], box[2] - shift, box[3]
        else:
            xmin, ymin, xmax, ymax = _native_box(CRS.from_user_input(self.crs), box)
        a, _, c, _, e, f = self.transform
        n_rows, n_cols = self.heights_m.shape
        r_lo, r_hi = (ymax - (f + e / 2)) / e, (ymin - (f + e / 2)) / e
        c_lo, c_hi = (xmin - (c + a / 2)) / a, (xmax - (c + a / 2)) / a
        eps = 1e-6
        if r_lo < -0.5 - eps or c_lo < -0.5 - eps or r_hi > n_rows - 0.5 + eps or (
            c_hi > n_cols - 0.5 + eps
        ):
            raise DemCoverageError(
                f"DEM {self.source} (covering {self._extent_text()}) does not cover the area "
                f"lon [{box[0]}, {box[2]}], lat [{box[1]}, {box[3]}]; expected a DEM covering it"
            )
        rows = slice(max(math.floor(r_lo), 0), min(math.ceil(r_hi), n_rows - 1) + 1)
        cols = slice(max(math.floor(c_lo), 0), min(math.ceil(c_hi), n_cols - 1) + 1)
        if self.gap_mask is not None and self.gap_mask[rows, cols].any():
            raise DemCoverageError(
                f"DEM {self.source} has no tile for part of the area lon [{box[0]}, {box[2]}], "
                f"lat [{box[1]}, {box[3]}]; expected tiles covering it"
            )
        return rows, cols

    def min_max(self, lon_min: float, lat_min: float, lon_max: float, lat_max: float
                ) -> tuple[float, float]:
        """(hmin, hmax) over every node whose stencil reaches into the footprint box.

        Conservative: every bilinear height inside the box lies in this range.
        """
        box = _check_box((lon_min, lat_min, lon_max, lat_max), "min_max footprint")
        rows, cols = self._box_nodes(box)
        block = self.heights_m[rows, cols]
        if np.isnan(block).any():
            i, j = np.argwhere(np.isnan(block))[0]
            x, y = self.node_xy(rows.start + i, cols.start + j)
            lon, lat = self._to_lonlat(np.atleast_1d(x), np.atleast_1d(y))
            raise DemError(
                f"DEM {self.source} has a nodata hole in the footprint {box}, e.g. at lon "
                f"{float(lon[0]):.6f}, lat {float(lat[0]):.6f}; open it with fill_holes=True"
            )
        return float(block.min()), float(block.max())

    def _extent_text(self) -> str:
        b = self.bounds_lonlat
        return f"lon [{b[0]:.6f}, {b[2]:.6f}], lat [{b[1]:.6f}, {b[3]:.6f}]"
