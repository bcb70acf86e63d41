"""ops.terrain.dem and ops.terrain.geoid on the real sample data, against independent references.

* EGM96: NGA's published test points (the EGM96 readme's interpolated values
  and the spherical-harmonic program F477's values), within the 15' grid's
  bilinear interpolation error. One point sits at 359.9995 E: wrap-around.
* ``.gtx`` and ``.hgt`` reading: our own readers against GDAL (GTX and SRTMHGT
  drivers) on the same files, node for node, including SRTM's pixel-is-point
  grid (nodes on whole degrees).
* bilinear sampling against scipy's RegularGridInterpolator on the same nodes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyproj
import pytest
import rasterio
import scipy.ndimage
from numpy.typing import NDArray
from scipy.interpolate import RegularGridInterpolator

from ops.errors import DemCoverageError, DemError
from ops.terrain.dem import Dem
from ops.terrain.geoid import Geoid

pytestmark = pytest.mark.integration

#: (lat, lon east 0..360, NGA readme value, F477 value), metres.
NGA_EGM96_POINTS = [
    (38.6281550, 269.7791550, -31.628, -31.629),
    (-14.6212170, 305.0211140, -2.969, -2.966),
    (46.8743190, 102.4487290, -43.575, -43.572),
    (-23.6174460, 133.8747120, 15.871, 15.868),
    (38.6254730, 359.9995000, 50.066, 50.065),
    (-0.4667440, 0.0023000, 17.329, 17.330),
]
#: Bilinear on the 15' grid: errors of a few centimetres over smooth areas
#: (GeographicLib reports an rms of 0.03 m, larger only near steep relief).
EGM96_BILINEAR_TOL_M = 0.1


@pytest.fixture(scope="module")
def geoid(shared_data: Path) -> Geoid:
    return Geoid.open(shared_data / "ventoux" / "geoid" / "egm96_15.gtx")


def open_as_stored(source: Path, **options: Any) -> Dem:
    """The heights as the file stores them (stated ellipsoidal: no geoid), as GDAL reads them."""
    return Dem.open(source, vertical_datum="ellipsoid", **options)


def scipy_bilinear(dem: Dem, lon: NDArray[np.float64], lat: NDArray[np.float64]
                   ) -> NDArray[np.float64]:
    a, _, c, _, e, f = dem.transform
    n_rows, n_cols = dem.heights_m.shape
    lats = f + e * (np.arange(n_rows) + 0.5)
    lons = c + a * (np.arange(n_cols) + 0.5)
    interp = RegularGridInterpolator((lats[::-1], lons), dem.heights_m[::-1].astype(np.float64))
    return np.asarray(interp(np.column_stack([lat, lon])), dtype=np.float64)


@pytest.mark.parametrize(("lat", "lon", "readme_m", "f477_m"), NGA_EGM96_POINTS)
def test_egm96_matches_nga_test_points(geoid: Geoid, lat: float, lon: float, readme_m: float,
                                       f477_m: float) -> None:
    for lon_deg in (lon, lon - 360.0):  # 0..360 and -180..180 longitudes alike
        n = float(geoid.undulation(lon_deg, lat))
        assert n == pytest.approx(readme_m, abs=EGM96_BILINEAR_TOL_M)
        assert n == pytest.approx(f477_m, abs=EGM96_BILINEAR_TOL_M)


def test_gtx_reader_agrees_with_gdal_node_for_node(shared_data: Path, geoid: Geoid) -> None:
    path = shared_data / "ventoux" / "geoid" / "egm96_15.gtx"
    with rasterio.open(path) as ds:
        ref = ds.read(1).astype(np.float64)
        a, _, c, _, e, f = tuple(ds.transform)[:6]
    rows, cols = np.mgrid[0:ref.shape[0]:7, 0:ref.shape[1]:5]
    lon = c + a * (cols + 0.5)
    lat = f + e * (rows + 0.5)
    np.testing.assert_allclose(geoid.undulation(lon, lat), ref[rows, cols], rtol=0, atol=1e-9)
    # continuity across the antimeridian: the ring closes
    edge = geoid.undulation(np.array([179.875, 180.0, -180.125 + 360.0]), 10.0)
    assert abs(edge[0] - edge[1]) < 0.5 and edge[2] == pytest.approx(edge[0])


def proj_vgridshift(gtx: Path) -> pyproj.Transformer:
    """PROJ's own bilinear reading of a vertical grid: an independent implementation."""
    return pyproj.Transformer.from_pipeline(
        "+proj=pipeline +step +proj=unitconvert +xy_in=deg +xy_out=rad "
        f"+step +proj=vgridshift +grids={gtx} +multiplier=1 "
        "+step +proj=unitconvert +xy_in=rad +xy_out=deg"
    )


