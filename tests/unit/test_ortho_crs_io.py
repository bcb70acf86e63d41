"""UTM zone choice, GSD derivation, and the atomic COG writer / windowed reader."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from rio_cogeo.cogeo import cog_validate

from ops.errors import GeometryError, RasterReadError, RasterWriteError
from ops.raster.crs import check_crs, round_gsd_m, sensor_gsd_m, utm_crs, utm_zone
from ops.raster.raster_io import CogWriter, raster_info, read_window, write_cog
from ops.sensor.rpc_io import find_rpc
from planner.geometry.grid import GeoBox, Window

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("lon", "lat", "expected"),
    [
        (1.4, 43.6, "EPSG:32631"),      # Toulouse
        (31.13, 29.98, "EPSG:32636"),   # Giza
        (-70.6, -33.4, "EPSG:32719"),   # Santiago, southern hemisphere
        (5.3, 60.4, "EPSG:32632"),      # Bergen: the Norway exception (would be 31)
        (15.6, 78.2, "EPSG:32633"),     # Svalbard exception
        (179.99, 0.0, "EPSG:32660"),
        (-180.0, 0.0, "EPSG:32601"),
    ],
)
def test_utm_zone_follows_the_official_layout(lon: float, lat: float, expected: str) -> None:
    assert utm_crs(lon, lat) == expected


def test_outside_utm_and_bad_crs_are_refused() -> None:
    with pytest.raises(GeometryError, match="polar"):
        utm_zone(0.0, 85.0)
    with pytest.raises(GeometryError, match="'EPSG:99999999'"):
        check_crs("EPSG:99999999")
    assert check_crs("EPSG:4326") == "EPSG:4326"


def test_gsd_of_pleiades_is_half_a_metre(shared_data: Path) -> None:
    rpc = find_rpc(shared_data / "ventoux" / "left_image.tif")
    gsd = sensor_gsd_m(rpc, rpc.lon_off, rpc.lat_off, rpc.height_off)
    assert 0.45 < gsd < 0.6
    assert round_gsd_m(gsd) == pytest.approx(round(gsd, 2))


@pytest.mark.parametrize(("gsd", "rounded"), [(0.5123, 0.51), (2.96, 3.0), (12.34, 12.0)])
def test_gsd_rounding(gsd: float, rounded: float) -> None:
    assert round_gsd_m(gsd) == rounded


def _geobox(h: int = 700, w: int = 600) -> GeoBox:
    return GeoBox("EPSG:32631", (0.5, 0.0, 300000.0, 0.0, -0.5, 4800000.0), h, w)


def test_cog_is_valid_with_metadata_and_written_tile_by_tile(tmp_path: Path) -> None:
    geobox = _geobox()
    data = np.arange(2 * 700 * 600, dtype=np.uint16).reshape(2, 700, 600)
    dest = tmp_path / "out.tif"
    with CogWriter(dest, geobox, count=2, dtype="uint16", nodata=0,
                   descriptions=("pan", "nir")) as out:
        for r0 in (0, 512):
            for c0 in (0, 300):
                win = Window(r0, c0, min(512, 700 - r0), 300)
                out.write(win, data[(slice(None), *win.slices())])
    valid, errors, _ = cog_validate(str(dest))
    assert valid, errors
    with rasterio.open(dest) as src:
        assert src.crs.to_string() == "EPSG:32631"
        assert tuple(src.transform)[:6] == geobox.transform
        assert src.nodata == 0 and src.descriptions == ("pan", "nir")
        assert src.overviews(1)
        np.testing.assert_array_equal(src.read(), data)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.tif"]


def test_a_failed_write_leaves_nothing_at_the_destination(tmp_path: Path) -> None:
    dest = tmp_path / "out.tif"
    dest.write_bytes(b"previous product")
    with pytest.raises(RuntimeError, match="boom"), CogWriter(
        dest, _geobox(), count=1, dtype="float32", nodata=np.nan
    ) as out:
        out.write(Window(0, 0, 10, 10), np.ones((1, 10, 10), np.float32))
        raise RuntimeError("boom")
    assert dest.read_bytes() == b"previous product"
    assert [p.name for p in tmp_path.iterdir()] == ["out.tif"]
    with pytest.raises(GeometryError, match=r"expected \(1, 10, 10\)"), CogWriter(
        tmp_path / "b.tif", _geobox(), count=1, dtype="uint8", nodata=0
    ) as out:
        out.write(Window(0, 0, 10, 10), np.ones((1, 9, 10), np.uint8))
    assert not (tmp_path / "b.tif").exists()
    with pytest.raises(RasterWriteError, match="does not exist"):
        write_cog(tmp_path / "nowhere" / "c.tif", np.ones((1, 700, 600), np.uint8), _geobox(),
                  nodata=0)


def test_read_window_and_truncated_files(tmp_path: Path) -> None:
    data = np.random.default_rng(0).integers(0, 4000, (1, 700, 600)).astype(np.uint16)
    dest = tmp_path / "img.tif"
    write_cog(dest, data, _geobox(), nodata=None)
    info = raster_info(dest)
    assert (info.shape, info.count, info.dtype, info.nodata) == ((700, 600), 1, "uint16", None)
    win = Window(13, 17, 100, 90)
    np.testing.assert_array_equal(read_window(dest, win), data[(slice(None), *win.slices())])
    with pytest.raises(GeometryError, match="not inside"):
        read_window(dest, Window(650, 0, 100, 10))
    truncated = tmp_path / "cut.tif"
    truncated.write_bytes(dest.read_bytes()[: dest.stat().st_size // 3])
    with pytest.raises(RasterReadError, match=r"cut\.tif"):
        read_window(truncated, Window(0, 0, 700, 600))
    with pytest.raises(RasterReadError, match="missing.tif"):
        raster_info(tmp_path / "missing.tif")
