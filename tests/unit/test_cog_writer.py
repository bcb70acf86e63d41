"""The streaming COG writer against GDAL's COG driver (the writer it replaced).

The reference is what the previous CogWriter did: a tiled scratch GeoTIFF
turned into a COG by GDAL's COG driver (DEFLATE, predictor, 512 px blocks,
AVERAGE overviews down to one block). Pixels must be identical at full
resolution and, where every level halves exactly, in every overview.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
import rasterio.shutil
from rio_cogeo.cogeo import cog_validate

from ops.errors import GeometryError, RasterWriteError
from ops.raster import raster_io
from ops.raster.cog_layout import GHOST_HEADER_BODY
from ops.raster.raster_io import CogWriter, overview_shapes
from planner.geometry.grid import GeoBox, Window
from tests.cog_compare import assert_same_cog

pytestmark = pytest.mark.unit

UTM = (0.5, 0.0, 300000.0, 0.0, -0.5, 4800000.0)


def _image(bands: int, h: int, w: int, dtype: str, nodata: float | None) -> np.ndarray:
    """Smooth terrain-like values with noise, nodata outside an ellipse (like an ortho)."""
    rng = np.random.default_rng(7)
    rr, cc = np.mgrid[0:h, 0:w]
    base = 900 + 400 * np.sin(rr / 37.0) * np.cos(cc / 53.0)
    data = np.stack([base * (1 + 0.1 * b) + rng.normal(0, 25, (h, w)) for b in range(bands)])
    if np.dtype(dtype).kind == "f":
        data = (data / 7.0).astype(dtype)
    else:
        data = np.clip(data, 1, None).astype(dtype)
    if nodata is not None:
        outside = ((rr - h / 2) / (0.48 * h)) ** 2 + ((cc - w / 2) / (0.52 * w)) ** 2 > 1
        data[:, outside] = nodata
    return data


def _gdal_cog(data: np.ndarray, geobox: GeoBox, nodata: float | None, dest: Path) -> None:
    scratch = dest.with_name("scratch.tif")
    with rasterio.open(scratch, "w", driver="GTiff", height=geobox.height, width=geobox.width,
                       count=data.shape[0], dtype=data.dtype, crs=geobox.crs,
                       transform=rasterio.Affine(*geobox.transform), nodata=nodata,
                       tiled=True, blockxsize=512, blockysize=512) as dst:
        dst.write(data)
    rasterio.shutil.copy(scratch, dest, driver="COG", COMPRESS="DEFLATE",
                         PREDICTOR=3 if data.dtype.kind == "f" else 2, BLOCKSIZE=512,
                         OVERVIEWS="AUTO", OVERVIEW_RESAMPLING="AVERAGE")
    scratch.unlink()


def _ours(data: np.ndarray, geobox: GeoBox, nodata: float | None, dest: Path,
          tile: tuple[int, int] = (300, 700), shuffle: bool = False, **kw: Any) -> None:
    windows = [Window(r, c, min(tile[0], geobox.height - r), min(tile[1], geobox.width - c))
               for r in range(0, geobox.height, tile[0])
               for c in range(0, geobox.width, tile[1])]
    if shuffle:
        random.Random(3).shuffle(windows)
    with CogWriter(dest, geobox, count=data.shape[0], dtype=data.dtype.name, nodata=nodata,
                   **kw) as out:
        for win in windows:
            out.write(win, data[(slice(None), *win.slices())])


def _levels(path: Path) -> list[np.ndarray]:
    with rasterio.open(path) as src:
        arrays = [src.read()]
        for factor in src.overviews(1):
            shape = (src.count, -(-src.height // factor), -(-src.width // factor))
            arrays.append(src.read(out_shape=shape))
    return arrays


@pytest.mark.parametrize(
    ("bands", "dtype", "nodata"),
    [(1, "uint16", 0), (1, "float32", np.nan), (3, "float32", -9999.0), (2, "int16", None)],
)
def test_pixels_and_overviews_equal_gdal_cog_driver(
    tmp_path: Path, bands: int, dtype: str, nodata: float | None
) -> None:
    # 1024 x 1536 -> 512 x 768 -> 256 x 384: every level halves exactly.
    geobox = GeoBox("EPSG:32631", UTM, 1024, 1536)
    data = _image(bands, 1024, 1536, dtype, nodata)
    _gdal_cog(data, geobox, nodata, tmp_path / "gdal.tif")
    _ours(data, geobox, nodata, tmp_path / "ours.tif")
    valid, errors, warnings = cog_validate(str(tmp_path / "ours.tif"), strict=True)
    assert valid, (errors, warnings)
    with rasterio.open(tmp_path / "ours.tif") as ours, rasterio.open(tmp_path / "gdal.tif") as ref:
        assert ours.tags(ns="IMAGE_STRUCTURE") == ref.tags(ns="IMAGE_STRUCTURE")
        assert ours.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
        assert ours.block_shapes == ref.block_shapes == [(512, 512)] * bands
        assert ours.overviews(1) == ref.overviews(1) == [2, 4]
        assert (ours.crs, ours.transform, ours.dtypes) == (ref.crs, ref.transform, ref.dtypes)
        assert ours.nodata == ref.nodata or (np.isnan(ours.nodata) and np.isnan(ref.nodata))
    for mine, theirs in zip(_levels(tmp_path / "ours.tif"), _levels(tmp_path / "gdal.tif"),
                            strict=True):
        np.testing.assert_array_equal(mine, theirs)


def test_odd_sizes_keep_full_resolution_and_average_aligned_pairs(tmp_path: Path) -> None:
    """Odd sizes: pixels still equal GDAL's; the overview averages the aligned 2x2 below.

    GDAL spreads a ratio of 701/351 pixels per overview pixel across the row
    instead; eochain's last overview pixel covers the last pixel alone.
    """
    geobox = GeoBox("EPSG:32631", UTM, 701, 1025)
    data = _image(1, 701, 1025, "uint16", 0)
    _gdal_cog(data, geobox, 0, tmp_path / "gdal.tif")
    _ours(data, geobox, 0, tmp_path / "ours.tif", tile=(256, 256))
    full, half, quarter = _levels(tmp_path / "ours.tif")
    np.testing.assert_array_equal(full, _levels(tmp_path / "gdal.tif")[0])
    padded = np.pad(full[0].astype(np.float64), ((0, 1), (0, 1)), constant_values=0)
    quads = padded.reshape(351, 2, 513, 2)
    n = (quads != 0).sum(axis=(1, 3))
    expected = np.where(n > 0, np.floor(quads.sum(axis=(1, 3)) / np.maximum(n, 1) + 0.5), 0)
    np.testing.assert_array_equal(half[0], expected)
    assert quarter.shape == (1, 176, 257)


def test_tile_order_does_not_change_the_product(tmp_path: Path) -> None:
    geobox = GeoBox("EPSG:32631", UTM, 900, 1300)
    data = _image(1, 900, 1300, "uint16", 0)
    _ours(data, geobox, 0, tmp_path / "rows.tif", tile=(1024, 1024))
    _ours(data, geobox, 0, tmp_path / "shuffled.tif", tile=(200, 333), shuffle=True, workers=3)
    assert_same_cog(tmp_path / "rows.tif", tmp_path / "shuffled.tif")


def test_tiles_written_band_by_band_in_row_pieces_make_the_same_product(tmp_path: Path) -> None:
    """As a tile that travelled in :class:`~scheduler.runtime.actors.ArrayParts` is written."""
    geobox = GeoBox("EPSG:32631", UTM, 600, 700)
    data = _image(3, 600, 700, "float32", -9999.0)
    _ours(data, geobox, -9999.0, tmp_path / "whole.tif", tile=(600, 700))
    pieces = [(b, r) for b in range(3) for r in range(0, 600, 130)]
    random.Random(5).shuffle(pieces)
    with CogWriter(tmp_path / "pieces.tif", geobox, count=3, dtype="float32",
                   nodata=-9999.0) as out:
        for b, r in pieces:
            rows = min(130, 600 - r)
            out.write(Window(r, 0, rows, 700), data[b:b + 1, r:r + rows], band=b)
        with pytest.raises(GeometryError, match="band 3 written, expected 0 to 2"):
            out.write(Window(0, 0, 1, 700), data[:1, :1], band=3)
    assert_same_cog(tmp_path / "whole.tif", tmp_path / "pieces.tif")


def test_layout_is_gdals(tmp_path: Path) -> None:
    """Ghost header, IFDs before data, each tile led by its size and trailed by its end."""
    geobox = GeoBox("EPSG:32631", UTM, 600, 700)
    data = _image(1, 600, 700, "uint16", 0)
    _ours(data, geobox, 0, tmp_path / "ours.tif")
    raw = (tmp_path / "ours.tif").read_bytes()
    assert raw[8:51] == b"GDAL_STRUCTURAL_METADATA_SIZE=%06d bytes\n" % len(GHOST_HEADER_BODY)
    assert raw[51:51 + len(GHOST_HEADER_BODY)] == GHOST_HEADER_BODY
    with rasterio.open(tmp_path / "ours.tif") as src:
        offset = int(src.get_tag_item("BLOCK_OFFSET_0_0", "TIFF", bidx=1))
        size = int(src.get_tag_item("BLOCK_SIZE_0_0", "TIFF", bidx=1))
        ovr_offset = int(src.get_tag_item("BLOCK_OFFSET_0_0", "TIFF", bidx=1, ovr=0))
    assert ovr_offset < offset  # overview tiles come before full-resolution ones
    assert int.from_bytes(raw[offset - 4:offset], "little") == size
    assert raw[offset + size:offset + size + 4] == raw[offset + size - 4:offset + size]


def test_metadata_units_tags_and_geographic_crs(tmp_path: Path) -> None:
    geobox = GeoBox("EPSG:4326", (1e-5, 0.0, 5.0, 0.0, -1e-5, 44.0), 300, 400)
    data = _image(2, 300, 400, "float32", -9999.0)
    _ours(data, geobox, -9999.0, tmp_path / "ours.tif", descriptions=("height", "score"),
          units=("metre", None), tags={"EOCHAIN_PRODUCT": "dsm"})
    with rasterio.open(tmp_path / "ours.tif") as src:
        assert src.crs.to_epsg() == 4326
        assert tuple(src.transform)[:6] == geobox.transform
        assert src.descriptions == ("height", "score")
        assert src.units[0] == "metre"
        assert src.tags()["EOCHAIN_PRODUCT"] == "dsm"
        assert src.nodata == -9999.0
        assert src.overviews(1) == []  # one block already
        np.testing.assert_array_equal(src.read(), data)


def test_unwritten_pixels_are_nodata_and_rewrites_are_refused(tmp_path: Path) -> None:
    geobox = GeoBox("EPSG:32631", UTM, 600, 1100)
    with CogWriter(tmp_path / "part.tif", geobox, count=1, dtype="uint16", nodata=7) as out:
        out.write(Window(0, 0, 100, 100), np.full((1, 100, 100), 3, np.uint16))
    with rasterio.open(tmp_path / "part.tif") as src:
        got = src.read(1)
        half = src.read(1, out_shape=(300, 550))
    assert (got[:100, :100] == 3).all() and (got[100:] == 7).all() and (got[:, 100:] == 7).all()
    assert (half[:50, :50] == 3).all() and (half[50:] == 7).all()
    with pytest.raises(RasterWriteError, match="written once"), CogWriter(
        tmp_path / "twice.tif", geobox, count=1, dtype="uint16", nodata=0
    ) as out:
        out.write(Window(0, 0, 512, 512), np.ones((1, 512, 512), np.uint16))
        out.write(Window(10, 10, 5, 5), np.ones((1, 5, 5), np.uint16))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["part.tif"]


def test_overview_shapes_halve_down_to_one_block() -> None:
    assert overview_shapes(9665, 9591) == [(9665, 9591), (4833, 4796), (2417, 2398),
                                           (1209, 1199), (605, 600), (303, 300)]
    assert overview_shapes(512, 300) == [(512, 300)]


def test_bigtiff_layout_reads_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Past 4 GiB the COG is a BigTIFF: forced here by lowering the classic-TIFF limit."""
    monkeypatch.setattr(raster_io, "CLASSIC_TIFF_MAX_BYTES", 0)
    geobox = GeoBox("EPSG:32631", UTM, 1024, 1536)
    data = _image(2, 1024, 1536, "uint16", 0)
    _ours(data, geobox, 0, tmp_path / "big.tif")
    assert (tmp_path / "big.tif").read_bytes()[:4] == b"II+\x00"
    valid, errors, _ = cog_validate(str(tmp_path / "big.tif"))
    assert valid, errors
    _gdal_cog(data, geobox, 0, tmp_path / "gdal.tif")
    for mine, theirs in zip(_levels(tmp_path / "big.tif"), _levels(tmp_path / "gdal.tif"),
                            strict=True):
        np.testing.assert_array_equal(mine, theirs)


def test_the_same_product_comparison_tells_pixels_from_deflate_streams(tmp_path: Path) -> None:
    """tests/cog_compare.py: other deflate streams of the same pixels pass, one pixel fails."""
    geobox = GeoBox("EPSG:32631", UTM, 700, 900)
    data = _image(1, 700, 900, "uint16", 0)
    _ours(data, geobox, 0, tmp_path / "level1.tif")
    _ours(data, geobox, 0, tmp_path / "level2.tif", deflate_level=2)
    assert (tmp_path / "level1.tif").read_bytes() != (tmp_path / "level2.tif").read_bytes()
    assert_same_cog(tmp_path / "level1.tif", tmp_path / "level2.tif")
    data[0, 650, 850] += 1  # in the last full-resolution tile
    _ours(data, geobox, 0, tmp_path / "other.tif")
    with pytest.raises(AssertionError, match="IFD 0 tile 3: different pixels"):
        assert_same_cog(tmp_path / "level1.tif", tmp_path / "other.tif")