def test_geoid_matches_proj_vgridshift_worldwide(shared_data: Path, geoid: Geoid) -> None:
    gtx = shared_data / "ventoux" / "geoid" / "egm96_15.gtx"
    rng = np.random.default_rng(7)
    lon = np.r_[rng.uniform(-180, 180, 50_000), 179.9, 179.875, -179.95, -0.0005]
    lat = np.r_[rng.uniform(-89.9, 89.9, 50_000), 10.0, -33.3, 60.0, 38.6254730]
    _, _, z = proj_vgridshift(gtx).transform(lon, lat, np.zeros_like(lon))
    np.testing.assert_allclose(geoid.undulation(lon, lat), z, rtol=0, atol=1e-6)


def test_srtm_plus_geoid_matches_proj(shared_data: Path, geoid: Geoid) -> None:
    gtx = shared_data / "ventoux" / "geoid" / "egm96_15.gtx"
    path = shared_data / "ventoux" / "srtm" / "N44E005.hgt"
    box = (5.4, 44.3, 5.7, 44.6)
    raw = open_as_stored(path, bounds_lonlat=box)
    ellipsoidal = Dem.open(path, bounds_lonlat=box, geoid=gtx)
    rows, cols = np.mgrid[0:raw.heights_m.shape[0], 0:raw.heights_m.shape[1]]
    lon, lat = raw.node_xy(rows, cols)
    _, _, h = proj_vgridshift(gtx).transform(lon, lat, raw.heights_m.astype(np.float64))
    # float32 storage: 1/8 mm steps at 2000 m
    np.testing.assert_allclose(ellipsoidal.heights_m, h, rtol=0, atol=5e-4)


def test_ventoux_geoid_is_about_50_m(geoid: Geoid) -> None:
    assert 49.0 < float(geoid.undulation(5.2785, 44.1739)) < 53.0


def test_hgt_reader_agrees_with_gdal_srtmhgt(shared_data: Path) -> None:
    path = shared_data / "ventoux" / "srtm" / "N44E005.hgt"
    dem = open_as_stored(path, fill_holes=False)
    with rasterio.open(path) as ds:
        assert ds.driver == "SRTMHGT"
        ref = ds.read(1, masked=True).astype(np.float64).filled(np.nan)
        gdal_transform = tuple(ds.transform)[:6]
    assert dem.transform == pytest.approx(gdal_transform, abs=1e-12)
    np.testing.assert_array_equal(np.isnan(dem.heights_m), np.isnan(ref))
    np.testing.assert_array_equal(dem.heights_m[~np.isnan(ref)], ref[~np.isnan(ref)])
    assert dem.holes_left == int(np.isnan(ref).sum()) > 0
    # pixel-is-point: node [0, 0] is at exactly 5 E, 45 N
    assert dem.heights(5.0, 45.0) == ref[0, 0]
    assert dem.heights(6.0, 44.0) == ref[-1, -1]


