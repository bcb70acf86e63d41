"""Input-window declaration for map-grid tiles of a sensor image (the tile-model contract).

For an output tile on a map grid, an ortho-like operation reads the raw
image only where the tile's ground projects. :func:`declare_input_window`
computes that window before any pixel is read, from the sensor model and the
DEM's height range over the tile:

1. Sample the tile: its four outer corners, points every ``spacing_px``
   along its boundary (pixel edges, not only centres) and an interior grid.
2. Map them to longitude/latitude (pyproj) and project each through the RPC
   at the lowest and the highest DEM height over the tile (plus
   ``HEIGHT_PAD_M``). A ground point at any height in between projects on
   the short, nearly straight segment between those two image points.
3. Bound all projections, add ``margin_px`` (the resampling kernel's support
   plus safety) and ``SAMPLING_PAD_PX`` (the mapping's curvature between
   samples: a smooth RPC over ``spacing_px`` output pixels bends by far less
   than this), and clip to the image. ``None`` means the tile sees nothing of
   the image.

The guarantee, checked by a property test on a real Pléiades RPC: every
output pixel of the tile, at any height in the DEM's range, projects inside
the declared window shrunk by ``margin_px``.
"""

from __future__ import annotations

import math
from typing import Protocol

import numpy as np
from numpy.typing import NDArray

from ops.errors import GeometryError
from ops.raster.crs import lonlat_transformer
from ops.sensor.rpc import RpcModel
from planner.geometry.grid import GeoBox, Window

FloatArray = NDArray[np.float64]

#: Metres added below and above the DEM's min/max (DEM interpolation, rounding).
HEIGHT_PAD_M = 1.0
#: Pixels added for the mapping's bending between boundary samples.
SAMPLING_PAD_PX = 0.5


class HeightRange(Protocol):
    """Anything with ``min_max(lon_min, lat_min, lon_max, lat_max) -> (hmin, hmax)``.

    ``ops.terrain.dem.Dem`` is one; the declaration also accepts a plain (hmin, hmax) pair.
    """

    def min_max(
        self, lon_min: float, lat_min: float, lon_max: float, lat_max: float
    ) -> tuple[float, float]: ...


def tile_samples(geobox: GeoBox, spacing_px: int = 32) -> tuple[FloatArray, FloatArray]:
    """Fractional (row, col) sample points of a geobox: its outer edge and an interior grid.

    Rows/cols follow the numpy convention (integer = pixel centre), so the
    outer pixel edges are at -0.5 and ``height - 0.5``.
    """
    if spacing_px < 1:
        raise GeometryError(f"sample spacing {spacing_px} px, expected >= 1")
    h, w = geobox.height, geobox.width
    r_edge = np.linspace(-0.5, h - 0.5, max(2, math.ceil(h / spacing_px) + 1))
    c_edge = np.linspace(-0.5, w - 0.5, max(2, math.ceil(w / spacing_px) + 1))
    rr, cc = np.meshgrid(r_edge, c_edge, indexing="ij")
    return rr.ravel(), cc.ravel()


def geobox_lonlat(geobox: GeoBox, spacing_px: int = 32) -> tuple[FloatArray, FloatArray]:
    """Longitude/latitude of a geobox's sample points (see :func:`tile_samples`)."""
    rows, cols = tile_samples(geobox, spacing_px)
    a, b, c, d, e, f = geobox.transform
    x = a * (cols + 0.5) + b * (rows + 0.5) + c
    y = d * (cols + 0.5) + e * (rows + 0.5) + f
    lon, lat = lonlat_transformer(geobox.crs).transform(x, y)
    lon = np.asarray(lon, dtype=np.float64)
    lat = np.asarray(lat, dtype=np.float64)
    if not (np.all(np.isfinite(lon)) and np.all(np.isfinite(lat))):
        raise GeometryError(
            f"geobox {geobox} has points that {geobox.crs} cannot map to lon/lat"
        )
    return lon, lat


def lonlat_bounds(
    lon: FloatArray, lat: FloatArray, pad_deg: float = 0.0
) -> tuple[float, float, float, float]:
    """(lon_min, lat_min, lon_max, lat_max) of points, grown by ``pad_deg``."""
    return (
        float(lon.min()) - pad_deg,
        float(lat.min()) - pad_deg,
        float(lon.max()) + pad_deg,
        float(lat.max()) + pad_deg,
    )


def tile_height_range(
    dem: HeightRange | tuple[float, float], lon: FloatArray, lat: FloatArray
) -> tuple[float, float]:
    """The (hmin, hmax) to project at: a given pair, or the DEM's range over the points."""
    if isinstance(dem, tuple):
        hmin, hmax = float(dem[0]), float(dem[1])
    else:
        # A DEM cell or so of slack around the tile: min_max is conservative anyway.
        hmin, hmax = dem.min_max(*lonlat_bounds(lon, lat, pad_deg=1e-5))
    if not (math.isfinite(hmin) and math.isfinite(hmax) and hmin <= hmax):
        raise GeometryError(f"height range ({hmin}, {hmax}) m, expected finite hmin <= hmax")
    return hmin - HEIGHT_PAD_M, hmax + HEIGHT_PAD_M


def declare_input_window(
    rpc: RpcModel,
    dem: HeightRange | tuple[float, float],
    tile_geobox: GeoBox,
    image_shape: tuple[int, int],
    margin_px: float,
    *,
    spacing_px: int = 32,
) -> Window | None:
    """The window of the raw image (``image_shape`` = rows, cols) a map tile needs.

    ``dem`` is a DEM (anything with ``min_max``) or an explicit (hmin, hmax)
    in metres above the ellipsoid. Returns None when the tile's ground does
    not project onto the image.
    """
    if margin_px < 0:
        raise GeometryError(f"margin {margin_px} px, expected >= 0")
    lon, lat = geobox_lonlat(tile_geobox, spacing_px)
    hmin, hmax = tile_height_range(dem, lon, lat)
    n = lon.size
    rows, cols = rpc.project(np.tile(lon, 2), np.tile(lat, 2),
                             np.repeat([hmin, hmax], n), check=False)
    if not (np.all(np.isfinite(rows)) and np.all(np.isfinite(cols))):
        raise GeometryError(
            f"{rpc.source}: the RPC gives non-finite image points for the tile {tile_geobox}"
        )
    window = Window.bounding(rows, cols, margin_px + SAMPLING_PAD_PX)
    return window.clip(*image_shape)
