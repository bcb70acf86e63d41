"""DEM tiles: which files a source names, where each tile's nodes are, and reading them.

SRTM ``.hgt`` files are read here directly: a square of n x n big-endian
int16 (n = 1201 for 3", 3601 for 1"), north row first, -32768 for voids,
*pixel-is-point* (``N44E005`` has node [0, 0] at exactly 5 E, 45 N), given
the corner geotransform GDAL's SRTMHGT driver reports. Every other format,
and a remote ``.hgt``, is read through rasterio, band 1. A source is a file,
a folder of tiles or a list of files, local or remote (``s3://``,
``/vsis3/``...; see :mod:`ops.raster.vsi`). Each tile carries its vertical reference
(:mod:`ops.terrain.vertical`). :mod:`ops.terrain.dem` mosaics them.
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
import rasterio.errors
from numpy.typing import NDArray
from rasterio.crs import CRS
from rasterio.windows import Window as RioWindow

from ops.errors import DemError, RasterReadError
from ops.raster import vsi
from ops.terrain import vertical

#: File name endings taken as DEM tiles in a folder.
TILE_SUFFIXES = (".hgt", ".tif", ".tiff", ".vrt")
HGT_NODATA = -32768
HGT_NAME = re.compile(r"^([NS])(\d{1,2})([EW])(\d{1,3})", re.IGNORECASE)

Transform6 = tuple[float, float, float, float, float, float]


@dataclass(frozen=True, slots=True)
class Tile:
    """Where one tile's nodes are and how to read them."""

    path: str
    crs: CRS
    transform: Transform6
    height: int
    width: int
    is_hgt: bool
    vertical: vertical.VerticalReference


def probe_hgt(path: Path) -> Tile:
    m = HGT_NAME.match(path.stem)
    if m is None:
        raise DemError(
            f"SRTM file {path}: name {path.name!r} does not start like N44E005; "
            "expected [NS]lat[EW]lon naming the south-west corner"
        )
    lat = int(m.group(2)) * (1 if m.group(1).upper() == "N" else -1)
    lon = int(m.group(4)) * (1 if m.group(3).upper() == "E" else -1)
    size = path.stat().st_size
    n = math.isqrt(size // 2)
    if n < 2 or 2 * n * n != size:
        raise DemError(
            f"SRTM file {path}: {size} bytes is not a square of int16 "
            "(expected 2*1201*1201 for 3\" or 2*3601*3601 for 1\")"
        )
    step = 1.0 / (n - 1)
    transform = (step, 0.0, lon - step / 2, 0.0, -step, lat + 1 + step / 2)
    return Tile(str(path), CRS.from_epsg(4326), transform, n, n, True,
                 vertical.of_hgt(path.name))


def probe(path: str) -> Tile:
    """Where a tile's nodes are; a remote tile (``s3://``...) is read through GDAL."""
    with vsi.remote_timeouts(path):
        return _probe(path)


def _probe(path: str) -> Tile:
    name = vsi.name(path)
    is_hgt = name.lower().endswith(".hgt")
    if not vsi.is_file(path):
        raise RasterReadError(f"DEM file not found: {path} (expected an SRTM .hgt or a GeoTIFF)")
    if is_hgt and not vsi.is_virtual(path):
        return probe_hgt(Path(path))
    try:
        with warnings.catch_warnings():
            # An ungeoreferenced file is refused below, with its name.
            warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
            ds = rasterio.open(path)
        with ds:
            if ds.crs is None:
                raise DemError(f"DEM {path} has no CRS; expected a georeferenced raster")
            t = tuple(float(v) for v in tuple(ds.transform)[:6])
            if t[1] != 0 or t[3] != 0 or t[0] <= 0 or t[4] >= 0:
                raise DemError(
                    f"DEM {path}: geotransform {t}; expected north-up, unrotated "
                    "(a > 0, b = d = 0, e < 0)"
                )
            # GDAL's SRTMHGT driver gives a remote .hgt the grid _probe_hgt computes
            reference = vertical.of_hgt(name) if is_hgt else vertical.of_dataset(name, ds)
            return Tile(path, ds.crs, (t[0], t[1], t[2], t[3], t[4], t[5]),
                         ds.height, ds.width, False, reference)
    except rasterio.errors.RasterioIOError as exc:
        raise RasterReadError(f"cannot read DEM {path}: {exc}") from exc


def read_nodes(tile: Tile, r0: int, r1: int, c0: int, c1: int) -> NDArray[np.float32]:
    """Nodes [r0:r1, c0:c1] of a tile as float32, NaN where nodata."""
    if tile.is_hgt:
        raw = np.memmap(tile.path, dtype=">i2", mode="r", shape=(tile.height, tile.width))
        block = np.array(raw[r0:r1, c0:c1])
        out = block.astype(np.float32)
        out[block == HGT_NODATA] = np.nan
        return out
    try:
        with vsi.remote_timeouts(tile.path), rasterio.open(tile.path) as ds:
            data = ds.read(1, window=RioWindow(c0, r0, c1 - c0, r1 - r0), masked=True)
            scale, offset = float(ds.scales[0]), float(ds.offsets[0])
    except rasterio.errors.RasterioIOError as exc:
        raise RasterReadError(f"cannot read DEM {tile.path}: {exc}") from exc
    out = data.astype(np.float32).filled(np.nan)
    if (scale, offset) != (1.0, 0.0):
        out = (out * np.float32(scale) + np.float32(offset)).astype(np.float32)
    return np.asarray(out, dtype=np.float32)


def list_sources(source: str | Path | Sequence[str | Path]) -> tuple[list[str], str]:
    """DEM files named by a file, a folder of tiles or a list; remote ones as GDAL paths."""
    if isinstance(source, (str, Path)):
        p = vsi.gdal_path(source)
        with vsi.remote_timeouts(p):
            listed = vsi.list_names(p) if vsi.is_virtual(p) and not vsi.is_file(p) else None
        if listed is not None:
            names = sorted(n for n in listed if n.lower().endswith(TILE_SUFFIXES))
            if not names:
                raise RasterReadError(
                    f"no DEM tiles at {p}: expected a file, or a folder of files ending in "
                    f"{', '.join(TILE_SUFFIXES)}"
                )
            return [vsi.join(p, n) for n in names], p
        if not vsi.is_virtual(p) and Path(p).is_dir():
            tiles = sorted(f for f in Path(p).iterdir() if f.suffix.lower() in TILE_SUFFIXES)
            if not tiles:
                raise RasterReadError(
                    f"no DEM tiles in folder {p}: expected files ending in {', '.join(TILE_SUFFIXES)}"
                )
            return [str(f) for f in tiles], p
        return [p], p
    files = [vsi.gdal_path(s) for s in source]
    if not files:
        raise DemError("Dem.open: empty list of DEM files; expected at least one path")
    label = ", ".join(files[:3])
    return files, label + (f" (+{len(files) - 3} more)" if len(files) > 3 else "")
