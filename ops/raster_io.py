"""Raster I/O for kernels: metadata, windowed reads, atomic Cloud-Optimized GeoTIFF writes.

Reading follows "plan what to read, then read it": a kernel declares a
:class:`planner.grid.Window` and :func:`read_window` reads exactly that,
every band, as a (bands, rows, cols) array. Failures (missing file, not a
raster, a truncated TIFF whose strips cannot be decoded) become
:class:`ops.errors.RasterReadError` naming the file and the window.

Writing is atomic: :class:`CogWriter` receives tiles in any order into a
hidden, tiled scratch GeoTIFF beside the destination; on a clean exit it
turns that into a COG (GDAL's COG driver: DEFLATE, 512 px blocks, overviews
computed with AVERAGE down to one block) in a second hidden file and renames
it onto the destination. On an exception every scratch file is removed and
the destination is left as it was: a reader never sees a partial product.
Memory stays bounded by one tile: GDAL streams the scratch file into the COG.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

import numpy as np
import rasterio
import rasterio.shutil
from numpy.typing import NDArray
from rasterio.errors import RasterioError
from rasterio.windows import Window as RioWindow

from ops.errors import GeometryError, RasterReadError, RasterWriteError
from planner.grid import GeoBox, Window

COG_BLOCK_PX = 512


@dataclass(frozen=True, slots=True)
class RasterInfo:
    """What a kernel needs to know about a raster before reading it."""

    path: str
    height: int
    width: int
    count: int
    dtype: str
    nodata: float | None
    descriptions: tuple[str | None, ...]

    @property
    def shape(self) -> tuple[int, int]:
        return self.height, self.width


def raster_info(path: str | Path) -> RasterInfo:
    """Shape, band count, dtype, nodata and band descriptions of a raster file."""
    try:
        with rasterio.open(path) as src:
            return RasterInfo(
                str(path),
                src.height,
                src.width,
                src.count,
                str(src.dtypes[0]),
                None if src.nodata is None else float(src.nodata),
                tuple(src.descriptions),
            )
    except RasterioError as exc:
        raise RasterReadError(f"{path}: cannot open as a raster ({exc}); expected a GeoTIFF") from exc


def read_window(path: str | Path, window: Window) -> NDArray[np.generic]:
    """Every band of ``window`` (inside the raster) as a (bands, rows, cols) array."""
    try:
        with rasterio.open(path) as src:
            inside = window.clip(src.height, src.width)
            if inside != window:
                raise GeometryError(
                    f"{path}: window {window} is not inside the {src.height}x{src.width} raster"
                )
            data: NDArray[np.generic] = src.read(
                window=RioWindow(window.col_off, window.row_off, window.width, window.height)
            )
            return data
    except RasterioError as exc:
        raise RasterReadError(
            f"{path}: cannot read window {window} ({exc}); the file may be truncated or corrupt"
        ) from exc


def _scratch_path(dest: Path, tag: str) -> Path:
    return dest.with_name(f".{dest.name}.{tag}-{uuid.uuid4().hex[:8]}.tmp.tif")


class CogWriter:
    """Write a product tile by tile, then publish it atomically as a COG.

    Use as a context manager::

        with CogWriter(dest, geobox, count=1, dtype="uint16", nodata=0) as out:
            out.write(window, tile)          # (bands, rows, cols), any order
    """

    def __init__(
        self,
        dest: str | Path,
        geobox: GeoBox,
        *,
        count: int,
        dtype: str,
        nodata: float | None,
        descriptions: tuple[str | None, ...] | None = None,
        compress: str = "DEFLATE",
        crs: str | None = None,
        units: tuple[str | None, ...] | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> None:
        self.dest = Path(dest)
        # what the file states beyond the grid: a 3D/compound CRS (the geobox's CRS
        # promoted to heights), band units and the product's EOCHAIN_* tags
        self.crs = crs or geobox.crs
        self.units = units
        self.tags = dict(tags or {})
        self.geobox = geobox
        self.count = count
        self.dtype = np.dtype(dtype).name
        self.nodata = nodata
        self.descriptions = descriptions
        self.compress = compress
        self._scratch = _scratch_path(self.dest, "tiles")
        self._cog = _scratch_path(self.dest, "cog")
        self._dataset: rasterio.io.DatasetWriter | None = None

    def __enter__(self) -> Self:
        if not self.dest.parent.is_dir():
            raise RasterWriteError(
                f"{self.dest}: the folder {self.dest.parent} does not exist; create it first"
            )
        profile = {
            "driver": "GTiff",
            "height": self.geobox.height,
            "width": self.geobox.width,
            "count": self.count,
            "dtype": self.dtype,
            "crs": self.crs,
            "transform": rasterio.Affine(*self.geobox.transform),
            "nodata": self.nodata,
            "tiled": True,
            "blockxsize": COG_BLOCK_PX,
            "blockysize": COG_BLOCK_PX,
            "BIGTIFF": "IF_SAFER",
        }
        try:
            self._dataset = rasterio.open(self._scratch, "w", **profile)
        except RasterioError as exc:
            raise RasterWriteError(f"{self.dest}: cannot create the scratch file ({exc})") from exc
        if self.descriptions is not None:
            for band, text in enumerate(self.descriptions, start=1):
                if text:
                    self._dataset.set_band_description(band, text)
        if self.units is not None:
            self._dataset.units = tuple(u or "" for u in self.units)
        if self.tags:
            self._dataset.update_tags(**self.tags)
        return self

    def write(self, window: Window, data: NDArray[np.generic]) -> None:
        """Write a (bands, rows, cols) tile at ``window`` of the geobox."""
        if self._dataset is None:
            raise RasterWriteError(f"{self.dest}: write() outside the writer's `with` block")
        expected = (self.count, window.height, window.width)
        if data.shape != expected:
            raise GeometryError(
                f"{self.dest}: tile of shape {data.shape} for window {window}, expected {expected}"
            )
        self._dataset.write(
            data.astype(self.dtype, copy=False),
            window=RioWindow(window.col_off, window.row_off, window.width, window.height),
        )

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if self._dataset is not None:
                self._dataset.close()
            if exc_type is None:
                self._publish()
        finally:
            for path in (self._scratch, self._cog):
                path.unlink(missing_ok=True)
                Path(str(path) + ".aux.xml").unlink(missing_ok=True)

    def _publish(self) -> None:
        predictor = 3 if np.dtype(self.dtype).kind == "f" else 2
        try:
            rasterio.shutil.copy(
                self._scratch,
                self._cog,
                driver="COG",
                COMPRESS=self.compress,
                PREDICTOR=predictor,
                BLOCKSIZE=COG_BLOCK_PX,
                OVERVIEWS="AUTO",
                OVERVIEW_RESAMPLING="AVERAGE",
                BIGTIFF="IF_SAFER",
            )
        except RasterioError as exc:
            raise RasterWriteError(f"{self.dest}: cannot write the COG ({exc})") from exc
        os.replace(self._cog, self.dest)


def write_cog(
    dest: str | Path,
    data: NDArray[np.generic],
    geobox: GeoBox,
    *,
    nodata: float | None,
    descriptions: tuple[str | None, ...] | None = None,
) -> None:
    """Write a whole (bands, rows, cols) array as a COG, atomically."""
    if data.ndim != 3 or data.shape[1:] != geobox.shape:
        raise GeometryError(
            f"{dest}: array of shape {data.shape}, expected (bands, {geobox.height}, "
            f"{geobox.width})"
        )
    with CogWriter(
        dest, geobox, count=data.shape[0], dtype=data.dtype.name, nodata=nodata,
        descriptions=descriptions,
    ) as out:
        out.write(Window(0, 0, geobox.height, geobox.width), data)
