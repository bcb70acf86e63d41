"""Map projections for products: the UTM zone of a footprint and the sensor's GSD.

* :func:`utm_crs` picks the WGS84 / UTM zone (EPSG:326zz north, 327zz south)
  holding a longitude/latitude by :func:`planner.geometry.grid.utm_zone`, the one
  rule the planner's grids use too (Norway and Svalbard exceptions of the
  official layout, longitude 180 in zone 60), so that plan-time grids and
  products agree; errors come back as GeometryError.
* :func:`sensor_gsd_m` derives the ground sample distance of an RPC sensor at
  a ground point: the RPC's Jacobian with respect to local east/north metres
  (WGS84 radii of curvature) gives the ground area of one image pixel, and
  the GSD is the side of the square of that area. For an off-nadir view the
  pixel footprint is a parallelogram; its area-equivalent side is what keeps
  the ortho's pixel count equal to the raw image's.
* :func:`lonlat_transformer` caches pyproj transformers (always x/y, i.e.
  lon/lat order) since building one costs milliseconds; every module of
  ``ops`` that maps to or from lon/lat goes through it, and through
  :func:`is_wgs84_lonlat` (cached too) to tell a lon/lat grid.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
from pyproj import CRS, Transformer
from pyproj.exceptions import CRSError

from ops.errors import GeometryError
from ops.sensor.rpc import RpcModel
from planner.geometry import grid
from planner.geometry.errors import GridError

WGS84_A_M = 6378137.0
WGS84_E2 = 6.69437999014e-3


def utm_zone(lon: float, lat: float) -> int:
    """The UTM zone number (1..60) holding a point: :func:`planner.geometry.grid.utm_zone`'s rule."""
    try:
        return grid.utm_zone(lon, lat)
    except GridError as exc:
        raise GeometryError(str(exc)) from None


def utm_crs(lon: float, lat: float) -> str:
    """The WGS84 / UTM CRS ('EPSG:326zz' or 'EPSG:327zz') holding a point."""
    zone = utm_zone(lon, lat)
    return f"EPSG:{32600 + zone if lat >= 0.0 else 32700 + zone}"


def check_crs(crs: str) -> str:
    """Validate a user CRS string; return it unchanged, or raise naming it."""
    try:
        parsed = CRS.from_user_input(crs)
    except CRSError as exc:
        raise GeometryError(
            f"--crs {crs!r} is not a CRS PROJ understands ({exc}); expected e.g. 'EPSG:32631'"
        ) from exc
    if parsed.is_geographic:
        return crs
    if not parsed.is_projected:
        raise GeometryError(f"--crs {crs!r} is neither projected nor geographic")
    return crs


@lru_cache(maxsize=64)
def is_wgs84_lonlat(crs: str) -> bool:
    """Whether a CRS (any PROJ string or WKT) is WGS84 longitude/latitude, either axis order."""
    return bool(CRS.from_user_input(crs).equals(CRS.from_epsg(4326), ignore_axis_order=True))


@lru_cache(maxsize=128)
def transformer(src_crs: str, dst_crs: str) -> Transformer:
    """The one cached transformer from ``src_crs`` to ``dst_crs``, x/y (lon/lat) order.

    Every transformer in ``ops`` comes from here: PROJ builds one in milliseconds,
    and tiles ask for the same few pairs of CRS thousands of times.
    """
    return Transformer.from_crs(src_crs, dst_crs, always_xy=True)


def lonlat_transformer(crs: str, *, inverse: bool = False) -> Transformer:
    """Transformer from ``crs`` to WGS84 lon/lat (or back with ``inverse``), x/y order."""
    return transformer("EPSG:4326", crs) if inverse else transformer(crs, "EPSG:4326")


def metres_per_degree(lat: float) -> tuple[float, float]:
    """Ground metres per degree of (longitude, latitude) at a latitude, on WGS84."""
    phi = math.radians(lat)
    w = 1.0 - WGS84_E2 * math.sin(phi) ** 2
    meridian_m = WGS84_A_M * (1.0 - WGS84_E2) / w**1.5
    normal_m = WGS84_A_M / math.sqrt(w)
    return math.radians(1.0) * normal_m * math.cos(phi), math.radians(1.0) * meridian_m


def sensor_gsd_m(rpc: RpcModel, lon: float, lat: float, h: float) -> float:
    """Area-equivalent ground sample distance (metres) of the sensor at a ground point."""
    m_lon, m_lat = metres_per_degree(lat)
    step_m = 1.0
    lons = np.array([lon - step_m / m_lon, lon + step_m / m_lon, lon, lon])
    lats = np.array([lat, lat, lat - step_m / m_lat, lat + step_m / m_lat])
    rows, cols = rpc.project(lons, lats, np.full(4, h), check=False)
    # d(row, col) / d(east, north), in pixels per metre.
    jac = np.array(
        [
            [(rows[1] - rows[0]) / (2 * step_m), (rows[3] - rows[2]) / (2 * step_m)],
            [(cols[1] - cols[0]) / (2 * step_m), (cols[3] - cols[2]) / (2 * step_m)],
        ]
    )
    det = abs(float(np.linalg.det(jac)))
    if not math.isfinite(det) or det == 0.0:
        raise GeometryError(
            f"{rpc.source}: the RPC is degenerate at lon/lat/h ({lon}, {lat}, {h}); "
            "cannot derive a GSD, pass --gsd"
        )
    return 1.0 / math.sqrt(det)


def round_gsd_m(gsd_m: float) -> float:
    """A GSD rounded to 2 significant digits (0.5123 -> 0.51, 2.96 -> 3.0)."""
    if not (math.isfinite(gsd_m) and gsd_m > 0.0):
        raise GeometryError(f"GSD {gsd_m!r} m, expected a positive finite number")
    digits = 1 - math.floor(math.log10(gsd_m))
    return round(gsd_m, digits)
