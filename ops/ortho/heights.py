"""The DEM as the ortho kernel samples it: ellipsoidal node heights on a regular grid.

:class:`HeightModel` is a read-only view of an :class:`ops.terrain.dem.Dem` (its
``heights_m`` array, no copy, geoid already folded in) with what the ortho
needs on top: lon/lat to fractional DEM node coordinates (the smooth part,
interpolated on the ortho's sparse grid), an exact per-point bilinear
sampler (the reference the compiled loop reproduces), a conservative
min/max over a lon/lat box (for input-window declarations) and a coverage
check that names the DEM and the uncovered area.

Node model and sampling rule (those of :mod:`ops.terrain.dem`, one sampler:
:func:`ops.terrain.geoid.node_bilinear`): ``heights[i, j]`` is the height at node
(i, j); between nodes heights are bilinear; in the outer half node spacing
the edge nodes are held; beyond the DEM's footprint there is no height
(NaN; the plan refuses an image footprint the DEM does not cover, and the
kernel writes nodata for an output pixel off the DEM).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
from numpy.typing import NDArray

from ops.errors import DemCoverageError, GeometryError
from ops.raster.crs import is_wgs84_lonlat, lonlat_transformer
from ops.terrain.geoid import EDGE_EPS_PX, sample_bilinear

FloatArray = NDArray[np.float64]


class DemLike(Protocol):
    """What :meth:`HeightModel.from_dem` reads of an ``ops.terrain.dem.Dem``."""

    @property
    def heights_m(self) -> NDArray[np.float32]: ...
    @property
    def transform(self) -> tuple[float, float, float, float, float, float]: ...
    @property
    def crs(self) -> str: ...
    @property
    def source(self) -> str: ...


@dataclass(frozen=True, slots=True, eq=False)
class HeightModel:
    """A DEM as the ortho samples it: ellipsoidal node heights on a regular grid.

    ``node_transform`` (a, b, c, d, e, f) maps node indices to DEM-CRS
    coordinates, ``x = a*j + b*i + c`` for node (i, j) (integer index = node,
    the node model of :mod:`ops.terrain.dem`). Heights between nodes are bilinear,
    edge nodes held in the outer half spacing, no height (NaN) beyond it.
    """

    heights: NDArray[np.floating]
    crs: str
    node_transform: tuple[float, float, float, float, float, float]
    source: str = "<array>"
    _inverse: tuple[float, ...] = field(init=False, repr=False)
    _has_nan: bool = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.heights.ndim != 2 or min(self.heights.shape) < 1:
            raise GeometryError(
                f"{self.source}: DEM heights of shape {self.heights.shape}, expected 2-D"
            )
        a, b, c, d, e, f = self.node_transform
        det = a * e - b * d
        if det == 0.0:
            raise GeometryError(f"{self.source}: singular DEM transform {self.node_transform}")
        object.__setattr__(self, "_inverse", (e / det, -b / det, -d / det, a / det, c, f))
        object.__setattr__(self, "_has_nan", bool(np.isnan(self.heights).any()))

    @classmethod
    def from_dem(cls, dem: DemLike) -> HeightModel:
        """The ortho's view of an ``ops.terrain.dem.Dem`` (no copy; geoid already folded in)."""
        a, b, c, d, e, f = dem.transform
        node = (a, b, c + (a + b) / 2, d, e, f + (d + e) / 2)
        return cls(dem.heights_m, dem.crs, node, source=dem.source)

    @classmethod
    def constant(cls, h_m: float) -> HeightModel:
        """A flat world at ellipsoidal height ``h_m`` (one node covering everything)."""
        return cls(np.full((1, 1), float(h_m)), "EPSG:4326", (720.0, 0.0, 0.0, 0.0, 360.0, 0.0),
                   source=f"<constant {h_m} m>")

    def node_coords(self, lon: FloatArray, lat: FloatArray) -> tuple[FloatArray, FloatArray]:
        """Fractional DEM node (col j, row i) of lon/lat points."""
        if is_wgs84_lonlat(self.crs):
            x, y = np.asarray(lon, dtype=np.float64), np.asarray(lat, dtype=np.float64)
        else:
            tx, ty = lonlat_transformer(self.crs, inverse=True).transform(lon, lat)
            x, y = np.asarray(tx, dtype=np.float64), np.asarray(ty, dtype=np.float64)
        ia, ib, id_, ie, c, f = self._inverse
        dx, dy = x - c, y - f
        return ia * dx + ib * dy, id_ * dx + ie * dy

    def heights_at(self, lon: FloatArray, lat: FloatArray) -> FloatArray:
        """Exact heights at lon/lat: the reference the kernel reproduces per pixel.

        :func:`ops.terrain.geoid.sample_bilinear`, the sampler of :class:`ops.terrain.dem.Dem`:
        NaN outside the DEM's footprint (where the kernel writes nodata).
        """
        u, v = self.node_coords(lon, lat)
        return sample_bilinear(self.heights, (0.0, 0.0), (1.0, 1.0), u, v).values

    def needs_guard(self, u: FloatArray, v: FloatArray) -> bool:
        """Whether points blended from these node coordinates may fall off the DEM or on a NaN.

        A pixel's (u, v) in the kernel is a convex blend of its sparse-grid
        nodes', so nodes all inside the footprint keep their pixels inside:
        the kernel then samples without per-point tests (same numbers).
        """
        rows, cols = self.heights.shape
        return self._has_nan or not (
            float(u.min()) >= -0.5 and float(u.max()) <= cols - 0.5
            and float(v.min()) >= -0.5 and float(v.max()) <= rows - 0.5
        )

    def min_max(
        self, lon_min: float, lat_min: float, lon_max: float, lat_max: float
    ) -> tuple[float, float]:
        """Conservative height range over a lon/lat box: every node whose stencil reaches in."""
        glon, glat = np.meshgrid(np.linspace(lon_min, lon_max, 9), np.linspace(lat_min, lat_max, 9))
        u, v = self.node_coords(glon.ravel(), glat.ravel())
        rows, cols = self.heights.shape
        i0 = int(np.clip(np.floor(v.min()) - 1, 0, rows - 1))
        i1 = int(np.clip(np.ceil(v.max()) + 1, 0, rows - 1))
        j0 = int(np.clip(np.floor(u.min()) - 1, 0, cols - 1))
        j1 = int(np.clip(np.ceil(u.max()) + 1, 0, cols - 1))
        block = self.heights[i0 : i1 + 1, j0 : j1 + 1]
        return float(np.nanmin(block)), float(np.nanmax(block))

    def check_covers(self, lon: FloatArray, lat: FloatArray, what: str) -> None:
        """Raise DemCoverageError unless every point lies inside the DEM's extent."""
        u, v = self.node_coords(lon, lat)
        rows, cols = self.heights.shape
        eps = EDGE_EPS_PX
        inside = (u >= -0.5 - eps) & (u <= cols - 0.5 + eps) & (v >= -0.5 - eps) & (
            v <= rows - 0.5 + eps
        )
        if not np.all(inside):
            out_lon, out_lat = lon[~inside], lat[~inside]
            raise DemCoverageError(
                f"DEM {self.source} does not cover {what}: {int((~inside).sum())} points outside "
                f"it in lon [{out_lon.min():.5f}, {out_lon.max():.5f}], lat [{out_lat.min():.5f}, "
                f"{out_lat.max():.5f}]; expected a DEM (file or folder of tiles) covering them"
            )