@pytest.mark.parametrize(("name", "n"), [("S12W077", 1201), ("N00E179", 3601), ("s01w001", 1201)])
def test_hgt_naming_and_sizes_agree_with_gdal(tmp_path: Path, name: str, n: int) -> None:
    """Hemispheres (S/W are negative) and 1" tiles, on files GDAL's SRTMHGT driver reads."""
    values = np.random.default_rng(8).integers(-400, 8000, (n, n)).astype(np.int16)
    values[5, 7] = -32768
    path = tmp_path / f"{name}.hgt"
    values.astype(">i2").tofile(path)
    dem = open_as_stored(path, fill_holes=False)
    with rasterio.open(path) as ds:
        assert ds.driver == "SRTMHGT"
        gdal_transform = tuple(ds.transform)[:6]
        ref = ds.read(1, masked=True).astype(np.float64).filled(np.nan)
    assert dem.transform == pytest.approx(gdal_transform, abs=1e-12)
    np.testing.assert_array_equal(dem.heights_m, ref.astype(np.float32))


def test_ventoux_voids_filled_within_their_rims(shared_data: Path) -> None:
    path = shared_data / "ventoux" / "srtm" / "N44E005.hgt"
    raw = open_as_stored(path, fill_holes=False).heights_m
    dem = open_as_stored(path)
    holes = np.isnan(raw)
    assert dem.holes_filled == int(holes.sum()) and dem.holes_left == 0
    assert not np.isnan(dem.heights_m).any()
    np.testing.assert_array_equal(dem.heights_m[~holes], raw[~holes])
    # maximum principle of harmonic filling: every hole stays within its rim's range
    labels, n = scipy.ndimage.label(holes)
    assert n > 10
    for k, (rows, cols) in enumerate(scipy.ndimage.find_objects(labels), start=1):
        rows = slice(max(rows.start - 1, 0), rows.stop + 1)
        cols = slice(max(cols.start - 1, 0), cols.stop + 1)
        component = labels[rows, cols] == k
        rim = scipy.ndimage.binary_dilation(component) & ~holes[rows, cols]
        filled = dem.heights_m[rows, cols][component]
        assert raw[rows, cols][rim].min() - 1e-3 <= filled.min()
        assert filled.max() <= raw[rows, cols][rim].max() + 1e-3


def test_sampling_real_dem_matches_scipy(shared_data: Path, geoid: Geoid) -> None:
    dem = Dem.open(shared_data / "ventoux" / "srtm" / "N44E005.hgt", geoid=geoid)
    rng = np.random.default_rng(5)
    lon, lat = rng.uniform(5.0, 6.0, 100_000), rng.uniform(44.0, 45.0, 100_000)
    np.testing.assert_allclose(dem.heights(lon, lat), scipy_bilinear(dem, lon, lat), rtol=0,
                               atol=1e-6)


def test_geoid_converts_srtm_to_ellipsoidal_heights(shared_data: Path, geoid: Geoid) -> None:
    path = shared_data / "ventoux" / "srtm" / "N44E005.hgt"
    plain = open_as_stored(path)
    ellipsoidal = Dem.open(path, geoid=geoid)
    lon, lat = np.array([5.2785, 5.9, 5.1]), np.array([44.1739, 44.9, 44.05])
    np.testing.assert_allclose(ellipsoidal.heights(lon, lat) - plain.heights(lon, lat),
                               geoid.undulation(lon, lat), atol=0.01)
    # Mont Ventoux summit is 1910 m above sea level; SRTM 3" smooths it a little
    assert 1880 < float(plain.heights(5.2785, 44.1739)) < 1915


def test_bounds_lonlat_window_matches_full_read(shared_data: Path, geoid: Geoid) -> None:
    path = shared_data / "ventoux" / "srtm" / "N44E005.hgt"
    box = (5.2, 44.1, 5.3, 44.2)
    full = Dem.open(path, geoid=geoid)
    part = Dem.open(path, geoid=geoid, bounds_lonlat=box)
    assert part.heights_m.size < full.heights_m.size / 50
    lon, lat = np.meshgrid(np.linspace(5.2, 5.3, 41), np.linspace(44.1, 44.2, 37))
    np.testing.assert_allclose(part.heights(lon, lat), full.heights(lon, lat), atol=1e-6)
    assert part.min_max(*box) == full.min_max(*box)
    hmin, hmax = part.min_max(*box)
    h = part.heights(lon, lat)
    assert hmin <= h.min() and h.max() <= hmax


