"""The DEM as the ortho kernel samples it: ellipsoidal node heights on a regular grid.

:class:`HeightModel` is a read-only view of an :class:`ops.dem.Dem` (its
``heights_m`` array, no copy, geoid already folded in) with what the ortho
needs on top: lon/lat to fractional DEM node coordinates (the smooth part,
interpolated on the ortho's sparse grid), an exact per-point bilinear
sampler (the reference the compiled loop reproduces), a conservative
min/max over a lon/lat box (for input-window declarations) and a coverage
check that names the DEM and the uncovered area.

Node model (that of :mod:`ops.dem`): ``heights[i, j]`` is the height at
node (i, j); between nodes heights are bilinear; beyond the edge nodes they
are held constant (coverage is checked before that matters).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
from numpy.typing import NDArray

from ops.crs import lonlat_transformer
from ops.errors import DemCoverageError, GeometryError

FloatArray = NDArray[np.float64]


class DemLike(Protocol):
    """What :meth:`HeightModel.from_dem` reads of an ``ops.dem.Dem``."""

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
    the node model of :mod:`ops.dem`). Heights between nodes are bilinear,
    edge nodes held constant beyond the edge (coverage is checked at plan time).
    """

    heights: NDArray[np.floating]
    crs: str
    node_transform: tuple[float, float, float, float, float, float]
    source: str = "<array>"
    _inverse: tuple[float, ...] = field(init=False, repr=False)

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

    @classmethod
    def from_dem(cls, dem: DemLike) -> HeightModel:
        """The ortho's view of an ``ops.dem.Dem`` (no copy; geoid already folded in)."""
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
        if self.crs.upper() in ("EPSG:4326", "OGC:CRS84"):
            x, y = np.asarray(lon, dtype=np.float64), np.asarray(lat, dtype=np.float64)
        else:
            tx, ty = lonlat_transformer(self.crs, inverse=True).transform(lon, lat)
            x, y = np.asarray(tx, dtype=np.float64), np.asarray(ty, dtype=np.float64)
        ia, ib, id_, ie, c, f = self._inverse
        dx, dy = x - c, y - f
        return ia * dx + ib * dy, id_ * dx + ie * dy

    def heights_at(self, lon: FloatArray, lat: FloatArray) -> FloatArray:
        """Exact bilinear heights at lon/lat: the reference the kernel reproduces per pixel."""
        u, v = self.node_coords(lon, lat)
        rows, cols = self.heights.shape
        v = np.clip(v, 0.0, rows - 1.0)
        u = np.clip(u, 0.0, cols - 1.0)
        i = np.clip(np.floor(v).astype(np.int64), 0, max(rows - 2, 0))
        j = np.clip(np.floor(u).astype(np.int64), 0, max(cols - 2, 0))
        fv, fu = v - i, u - j
        i1, j1 = np.minimum(i + 1, rows - 1), np.minimum(j + 1, cols - 1)
        z = self.heights.astype(np.float64, copy=False)
        top = (1 - fu) * z[i, j] + fu * z[i, j1]
        bottom = (1 - fu) * z[i1, j] + fu * z[i1, j1]
        return np.asarray((1 - fv) * top + fv * bottom, dtype=np.float64)

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
        eps = 1e-6
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
