"""A DEM's vertical reference is known per source and the geoid is applied or demanded.

Also: a file opened as a geoid must look like one (a DEM tile is refused),
and holes beyond the stated share of a footprint are an error unless allowed.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
import rasterio
from numpy.typing import NDArray
from rasterio.crs import CRS

from ops.errors import DemError
from ops.terrain.dem import MAX_HOLE_FRACTION, Dem
from ops.terrain.geoid import Geoid

pytestmark = pytest.mark.unit

STEP = 0.1  # node spacing of the test tiles (degrees)


def _plane(n: int = 11) -> NDArray[np.float32]:
    return (100.0 + np.arange(n)[:, None] + 2.0 * np.arange(n)[None, :]).astype(np.float32)


def _hgt(folder: Path, name: str = "N44E005", heights: NDArray[np.float32] | None = None) -> Path:
    path = folder / f"{name}.hgt"
    (heights if heights is not None else _plane()).astype(">i2").tofile(path)
    return path


def _tif(path: Path, values: NDArray[np.float32], *, crs: str = "EPSG:4326",
         dtype: str = "float32", west: float = 5.0, north: float = 45.0,
         step: float = STEP, **tags: str) -> Path:
    rows, cols = values.shape
    with rasterio.open(path, "w", driver="GTiff", height=rows, width=cols, count=1, dtype=dtype,
                       crs=CRS.from_user_input(crs), nodata=-32768,
                       transform=rasterio.Affine(step, 0, west - step / 2, 0, -step,
                                                 north + step / 2)) as ds:
        ds.write(values.astype(dtype), 1)
        if tags:
            ds.update_tags(**tags)
    return path


def _global_gtx(path: Path, value_m: float = 40.0) -> Path:
    grid = np.full((181, 360), value_m, dtype=">f4")
    path.write_bytes(struct.pack(">4d2i", -90.0, -180.0, 1.0, 1.0, 181, 360) + grid.tobytes())
    return path


def test_srtm_hgt_without_geoid_is_refused_with_the_fix(tmp_path: Path) -> None:
    hgt = _hgt(tmp_path)
    with pytest.raises(DemError) as info:
        Dem.open(hgt)
    message = str(info.value)
    for part in ("N44E005.hgt", "EGM96", "SRTM .hgt", "--geoid", "--dem-heights ellipsoid"):
        assert part in message, message
    gtx = _global_gtx(tmp_path / "g.gtx")
    dem = Dem.open(hgt, geoid=gtx)
    assert (dem.vertical_datum, dem.geoid_source) == ("egm96", str(gtx))
    assert dem.heights(5.0, 45.0) == pytest.approx(100.0 + 40.0)
    stated = Dem.open(hgt, vertical_datum="ellipsoid")
    assert stated.vertical_datum == "ellipsoid" and "stated" in stated.vertical_reason
    assert stated.heights(5.0, 45.0) == pytest.approx(100.0)
    with pytest.raises(DemError, match="'wgs84'; expected one of ellipsoid, egm96, egm2008"):
        Dem.open(hgt, vertical_datum="wgs84")


@pytest.mark.parametrize(("name", "crs", "tags", "datum"), [
    ("N29E031_KHEOPS.tif", "EPSG:4326", {}, "egm96"),         # SRTM tile name
    ("n44_e005_1arc_v3.tif", "EPSG:4326", {}, "egm96"),       # USGS SRTM name
    ("srtm_38_05.tif", "EPSG:4326", {}, "egm96"),             # CGIAR SRTM name
    ("dem.tif", "EPSG:4326+5773", {}, "egm96"),               # compound CRS, EGM96 height
    ("dem.tif", "EPSG:4326", {"VERTICAL_DATUM": "EGM2008"}, "egm2008"),
    ("Copernicus_DSM_10_N44_00_E005_00_DEM.tif", "EPSG:4326", {}, "egm2008"),
])
def test_geoid_references_are_read_from_name_crs_and_tags(
    tmp_path: Path, name: str, crs: str, tags: dict[str, str], datum: str
) -> None:
    path = _tif(tmp_path / name, _plane(), crs=crs, **tags)
    with pytest.raises(DemError, match=rf"above the {datum.upper()} geoid"):
        Dem.open(path)
    dem = Dem.open(path, geoid=_global_gtx(tmp_path / "g.gtx"))
    assert dem.vertical_datum == datum


def test_a_file_stating_nothing_is_assumed_ellipsoidal_and_says_so(tmp_path: Path) -> None:
    path = _tif(tmp_path / "dem.tif", _plane())
    dem = Dem.open(path)
    assert dem.vertical_datum == "ellipsoid" and "taken as ellipsoidal" in dem.vertical_reason
    # a geoid given for it says its heights are above that geoid
    with_geoid = Dem.open(path, geoid=_global_gtx(tmp_path / "g.gtx", 12.5))
    assert with_geoid.vertical_datum == "geoid"
    assert with_geoid.heights(5.0, 45.0) == pytest.approx(dem.heights(5.0, 45.0) + 12.5)


def test_ellipsoidal_heights_refuse_a_geoid_and_tiles_must_agree(tmp_path: Path) -> None:
    ellipsoidal = _tif(tmp_path / "e.tif", _plane(), crs="EPSG:4979", west=6.0)
    assert Dem.open(ellipsoidal).vertical_datum == "ellipsoid"
    with pytest.raises(DemError, match=r"heights are ellipsoidal \(e\.tif: CRS .*3D.*g\.gtx"):
        Dem.open(ellipsoidal, geoid=_global_gtx(tmp_path / "g.gtx"))
    hgt = _hgt(tmp_path)
    with pytest.raises(DemError, match=r"different vertical references: N44E005\.hgt .*e\.tif"):
        Dem.open([hgt, ellipsoidal])


def test_a_dem_tile_is_refused_as_geoid(tmp_path: Path) -> None:
    heights = _plane(21) * 10.0  # 1000..1600 m
    with pytest.raises(DemError, match=r"data type int16, not floating point.*is this a DEM"):
        Geoid.open(_tif(tmp_path / "int.tif", heights, dtype="int16"))
    with pytest.raises(DemError, match=r"values 1000\.0\.\.1600\.0 m, outside the -110\.\.\+90 m"):
        Geoid.open(_tif(tmp_path / "high.tif", heights))
    with pytest.raises(DemError, match=r"spans 2\.1 x 1\.1 degrees"):
        Geoid.open(_tif(tmp_path / "small.tif", np.full((11, 21), 40.0, np.float32)))
    with pytest.raises(DemError, match="is this a DEM"):
        Dem.open(_hgt(tmp_path), geoid=_tif(tmp_path / "geo.tif", heights))
    assert Geoid.open(_global_gtx(tmp_path / "g.gtx")).periodic


def test_holes_beyond_the_limit_are_an_error_unless_allowed(tmp_path: Path) -> None:
    heights = _plane(21).astype(np.int16)
    heights[5:16, 5:16] = -32768  # nodes lat 44.75..44.25, lon 5.25..5.75 (0.05 deg steps)
    hgt = _hgt(tmp_path, "N44E005", heights.astype(np.float32))
    box = (5.35, 44.35, 5.65, 44.65)  # entirely inside the hole
    with pytest.raises(DemError, match=r"100 % of its nodes under lon \[5\.35, 5\.65\].*holes"):
        Dem.open(hgt, vertical_datum="egm96", geoid=_global_gtx(tmp_path / "g.gtx"),
                 bounds_lonlat=box)
    dem = Dem.open(hgt, vertical_datum="ellipsoid", bounds_lonlat=box, max_hole_fraction=1.0)
    assert dem.holes_filled > 0
    # the whole tile: 121 of 441 nodes (27 %) are holes, over the default 20 %
    assert 121 / 441 > MAX_HOLE_FRACTION
    with pytest.raises(DemError, match=r"27 % of its nodes under the whole DEM"):
        Dem.open(hgt, vertical_datum="ellipsoid")
    assert Dem.open(hgt, vertical_datum="ellipsoid", max_hole_fraction=0.3).holes_filled == 121
    with pytest.raises(DemError, match="max_hole_fraction"):
        Dem.open(hgt, vertical_datum="ellipsoid", max_hole_fraction=1.5)