def test_uncovered_area_names_area_and_dem(shared_data: Path) -> None:
    path = shared_data / "ventoux" / "srtm" / "N44E005.hgt"
    with pytest.raises(DemCoverageError, match=r"N44E005\.hgt.*lon \[6\.5, 6\.6\], lat \[44\.1"):
        open_as_stored(path, bounds_lonlat=(6.5, 44.1, 6.6, 44.2))
    with pytest.raises(DemCoverageError, match=r"N44E005\.hgt.*lon \[5\.9, 6\.2\]"):
        open_as_stored(path, bounds_lonlat=(5.9, 44.1, 6.2, 44.2))


def test_point_geotiff_crop_has_nodes_on_its_tags(shared_data: Path) -> None:
    """Gizeh's SRTM 1" crop is AREA_OR_POINT=Point: node [0, 0] at 31.1 E, 30.0 N."""
    folder = shared_data / "gizeh" / "srtm_dir"
    dem = open_as_stored(folder)
    with rasterio.open(folder / "N29E031_KHEOPS.tif") as ds:
        ref = ds.read(1).astype(np.float64)
    assert dem.heights(31.1, 30.0) == ref[0, 0]
    assert dem.heights(31.1 + 5 / 3600, 30.0 - 7 / 3600) == pytest.approx(ref[7, 5])
    assert dem.holes_filled == 0 and dem.source == str(folder)
    assert dem.min_max(*dem.bounds_lonlat) == (ref.min(), ref.max())


def test_area_geotiff_samples_like_scipy(shared_data: Path) -> None:
    dem = open_as_stored(shared_data / "dem_compare" / "srtm_ref.tif",
                   bounds_lonlat=(40.1, 39.3, 40.4, 39.6))
    rng = np.random.default_rng(6)
    lon, lat = rng.uniform(40.1, 40.4, 50_000), rng.uniform(39.3, 39.6, 50_000)
    np.testing.assert_allclose(dem.heights(lon, lat), scipy_bilinear(dem, lon, lat), rtol=0,
                               atol=1e-6)
    with rasterio.open(shared_data / "dem_compare" / "srtm_ref.tif") as ds:
        a, _, c, _, e, f = tuple(ds.transform)[:6]
        row, col = 600, 300
        value = ds.read(1, window=((row, row + 1), (col, col + 1)))[0, 0]
    # AREA_OR_POINT=Area: node (row, col) is the pixel's centre
    assert dem.heights(c + a * (col + 0.5), f + e * (row + 0.5)) == pytest.approx(value, abs=1e-6)


def test_real_srtm_sources_demand_the_geoid(shared_data: Path, geoid: Geoid) -> None:
    """Issue 14: SRTM without --geoid shifted a Pléiades ortho by 5-8 m, silently."""
    for source in (shared_data / "ventoux" / "srtm" / "N44E005.hgt",
                   shared_data / "gizeh" / "srtm_dir",
                   shared_data / "dem_compare" / "srtm_ref.tif"):
        with pytest.raises(DemError, match=r"above the EGM96 geoid .*--geoid"):
            Dem.open(source)
    dem = Dem.open(shared_data / "gizeh" / "srtm_dir", geoid=geoid)
    assert dem.vertical_datum == "egm96" and "N29E031_KHEOPS.tif" in dem.vertical_reason
    # Giza: the EGM96 geoid is about 15 m above the ellipsoid
    plain = open_as_stored(shared_data / "gizeh" / "srtm_dir")
    assert 10.0 < float(dem.heights(31.13, 29.98) - plain.heights(31.13, 29.98)) < 20.0


def test_a_dem_tile_given_as_geoid_is_refused(shared_data: Path) -> None:
    with pytest.raises(DemError, match=r"N44E005\.hgt: data type int16.*is this a DEM"):
        Geoid.open(shared_data / "ventoux" / "srtm" / "N44E005.hgt")
    with pytest.raises(DemError, match=r"N29E031_KHEOPS\.tif: data type int16"):
        Dem.open(shared_data / "ventoux" / "srtm" / "N44E005.hgt",
                 geoid=shared_data / "gizeh" / "srtm_dir" / "N29E031_KHEOPS.tif")
