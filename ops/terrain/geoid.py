"""Geoid undulation grids, and the bilinear node-grid sampler DEMs share.

A geoid grid gives the undulation N (metres) of a geoid above the WGS84
ellipsoid at the nodes of a regular longitude/latitude grid. A height H above
the geoid (what SRTM stores) becomes an ellipsoidal height h = H + N, which is
what RPC models expect.

Grid model (shared with :mod:`ops.terrain.dem`): a 2-D array ``values[i, j]`` holds
the quantity at node (x0 + j*dx, y0 + i*dy), i.e. integer indices are pixel
centres. A point (x, y) has fractional indices ``col = (x - x0)/dx`` and
``row = (y - y0)/dy`` and its value is the bilinear blend of the four
surrounding nodes::

    v = (1-fr)(1-fc) v[i, j] + (1-fr) fc v[i, j+1] + fr (1-fc) v[i+1, j] + fr fc v[i+1, j+1]

with i = floor(row), fr = row - i (likewise j, fc). A point is covered when it
lies inside the grid's pixel footprint, ``-0.5 <= row <= rows - 0.5``; in the
outer half pixel the fractional index is clamped to the edge nodes (constant
extrapolation across the border). Nodes with zero weight are never read, so a
point exactly on a valid node beside a hole still samples.

Longitudes: a grid spanning 360 degrees is periodic. Its first column is
appended after the last one, so that a point east of the last node blends it
with the first (with the EGM96 ``.gtx`` nodes at -180 .. 179.75, 179.9 E
blends 179.75 E with 180 E = -180 E). Longitudes are first brought into the
grid's 360-degree range, so 0..360 and -180..180 inputs both work (NGA's test
point at 359.9995 E lands at -0.0005 E).

File formats read by :meth:`Geoid.open`:

* ``.gtx`` (NOAA/PROJ vertical grid): a 40-byte big-endian header of four
  float64 (south latitude, west longitude, latitude step, longitude step, all
  in degrees, the first two being the south-west *node*) and two int32 (rows,
  columns), then rows x columns big-endian float32 from south to north, west
  to east; -88.8888 marks missing values. Read here directly (GDAL's reading
  of the same file is the independent check in the tests).
* anything GDAL reads in a geographic CRS (GeoTIFF...), band 1, through
  rasterio.

A file opened as a geoid is checked to be one, so that a DEM tile passed by
mistake is refused rather than added to the heights: its values are floats,
within :data:`UNDULATION_RANGE_M` (the geoid lies -107..+86 m from the
ellipsoid), and it spans at least :data:`MIN_GEOID_SPAN_DEG` each way (a
SRTM tile spans one degree, EGM96 the globe).

Sampling is compiled with numba: one pass over the points, no temporaries.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
import rasterio.errors
from numba import njit
from numpy.typing import ArrayLike, NDArray

from ops.errors import DemCoverageError, DemError, RasterReadError
from ops.raster import vsi

FloatArray = NDArray[np.float64]

#: Tolerance, in pixels, on the footprint test (round-off at the edges).
EDGE_EPS_PX = 1e-6

#: Sampling flags written by the kernel for each point.
FLAG_OK = 0
FLAG_OUTSIDE = 1
FLAG_NAN_NODE = 2

#: Longitude handling: as given; brought to within 180 degrees of a centre;
#: brought into [x0, x0 + 360) of a periodic grid.
WRAP_NONE = 0
WRAP_NEAREST = 1
WRAP_PERIODIC = 2

#: Geoid undulations (EGM96, EGM2008) lie within these bounds everywhere, in metres.
UNDULATION_RANGE_M = (-110.0, 90.0)
#: A geoid grid spans at least this many degrees of longitude and of latitude.
MIN_GEOID_SPAN_DEG = 2.0

GTX_HEADER = struct.Struct(">4d2i")
#: Largest .gtx read (EGM2008 at 1' is 933 MB; EGM96 at 15', 4 MB).
GTX_MAX_BYTES = 1 << 30
GTX_NODATA = -88.8888


@njit(cache=True, nogil=True, inline="always")
def _lerp(a: float, b: float, f: float) -> float:
    """``a`` at f = 0, ``b`` at f = 1; a node of zero weight is not used (a NaN there stays out)."""
    if f == 0.0:
        return a
    if f == 1.0:
        return b
    return (1.0 - f) * a + f * b


@njit(cache=True, nogil=True, inline="always")
def node_bilinear(values: NDArray[np.floating], r: float, c: float, guarded: bool) -> float:
    """The one DEM/geoid sampling rule, at fractional node (row r, col c) of a node grid.

    Inside the grid's pixel footprint (``-0.5 <= r <= rows - 0.5``, likewise
    c, within :data:`EDGE_EPS_PX`) the value is the bilinear blend of the four
    surrounding nodes, the index clamped to the edge nodes in the outer half
    pixel; outside it, NaN (no height: :meth:`ops.terrain.dem.Dem.heights` raises,
    the ortho kernel writes nodata). Nodes of zero weight are not read, so a
    point on a valid node beside a hole samples. Compiled inline into the
    samplers of :func:`sample_bilinear` and of :mod:`ops.ortho.kernel`.

    ``guarded=False`` leaves out the footprint test and the zero-weight
    branches, for a caller that knows every point is inside the footprint of
    a grid without NaN: the numbers are then the same (a zero weight times a
    finite node adds an exact zero), without a test per point.
    """
    n_rows, n_cols = values.shape
    if guarded and not (-0.5 - EDGE_EPS_PX <= r <= n_rows - 0.5 + EDGE_EPS_PX
                        and -0.5 - EDGE_EPS_PX <= c <= n_cols - 0.5 + EDGE_EPS_PX):
        return math.nan
    r = min(max(r, 0.0), n_rows - 1.0)
    c = min(max(c, 0.0), n_cols - 1.0)
    # int() truncates: the floor of the clamped, non-negative r, c (cheaper than math.floor).
    i = max(min(int(r), n_rows - 2), 0)
    j = max(min(int(c), n_cols - 2), 0)
    fr = r - i
    fc = c - j
    i1 = min(i + 1, n_rows - 1)
    j1 = min(j + 1, n_cols - 1)
    if not guarded:
        h: float = ((1.0 - fr) * ((1.0 - fc) * values[i, j] + fc * values[i, j1])
                    + fr * ((1.0 - fc) * values[i1, j] + fc * values[i1, j1]))
        return h
    top = _lerp(values[i, j], values[i, j1], fc)
    if fr == 0.0:
        return top
    return _lerp(top, _lerp(values[i1, j], values[i1, j1], fc), fr)


@njit(cache=True, nogil=True)
def _sample_kernel(
    values: NDArray[np.floating],
    x0: float,
    dx: float,
    y0: float,
    dy: float,
    xs: FloatArray,
    ys: FloatArray,
    wrap_mode: int,
    wrap_ref: float,
    out: FloatArray,
    flags: NDArray[np.uint8],
) -> int:
    bad = 0
    for k in range(xs.size):
        x = xs[k]
        y = ys[k]
        flags[k] = 0
        if math.isnan(x) or math.isnan(y):
            out[k] = math.nan
            continue
        if wrap_mode == 1:
            x = x - 360.0 * math.floor((x - wrap_ref) / 360.0 + 0.5)
        elif wrap_mode == 2:
            x = wrap_ref + (x - wrap_ref) % 360.0
        v = node_bilinear(values, (y - y0) / dy, (x - x0) / dx, True)
        out[k] = v
        if math.isnan(v):
            # NaN from a finite point: outside the footprint, or a NaN node with weight
            n_rows, n_cols = values.shape
            r = (y - y0) / dy
            c = (x - x0) / dx
            inside = (-0.5 - EDGE_EPS_PX <= r <= n_rows - 0.5 + EDGE_EPS_PX
                      and -0.5 - EDGE_EPS_PX <= c <= n_cols - 0.5 + EDGE_EPS_PX)
            flags[k] = 2 if inside else 1
            bad += 1
    return bad


@dataclass(frozen=True, slots=True)
class GridSample:
    """Values sampled at points, with a per-point flag (FLAG_OK/OUTSIDE/NAN_NODE)."""

    values: FloatArray
    flags: NDArray[np.uint8]
    n_bad: int


def sample_bilinear(
    values: NDArray[np.floating],
    node0_xy: tuple[float, float],
    step_xy: tuple[float, float],
    x: ArrayLike,
    y: ArrayLike,
    *,
    wrap_mode: int = WRAP_NONE,
    wrap_ref: float = 0.0,
) -> GridSample:
    """Bilinear values of a node grid at points (x, y), shaped like broadcast(x, y).

    ``node0_xy`` is the (x, y) of node [0, 0] (a pixel centre) and ``step_xy``
    the signed node spacing (dx, dy). NaN coordinates give NaN with FLAG_OK;
    points outside the grid's footprint, or whose weighted nodes include a
    NaN, give NaN and are flagged (see the module docstring).
    """
    xa, ya = np.broadcast_arrays(np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64))
    shape = xa.shape
    xs = np.ascontiguousarray(xa, dtype=np.float64).reshape(-1)
    ys = np.ascontiguousarray(ya, dtype=np.float64).reshape(-1)
    # float64 grids (a constant DEM) keep their precision; anything else samples as float32
    grid: NDArray[np.floating] = np.ascontiguousarray(
        values, dtype=np.float64 if np.asarray(values).dtype == np.float64 else np.float32)
    out = np.empty(xs.size, dtype=np.float64)
    flags = np.empty(xs.size, dtype=np.uint8)
    n_bad = _sample_kernel(
        grid,
        float(node0_xy[0]),
        float(step_xy[0]),
        float(node0_xy[1]),
        float(step_xy[1]),
        xs,
        ys,
        int(wrap_mode),
        float(wrap_ref),
        out,
        flags,
    )
    return GridSample(out.reshape(shape), flags.reshape(shape), int(n_bad))


def describe_box(lon: FloatArray, lat: FloatArray) -> str:
    """'lon [a, b], lat [c, d] (n points)' for the finite points given."""
    return (
        f"lon [{np.nanmin(lon):.6f}, {np.nanmax(lon):.6f}], "
        f"lat [{np.nanmin(lat):.6f}, {np.nanmax(lat):.6f}] ({lon.size} point(s))"
    )


@dataclass(frozen=True, slots=True, eq=False)
class Geoid:
    """Geoid undulation (metres above WGS84) on a regular lon/lat node grid.

    ``undulation_grid_m[i, j]`` is the undulation at longitude
    ``lon0_deg + j*dlon_deg`` and latitude ``lat0_deg + i*dlat_deg``; for a
    periodic grid the first column is repeated once more after the last.
    """

    undulation_grid_m: NDArray[np.float32]
    lon0_deg: float
    lat0_deg: float
    dlon_deg: float
    dlat_deg: float
    periodic: bool
    source: str

    def __post_init__(self) -> None:
        grid = self.undulation_grid_m
        if grid.ndim != 2 or min(grid.shape) < 1:
            raise DemError(f"geoid {self.source}: grid shape {grid.shape}, expected 2-D, non-empty")
        if not (self.dlon_deg > 0 and self.dlat_deg != 0):
            raise DemError(
                f"geoid {self.source}: steps dlon={self.dlon_deg}, dlat={self.dlat_deg}; "
                "expected dlon > 0 (west to east) and dlat != 0"
            )

    @classmethod
    def from_array(
        cls,
        undulation_m: ArrayLike,
        *,
        lon0_deg: float,
        lat0_deg: float,
        dlon_deg: float,
        dlat_deg: float,
        source: str = "<array>",
    ) -> Geoid:
        """A geoid from node values; row i at lat0 + i*dlat, column j at lon0 + j*dlon."""
        grid = np.asarray(undulation_m, dtype=np.float32)
        if grid.ndim != 2 or min(grid.shape) < 1:
            raise DemError(f"geoid {source}: grid shape {grid.shape}, expected 2-D, non-empty")
        span_deg = grid.shape[1] * float(dlon_deg)
        periodic = span_deg >= 360.0 - 1e-6 * abs(float(dlon_deg))
        if periodic and abs(span_deg - 360.0) <= 1e-6 * abs(float(dlon_deg)):
            # Exactly 360 degrees of nodes: close the ring with the first column.
            grid = np.concatenate([grid, grid[:, :1]], axis=1)
        return cls(
            np.ascontiguousarray(grid),
            float(lon0_deg),
            float(lat0_deg),
            float(dlon_deg),
            float(dlat_deg),
            bool(periodic),
            source,
        )

    @classmethod
    def open(cls, path: str | Path) -> Geoid:
        """Read a ``.gtx`` grid, or any geographic raster GDAL reads (band 1).

        ``path`` may be remote (``s3://``, ``https://``, ``/vsis3/``...; see
        :mod:`ops.raster.vsi`). The grid is checked to be a geoid (module docstring).
        """
        p = vsi.gdal_path(path)
        with vsi.remote_timeouts(p):
            if not vsi.is_file(p):
                raise RasterReadError(
                    f"geoid grid not found: {p} (expected an EGM96 .gtx or a geographic GeoTIFF)"
                )
            geoid, dtype = (cls._open_gtx(p), "float32") if p.lower().endswith(".gtx") else (
                cls._open_gdal(p))
        geoid._check_is_a_geoid(dtype)
        return geoid

    def _check_is_a_geoid(self, dtype: str) -> None:
        """DemError unless the grid looks like geoid undulations (see the module docstring)."""
        hint = "; expected a geoid grid such as EGM96's egm96_15.gtx (is this a DEM?)"
        if not dtype.startswith("float"):
            raise DemError(f"geoid grid {self.source}: data type {dtype}, not floating point{hint}")
        grid = self.undulation_grid_m
        finite = grid[np.isfinite(grid)]
        if finite.size == 0:
            raise DemError(f"geoid grid {self.source} holds no values{hint}")
        lo, hi = float(finite.min()), float(finite.max())
        if lo < UNDULATION_RANGE_M[0] or hi > UNDULATION_RANGE_M[1]:
            raise DemError(
                f"geoid grid {self.source}: values {lo:.1f}..{hi:.1f} m, outside the "
                f"{UNDULATION_RANGE_M[0]:g}..+{UNDULATION_RANGE_M[1]:g} m of any geoid{hint}"
            )
        rows, cols = grid.shape
        span_lon = 360.0 if self.periodic else cols * self.dlon_deg
        span_lat = rows * abs(self.dlat_deg)
        if min(span_lon, span_lat) < MIN_GEOID_SPAN_DEG:
            raise DemError(
                f"geoid grid {self.source} spans {span_lon:g} x {span_lat:g} degrees, less than "
                f"the {MIN_GEOID_SPAN_DEG:g} degrees each way of a global or regional geoid{hint}"
            )

    @classmethod
    def _open_gtx(cls, path: str) -> Geoid:
        try:
            raw = vsi.read_bytes(path, GTX_MAX_BYTES)
        except OSError as exc:
            raise RasterReadError(f"cannot read geoid grid {path}: {exc}") from exc
        if len(raw) < GTX_HEADER.size:
            raise DemError(f"geoid grid {path}: {len(raw)} bytes, shorter than the 40-byte header")
        lat0, lon0, dlat, dlon, rows, cols = GTX_HEADER.unpack_from(raw)
        expected = GTX_HEADER.size + 4 * rows * cols
        if rows < 1 or cols < 1 or len(raw) != expected:
            raise DemError(
                f"geoid grid {path}: header says {rows} x {cols} nodes ({expected} bytes), "
                f"file has {len(raw)} bytes; expected a .gtx file"
            )
        grid = np.frombuffer(raw, dtype=">f4", offset=GTX_HEADER.size).reshape(rows, cols)
        grid = grid.astype(np.float32)
        grid[grid == np.float32(GTX_NODATA)] = np.nan  # exact, as GDAL and PROJ do
        return cls.from_array(
            grid, lon0_deg=lon0, lat0_deg=lat0, dlon_deg=dlon, dlat_deg=dlat, source=str(path)
        )

    @classmethod
    def _open_gdal(cls, path: str) -> tuple[Geoid, str]:
        try:
            with rasterio.open(path) as ds:
                if ds.crs is None or not ds.crs.is_geographic:
                    raise DemError(
                        f"geoid grid {path}: CRS {ds.crs}, expected a geographic (lon/lat) CRS"
                    )
                a, b, c, d, e, f = tuple(ds.transform)[:6]
                if b != 0 or d != 0:
                    raise DemError(f"geoid grid {path}: rotated geotransform {ds.transform}")
                dtype = str(ds.dtypes[0])
                grid = ds.read(1, masked=True).astype(np.float32).filled(np.nan)
        except rasterio.errors.RasterioIOError as exc:
            raise RasterReadError(f"cannot read geoid grid {path}: {exc}") from exc
        if a < 0:  # east-to-west columns: flip into the west-to-east order sampled here
            grid = grid[:, ::-1]
            c, a = c + a * grid.shape[1], -a
        return cls.from_array(
            grid,
            lon0_deg=c + a / 2,
            lat0_deg=f + e / 2,
            dlon_deg=a,
            dlat_deg=e,
            source=str(path),
        ), dtype

    def undulation(self, lon: ArrayLike, lat: ArrayLike) -> FloatArray:
        """Geoid height above the WGS84 ellipsoid (metres, bilinear) at (lon, lat) degrees.

        Raises DemCoverageError naming the grid and the out-of-coverage box for
        points the grid does not cover, or whose nodes are missing values.
        """
        s = sample_bilinear(
            self.undulation_grid_m,
            (self.lon0_deg, self.lat0_deg),
            (self.dlon_deg, self.dlat_deg),
            lon,
            lat,
            wrap_mode=WRAP_PERIODIC if self.periodic else WRAP_NEAREST,
            wrap_ref=self.lon0_deg if self.periodic else self.center_lon_deg,
        )
        if s.n_bad:
            lon_a, lat_a = np.broadcast_arrays(np.asarray(lon, float), np.asarray(lat, float))
            bad = s.flags != FLAG_OK
            raise DemCoverageError(
                f"geoid grid {self.source} (covering {self._extent_text()}) has no value at "
                f"{describe_box(lon_a[bad], lat_a[bad])}; expected points inside the grid"
            )
        return s.values

    @property
    def center_lon_deg(self) -> float:
        """Longitude of the middle of the node grid."""
        return float(self.lon0_deg + self.dlon_deg * (self.undulation_grid_m.shape[1] - 1) / 2)

    def _extent_text(self) -> str:
        rows, cols = self.undulation_grid_m.shape
        lats = sorted((self.lat0_deg, self.lat0_deg + (rows - 1) * self.dlat_deg))
        if self.periodic:
            return f"all longitudes, node latitudes [{lats[0]}, {lats[1]}]"
        return (
            f"node longitudes [{self.lon0_deg}, {self.lon0_deg + (cols - 1) * self.dlon_deg}], "
            f"node latitudes [{lats[0]}, {lats[1]}]"
        )
