"""The tile model: output geoboxes, tile grids, pixel windows and input declarations.

Every processing step in eochain produces a product on a map grid (a
:class:`GeoBox`). The grid is cut into tiles (:class:`TileGrid`); each tile
has a core :class:`Window` and, with a margin, a padded window. For a tile, an
operation declares which window of each input raster it needs
(:class:`InputWindow`); from those declarations the planner builds the task
DAG and the runtime reads exactly those bytes.

Pixel conventions: a window is in whole pixels, ``row_off``/``col_off`` are
the first row/column, ``height``/``width`` the counts. A geobox's transform is
in the affine/rasterio order ``(a, b, c, d, e, f)``: ``x = a*col + b*row + c``
and ``y = d*col + e*row + f`` at pixel *corners*; :meth:`GeoBox.xy` returns
pixel *centres* and :meth:`GeoBox.rowcol` gives fractional indices whose
integer values are pixel centres (numpy index convention).

UTM: :func:`utm_zone`/:func:`utm_crs` are the one rule by which the planner's
grids and the products' grids pick a zone: standard 6-degree zones with the
Norway (32V) and Svalbard (31X..37X) exceptions of the official layout, and
longitude 180 in zone 60 (the zone's closed east edge, as -180 is zone 1's
west edge).

This module is pure (numpy only): ops and the planner both use it.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from planner.geometry.errors import GridError

FloatArray = NDArray[np.float64]


def utm_zone(lon: float, lat: float) -> int:
    """The UTM zone number (1..60) holding a point, with the Norway/Svalbard exceptions."""
    if not (-180.0 <= lon <= 180.0 and -80.0 <= lat <= 84.0):
        raise GridError(
            f"lon/lat ({lon}, {lat}) is outside UTM's domain; expected lon in [-180, 180] "
            "and lat in [-80, 84] (use a polar stereographic CRS)"
        )
    zone = min(int((lon + 180.0) // 6.0) + 1, 60)
    if 56.0 <= lat < 64.0 and 3.0 <= lon < 12.0:
        zone = 32
    elif 72.0 <= lat <= 84.0 and 0.0 <= lon < 42.0:
        zone = 31 if lon < 9.0 else 33 if lon < 21.0 else 35 if lon < 33.0 else 37
    return zone


def utm_crs(lon: float, lat: float) -> str:
    """The WGS84 / UTM CRS ('EPSG:326zz' north, 'EPSG:327zz' south) holding a point."""
    zone = utm_zone(lon, lat)
    return f"EPSG:{32600 + zone if lat >= 0.0 else 32700 + zone}"


@dataclass(frozen=True, slots=True)
class Window:
    """A rectangle of whole pixels: rows ``row_off .. row_stop-1``, likewise columns."""

    row_off: int
    col_off: int
    height: int
    width: int

    def __post_init__(self) -> None:
        for name in ("row_off", "col_off", "height", "width"):
            if not isinstance(getattr(self, name), (int, np.integer)):
                raise GridError(f"Window.{name} = {getattr(self, name)!r}, expected an int")
        if self.height < 0 or self.width < 0:
            raise GridError(
                f"Window size {self.height}x{self.width} is negative; expected height, width >= 0"
            )

    @property
    def row_stop(self) -> int:
        return self.row_off + self.height

    @property
    def col_stop(self) -> int:
        return self.col_off + self.width

    @property
    def size(self) -> int:
        """Number of pixels."""
        return self.height * self.width

    def slices(self) -> tuple[slice, slice]:
        """Numpy slices selecting this window (offsets must be non-negative)."""
        return slice(self.row_off, self.row_stop), slice(self.col_off, self.col_stop)

    def intersection(self, other: Window) -> Window | None:
        """The common pixels, or None when the windows do not overlap."""
        r0, c0 = max(self.row_off, other.row_off), max(self.col_off, other.col_off)
        r1, c1 = min(self.row_stop, other.row_stop), min(self.col_stop, other.col_stop)
        if r1 <= r0 or c1 <= c0:
            return None
        return Window(r0, c0, r1 - r0, c1 - c0)

    def union(self, other: Window) -> Window:
        """The smallest window holding both."""
        r0, c0 = min(self.row_off, other.row_off), min(self.col_off, other.col_off)
        r1, c1 = max(self.row_stop, other.row_stop), max(self.col_stop, other.col_stop)
        return Window(r0, c0, r1 - r0, c1 - c0)

    def pad(self, n: int) -> Window:
        """Grown by ``n`` pixels on every side (may go negative: clip afterwards)."""
        return Window(self.row_off - n, self.col_off - n, self.height + 2 * n, self.width + 2 * n)

    def clip(self, height: int, width: int) -> Window | None:
        """Clipped to a raster of ``height`` x ``width``, or None when outside it."""
        return self.intersection(Window(0, 0, height, width))

    def contains(self, rows: ArrayLike, cols: ArrayLike) -> NDArray[np.bool_]:
        """Whether fractional (row, col) points (integer = centre) fall inside the window."""
        r = np.asarray(rows, dtype=np.float64)
        c = np.asarray(cols, dtype=np.float64)
        return (
            (r >= self.row_off - 0.5)
            & (r <= self.row_stop - 0.5)
            & (c >= self.col_off - 0.5)
            & (c <= self.col_stop - 0.5)
        )

    @classmethod
    def bounding(
        cls, rows: ArrayLike, cols: ArrayLike, margin_px: float = 0.0
    ) -> Window:
        """The smallest window whose pixels cover every fractional (row, col) point.

        Points are pixel-centre based; ``margin_px`` pixels are added on every side
        (a resampling kernel's support, a safety margin).
        """
        r = np.asarray(rows, dtype=np.float64)
        c = np.asarray(cols, dtype=np.float64)
        if r.size == 0 or not (np.all(np.isfinite(r)) and np.all(np.isfinite(c))):
            raise GridError("cannot bound an empty or non-finite set of points")
        r0 = math.floor(float(r.min()) - margin_px + 0.5)
        c0 = math.floor(float(c.min()) - margin_px + 0.5)
        r1 = math.floor(float(r.max()) + margin_px + 0.5) + 1
        c1 = math.floor(float(c.max()) + margin_px + 0.5) + 1
        return cls(r0, c0, r1 - r0, c1 - c0)


@dataclass(frozen=True, slots=True)
class GeoBox:
    """A map grid: CRS (any PROJ-understood string), affine transform and shape."""

    crs: str
    transform: tuple[float, float, float, float, float, float]
    height: int
    width: int

    def __post_init__(self) -> None:
        if len(self.transform) != 6 or not all(math.isfinite(v) for v in self.transform):
            raise GridError(
                f"GeoBox transform {self.transform!r} must be 6 finite numbers (a, b, c, d, e, f)"
            )
        a, b, _, d, e, _ = self.transform
        if a * e - b * d == 0.0:
            raise GridError(f"GeoBox transform {self.transform!r} is singular")
        if self.height <= 0 or self.width <= 0:
            raise GridError(f"GeoBox shape {self.height}x{self.width}, expected positive sizes")
        if not self.crs:
            raise GridError("GeoBox crs is empty; expected e.g. 'EPSG:32631'")

    @classmethod
    def from_bounds(
        cls, crs: str, left: float, bottom: float, right: float, top: float, resolution: float
    ) -> GeoBox:
        """North-up grid of square ``resolution`` pixels covering the bounds.

        The origin is snapped to a multiple of the resolution so that grids of
        neighbouring products line up pixel for pixel.
        """
        if not resolution > 0:
            raise GridError(f"resolution {resolution!r} must be > 0")
        if not (right > left and top > bottom):
            raise GridError(
                f"bounds (left={left}, bottom={bottom}, right={right}, top={top}) are empty"
            )
        x0 = math.floor(left / resolution) * resolution
        y1 = math.ceil(top / resolution) * resolution
        width = max(1, math.ceil((right - x0) / resolution - 1e-9))
        height = max(1, math.ceil((y1 - bottom) / resolution - 1e-9))
        return cls(crs, (resolution, 0.0, x0, 0.0, -resolution, y1), height, width)

    @property
    def shape(self) -> tuple[int, int]:
        return self.height, self.width

    @property
    def resolution(self) -> tuple[float, float]:
        """Pixel size (x, y) in CRS units, both positive."""
        a, b, _, d, e, _ = self.transform
        return math.hypot(a, d), math.hypot(b, e)

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(left, bottom, right, top) of the outer pixel corners."""
        rows = np.array([0.0, 0.0, self.height, self.height])
        cols = np.array([0.0, self.width, 0.0, self.width])
        x, y = self._corner_xy(rows, cols)
        return float(x.min()), float(y.min()), float(x.max()), float(y.max())

    def _corner_xy(self, rows: FloatArray, cols: FloatArray) -> tuple[FloatArray, FloatArray]:
        a, b, c, d, e, f = self.transform
        return a * cols + b * rows + c, d * cols + e * rows + f

    def xy(self, rows: ArrayLike, cols: ArrayLike) -> tuple[FloatArray, FloatArray]:
        """Map coordinates of pixel centres (integer rows/cols = centres)."""
        r = np.asarray(rows, dtype=np.float64) + 0.5
        c = np.asarray(cols, dtype=np.float64) + 0.5
        return self._corner_xy(r, c)

    def rowcol(self, x: ArrayLike, y: ArrayLike) -> tuple[FloatArray, FloatArray]:
        """Fractional (row, col) of map points; integer values are pixel centres."""
        a, b, c, d, e, f = self.transform
        det = a * e - b * d
        dx = np.asarray(x, dtype=np.float64) - c
        dy = np.asarray(y, dtype=np.float64) - f
        col = (e * dx - b * dy) / det
        row = (a * dy - d * dx) / det
        return row - 0.5, col - 0.5

    def window_geobox(self, window: Window) -> GeoBox:
        """The grid of a window of this geobox (same CRS and pixel size)."""
        a, b, c, d, e, f = self.transform
        c2 = a * window.col_off + b * window.row_off + c
        f2 = d * window.col_off + e * window.row_off + f
        return GeoBox(self.crs, (a, b, c2, d, e, f2), window.height, window.width)


@dataclass(frozen=True, slots=True, order=True)
class TileIndex:
    """Position of a tile in its grid (tile row, tile column)."""

    row: int
    col: int

    def __str__(self) -> str:
        return f"{self.row}_{self.col}"


@dataclass(frozen=True, slots=True)
class TileGrid:
    """A geobox cut into tiles of ``tile_height`` x ``tile_width`` (edge tiles smaller).

    ``margin`` extra pixels around each tile form its padded window (clipped to
    the geobox): what a neighbourhood kernel reads or computes beyond the core.
    Core windows partition the geobox: no gap, no overlap.
    """

    geobox: GeoBox
    tile_height: int
    tile_width: int
    margin: int = 0

    def __post_init__(self) -> None:
        if self.tile_height <= 0 or self.tile_width <= 0:
            raise GridError(
                f"tile size {self.tile_height}x{self.tile_width}, expected positive sizes"
            )
        if self.margin < 0:
            raise GridError(f"tile margin {self.margin}, expected >= 0")

    @property
    def shape(self) -> tuple[int, int]:
        """Number of tile rows and tile columns."""
        return (
            -(-self.geobox.height // self.tile_height),
            -(-self.geobox.width // self.tile_width),
        )

    def __len__(self) -> int:
        n_rows, n_cols = self.shape
        return n_rows * n_cols

    def tiles(self) -> Iterator[TileIndex]:
        """Every tile, row-major."""
        n_rows, n_cols = self.shape
        for i in range(n_rows):
            for j in range(n_cols):
                yield TileIndex(i, j)

    def _check(self, idx: TileIndex) -> None:
        n_rows, n_cols = self.shape
        if not (0 <= idx.row < n_rows and 0 <= idx.col < n_cols):
            raise GridError(f"tile {idx} is outside the {n_rows}x{n_cols} tile grid")

    def window(self, idx: TileIndex) -> Window:
        """The tile's core window in geobox pixels."""
        self._check(idx)
        r0, c0 = idx.row * self.tile_height, idx.col * self.tile_width
        return Window(
            r0,
            c0,
            min(self.tile_height, self.geobox.height - r0),
            min(self.tile_width, self.geobox.width - c0),
        )

    def padded_window(self, idx: TileIndex) -> Window:
        """The core window grown by the margin, clipped to the geobox."""
        padded = self.window(idx).pad(self.margin).clip(self.geobox.height, self.geobox.width)
        if padded is None:  # cannot happen for a valid tile; keeps the type exact
            raise GridError(f"tile {idx} has an empty padded window")
        return padded

    def tile_geobox(self, idx: TileIndex, *, padded: bool = False) -> GeoBox:
        """The map grid of a tile (core, or padded by the margin)."""
        return self.geobox.window_geobox(self.padded_window(idx) if padded else self.window(idx))


@dataclass(frozen=True, slots=True)
class InputWindow:
    """The window of one input raster that an output tile needs."""

    raster: str
    window: Window
