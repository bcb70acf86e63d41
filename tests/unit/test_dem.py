"""Unit tests for ops.terrain.dem and ops.terrain.geoid on small synthetic grids written to tmp_path.

Bilinear sampling is checked against scipy's RegularGridInterpolator on the
same nodes; mosaics against analytic planes (bilinear reproduces planes
exactly, and so does Laplace hole filling inside a hole).
"""

from __future__ import annotations

import struct
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pyproj
import pytest
import rasterio
import rasterio.errors
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.typing import NDArray
from scipy.interpolate import RegularGridInterpolator

from ops.errors import DemCoverageError, DemError, RasterReadError
from ops.terrain.dem import Dem, fill_holes_laplace
from ops.terrain.geoid import Geoid

pytestmark = pytest.mark.unit


def write_hgt(folder: Path, name: str, heights: NDArray[np.int16]) -> Path:
    path = folder / f"{name}.hgt"
    heights.astype(">i2").tofile(path)
    return path


def plane_tile(lat_s: int, lon_w: int, n: int = 11) -> NDArray[np.int16]:
    """Heights 100*lon + 10*lat (integers on a 0.1 degree node grid) of one SRTM-style tile."""
    step = 1.0 / (n - 1)
    lat = lat_s + 1 - step * np.arange(n)[:, None]
    lon = lon_w + step * np.arange(n)[None, :]
    return np.rint(100 * lon + 10 * lat).astype(np.int16)


def open_as_stored(source: Path | list[Path], **options: Any) -> Dem:
    """Dem.open of test tiles whose values are test planes, not SRTM heights: read as stored."""
    return Dem.open(source, vertical_datum="ellipsoid", **options)


def write_gtx(path: Path, grid_south_up: NDArray[np.float32], lat0: float, lon0: float,
              dlat: float, dlon: float) -> Path:
    rows, cols = grid_south_up.shape
    path.write_bytes(struct.pack(">4d2i", lat0, lon0, dlat, dlon, rows, cols)
                     + grid_south_up.astype(">f4").tobytes())
    return path


def scipy_reference(dem: Dem, lon: NDArray[np.float64], lat: NDArray[np.float64]
                    ) -> NDArray[np.float64]:
    """Independent bilinear interpolation of dem.heights_m at lon/lat (EPSG:4326 DEM)."""
    a, _, c, _, e, f = dem.transform
    n_rows, n_cols = dem.heights_m.shape
    lats = f + e * (np.arange(n_rows) + 0.5)
    lons = c + a * (np.arange(n_cols) + 0.5)
    interp = RegularGridInterpolator((lats[::-1], lons), dem.heights_m[::-1].astype(np.float64))
    return np.asarray(interp(np.column_stack([lat, lon])), dtype=np.float64)


# ---------------------------------------------------------------- sampling


def test_bilinear_matches_scipy_on_random_grid() -> None:
    rng = np.random.default_rng(0)
    heights = rng.uniform(-50, 3000, size=(37, 53))
    dem = Dem.from_array(heights, (0.01, 0, 10.0, 0, -0.01, 45.0), "EPSG:4326")
    lon = rng.uniform(10.005, 10.005 + 0.52, 20000)
    lat = rng.uniform(45.0 - 0.005 - 0.36, 44.995, 20000)
    np.testing.assert_allclose(dem.heights(lon, lat), scipy_reference(dem, lon, lat),
                               rtol=0, atol=1e-6)


@settings(max_examples=40, deadline=None)
@given(
    rows=st.integers(2, 9), cols=st.integers(2, 9), seed=st.integers(0, 2**31),
    fr=st.floats(0, 1), fc=st.floats(0, 1),
)
def test_bilinear_matches_scipy_property(rows: int, cols: int, seed: int, fr: float,
                                         fc: float) -> None:
    rng = np.random.default_rng(seed)
    dem = Dem.from_array(rng.normal(100, 30, (rows, cols)), (1.0, 0, -3.0, 0, -1.0, 7.0),
                         "EPSG:4326")
    lon = np.array([-2.5 + fc * (cols - 1)])
    lat = np.array([6.5 - fr * (rows - 1)])
    np.testing.assert_allclose(dem.heights(lon, lat), scipy_reference(dem, lon, lat),
                               rtol=0, atol=1e-6)


def test_integer_node_gives_node_value_and_shape_is_kept() -> None:
    heights = np.arange(12.0).reshape(3, 4)
    dem = Dem.from_array(heights, (1.0, 0, 0.0, 0, -1.0, 3.0), "EPSG:4326")
    # node (i, j) is at lon j + 0.5, lat 2.5 - i
    out = dem.heights(np.array([[0.5, 3.5], [1.5, 2.5]]), np.array([[2.5, 0.5], [1.5, 1.5]]))
    assert out.shape == (2, 2)
    np.testing.assert_array_equal(out, [[0.0, 11.0], [5.0, 6.0]])


def test_outer_half_pixel_is_clamped_to_edge_nodes() -> None:
    heights = np.arange(12.0).reshape(3, 4)
    dem = Dem.from_array(heights, (1.0, 0, 0.0, 0, -1.0, 3.0), "EPSG:4326")
    # left edge of the footprint (lon 0.0) on row 1 -> node (1, 0); corner (4, 0) -> node (2, 3)
    np.testing.assert_array_equal(dem.heights([0.0, 4.0], [1.5, 0.0]), [4.0, 11.0])


def test_nan_coordinates_give_nan() -> None:
    dem = Dem.from_array(np.ones((3, 3)), (1.0, 0, 0.0, 0, -1.0, 3.0), "EPSG:4326")
    out = dem.heights([np.nan, 1.5], [1.5, 1.5])
    assert np.isnan(out[0]) and out[1] == 1.0


def test_point_outside_raises_coverage_error_naming_dem_and_box() -> None:
    dem = Dem.from_array(np.ones((3, 3)), (1.0, 0, 0.0, 0, -1.0, 3.0), "EPSG:4326",
                         source="tiny-dem")
    with pytest.raises(DemCoverageError, match=r"tiny-dem.*lon \[3\.200000, 5\.000000\]"):
        dem.heights([1.0, 3.2, 5.0], [1.0, 1.0, 2.0])
    lenient = dem.heights([1.0, 3.2, 5.0], [1.0, 1.0, 2.0], strict=False)
    assert lenient[0] == 1.0 and np.isnan(lenient[1:]).all()


def test_longitudes_wrap_for_geographic_dem() -> None:
    # a DEM stored in 0..360 longitudes, sampled with -180..180 ones
    heights = np.arange(20.0).reshape(4, 5)
    dem = Dem.from_array(heights, (1.0, 0, 200.0, 0, -1.0, 10.0), "EPSG:4326")
    np.testing.assert_array_equal(dem.heights([-159.5, 200.5], [9.5, 9.5]), [0.0, 0.0])


# ---------------------------------------------------------------- holes


def test_laplace_fill_reproduces_a_plane_inside_a_hole() -> None:
    rows, cols = np.mgrid[0:20, 0:30]
    plane = (3.0 * rows - 2.0 * cols + 500.0).astype(np.float32)
    damaged = plane.copy()
    damaged[5:12, 8:20] = np.nan
    damaged[15, 25] = np.nan
    dem = Dem.from_array(damaged, (1.0, 0, 0.0, 0, -1.0, 20.0), "EPSG:4326")
    assert dem.holes_filled == 7 * 12 + 1 and dem.holes_left == 0
    np.testing.assert_allclose(dem.heights_m, plane, atol=1e-3)


def test_fill_leaves_components_without_valid_neighbours() -> None:
    heights = np.full((4, 6), np.nan, dtype=np.float32)
    heights[:, :3] = 7.0
    heights[1, 1] = np.nan
    usable = np.ones(heights.shape, dtype=bool)
    usable[:, 3] = False  # a gap cuts the right-hand hole off from every valid node
    holes = np.isnan(heights) & usable
    assert fill_holes_laplace(heights, holes, usable) == 1
    assert heights[1, 1] == pytest.approx(7.0)
    assert np.isnan(heights[:, 4:]).all()


def test_unfilled_hole_raises_naming_location_but_neighbour_node_samples() -> None:
    heights = np.full((5, 5), 10.0)
    heights[2, 2] = np.nan
    dem = Dem.from_array(heights, (1.0, 0, 0.0, 0, -1.0, 5.0), "EPSG:4326", fill_holes=False,
                         source="holey")
    assert dem.holes_filled == 0 and dem.holes_left == 1
    # node (2, 1) is at lon 1.5, lat 2.5: exactly on a valid node next to the hole
    assert dem.heights(1.5, 2.5) == 10.0
    with pytest.raises(DemError, match=r"holey has a nodata hole.*lon 2\.200000, lat 2\.400000") as ei:
        dem.heights([1.5, 2.2], [2.5, 2.4])
    assert not isinstance(ei.value, DemCoverageError)
    assert np.isnan(dem.heights([1.5, 2.2], [2.5, 2.4], strict=False)).tolist() == [False, True]
    with pytest.raises(DemError, match="hole in the footprint"):
        dem.min_max(2.0, 2.0, 3.0, 3.0)
    assert dem.min_max(0.0, 0.0, 1.0, 1.0) == (10.0, 10.0)


# ---------------------------------------------------------------- min/max


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**31), box=st.tuples(*(st.floats(0.0, 1.0) for _ in range(4))))
def test_min_max_is_conservative_and_tight(seed: int, box: tuple[float, ...]) -> None:
    rng = np.random.default_rng(seed)
    heights = rng.normal(0, 100, (12, 15))
    dem = Dem.from_array(heights, (0.1, 0, 2.0, 0, -0.1, 48.0), "EPSG:4326")
    left, bottom, right, top = dem.bounds_lonlat
    lon0, lon1 = sorted(left + (right - left) * np.array(box[:2]))
    lat0, lat1 = sorted(bottom + (top - bottom) * np.array(box[2:]))
    hmin, hmax = dem.min_max(lon0, lat0, lon1, lat1)
    lon = rng.uniform(lon0, lon1, 2000)
    lat = rng.uniform(lat0, lat1, 2000)
    h = dem.heights(np.r_[lon, lon0, lon1, lon0, lon1], np.r_[lat, lat0, lat0, lat1, lat1])
    assert hmin <= h.min() + 1e-9 and h.max() <= hmax + 1e-9
    # tight: the extreme nodes lie within one node of the box
    a = 0.1
    near = dem.heights_m[
        max(int((48.0 - lat1) / a - 0.5) - 1, 0):int((48.0 - lat0) / a + 0.5) + 2,
        max(int((lon0 - 2.0) / a - 0.5) - 1, 0):int((lon1 - 2.0) / a + 0.5) + 2,
    ]
    assert near.min() <= hmin and hmax <= near.max()


def test_min_max_outside_raises_coverage_error() -> None:
    dem = Dem.from_array(np.ones((3, 3)), (1.0, 0, 0.0, 0, -1.0, 3.0), "EPSG:4326", source="d")
    with pytest.raises(DemCoverageError, match=r"d .*lon \[2\.0, 3\.5\], lat \[1\.0, 2\.0\]"):
        dem.min_max(2.0, 1.0, 3.5, 2.0)
    with pytest.raises(DemError, match="min <= max"):
        dem.min_max(2.0, 1.0, 1.0, 2.0)


# ---------------------------------------------------------------- projected DEM


def test_projected_dem_samples_through_pyproj() -> None:
    # UTM 31N plane h = 0.01 x - 0.02 y + c: bilinear reproduces it at any point
    x0, y0, res = 600000.0, 4900000.0, 30.0
    rows, cols = np.mgrid[0:200, 0:200]
    xc, yc = x0 + res * (cols + 0.5), y0 - res * (rows + 0.5)
    dem = Dem.from_array(0.01 * (xc - x0) - 0.02 * (yc - y0), (res, 0, x0, 0, -res, y0),
                         "EPSG:32631")
    to_ll = pyproj.Transformer.from_crs("EPSG:32631", "EPSG:4326", always_xy=True)
    rng = np.random.default_rng(1)
    x = rng.uniform(x0 + 15, x0 + 5985, 500)
    y = rng.uniform(y0 - 5985, y0 - 15, 500)
    lon, lat = to_ll.transform(x, y)
    np.testing.assert_allclose(dem.heights(lon, lat), 0.01 * (x - x0) - 0.02 * (y - y0),
                               atol=2e-3)
    b = dem.bounds_lonlat
    assert b[0] < lon.min() and lon.max() < b[2] and b[1] < lat.min() and lat.max() < b[3]
    # a lon/lat box is a slightly rotated quadrilateral in UTM: keep it well inside
    inner = (np.abs(x - x0 - 3000) < 1500) & (np.abs(y - y0 + 3000) < 1500)
    hmin, hmax = dem.min_max(lon[inner].min(), lat[inner].min(), lon[inner].max(),
                             lat[inner].max())
    h = dem.heights(lon[inner], lat[inner])
    assert hmin <= h.min() and h.max() <= hmax and hmax - hmin < 1.1 * (h.max() - h.min()) + 3
    with pytest.raises(DemCoverageError):
        dem.min_max(lon.min(), lat.min(), lon.max(), lat.max())


# ---------------------------------------------------------------- files and mosaics


def test_hgt_tiles_mosaic_into_one_continuous_plane(tmp_path: Path) -> None:
    for lat_s, lon_w in ((44, 5), (44, 6), (45, 5), (45, 6)):
        write_hgt(tmp_path, f"N{lat_s:02d}E{lon_w:03d}", plane_tile(lat_s, lon_w))
    dem = open_as_stored(tmp_path)
    assert dem.heights_m.shape == (21, 21) and dem.gap_mask is None
    assert dem.source == str(tmp_path)
    assert dem.bounds_lonlat == pytest.approx((4.95, 43.95, 7.05, 46.05))
    rng = np.random.default_rng(2)
    lon, lat = rng.uniform(5, 7, 1000), rng.uniform(44, 46, 1000)
    np.testing.assert_allclose(dem.heights(lon, lat), 100 * lon + 10 * lat, atol=1e-3)
    # SRTM nodes on whole degrees: tile corners are nodes
    assert dem.heights(6.0, 45.0) == 100 * 6 + 10 * 45


def test_bounds_lonlat_reads_only_the_area_plus_margin(tmp_path: Path) -> None:
    for lat_s, lon_w in ((44, 5), (44, 6)):
        write_hgt(tmp_path, f"N{lat_s:02d}E{lon_w:03d}", plane_tile(lat_s, lon_w))
    full = open_as_stored(tmp_path)
    part = open_as_stored(tmp_path, bounds_lonlat=(5.42, 44.31, 5.58, 44.49))
    # stencil nodes 44.3..44.5 and 5.4..5.6 (3 each), plus 2 margin nodes each side
    assert part.heights_m.shape == (3 + 2 * 2, 3 + 2 * 2)
    assert part.bounds_lonlat == pytest.approx((5.15, 44.05, 5.85, 44.75))
    lon = np.linspace(5.42, 5.58, 7)
    lat = np.linspace(44.31, 44.49, 7)
    np.testing.assert_allclose(part.heights(lon, lat), full.heights(lon, lat), rtol=0, atol=1e-9)


def test_pad_is_read_where_the_dem_has_it_and_never_required(tmp_path: Path) -> None:
    write_hgt(tmp_path, "N44E005", plane_tile(44, 5))
    # a footprint near the tile's east edge: its pad reaches beyond the tile
    dem = open_as_stored(tmp_path, bounds_lonlat=(5.80, 44.40, 5.95, 44.50), pad_deg=0.3)
    west, south, east, north = dem.bounds_lonlat
    # padded to 5.5 W (less 2 margin nodes of 0.1 deg), clipped to the tile's edges elsewhere
    assert (west, south, east, north) == pytest.approx((5.25, 43.95, 6.05, 45.05))
    # the footprint itself must still be covered
    with pytest.raises(DemCoverageError, match="does not cover"):
        open_as_stored(tmp_path, bounds_lonlat=(5.80, 44.40, 6.20, 44.50), pad_deg=0.3)
    # ... unless the box only says what to read
    partial = open_as_stored(tmp_path, bounds_lonlat=(5.80, 44.40, 6.20, 44.50), require_bounds=False)
    assert partial.bounds_lonlat[2] == pytest.approx(6.05)
    with pytest.raises(DemCoverageError, match="does not cover"):
        partial.heights(6.1, 44.45)
    with pytest.raises(DemError, match="pad_deg"):
        open_as_stored(tmp_path, bounds_lonlat=(5.80, 44.40, 5.95, 44.50), pad_deg=-1.0)


def test_tiles_across_the_antimeridian_mosaic_side_by_side(tmp_path: Path) -> None:
    west = write_hgt(tmp_path, "N10W180", np.full((11, 11), 2, np.int16))
    east = write_hgt(tmp_path, "N10E179", np.full((11, 11), 1, np.int16))
    # both tiles hold the node column on the antimeridian; the later one wins
    dem = open_as_stored([east, west])
    assert dem.heights_m.shape == (11, 21)
    np.testing.assert_array_equal(dem.heights([179.5, -179.5, 180.5, 180.0], [10.5] * 4),
                                  [1.0, 2.0, 2.0, 2.0])


def test_missing_tile_is_a_gap_not_a_hole(tmp_path: Path) -> None:
    for lat, lon in ((44, 5), (44, 6), (45, 5)):  # N45E006 missing
        write_hgt(tmp_path, f"N{lat:02d}E{lon:03d}", plane_tile(lat, lon))
    dem = open_as_stored(tmp_path)
    assert dem.holes_filled == 0 and dem.gap_mask is not None
    assert dem.heights(5.5, 45.5) == pytest.approx(100 * 5.5 + 10 * 45.5)
    with pytest.raises(DemCoverageError, match=r"does not cover lon \[6\.500000"):
        dem.heights(6.5, 45.5)
    with pytest.raises(DemCoverageError, match=r"no tile for part of the area"):
        dem.min_max(5.8, 45.2, 6.2, 45.4)
    with pytest.raises(DemCoverageError, match=r"lon \[6\.2, 6\.8\], lat \[45\.2, 45\.8\]"):
        open_as_stored(tmp_path, bounds_lonlat=(6.2, 45.2, 6.8, 45.8))


def test_hgt_voids_are_filled_and_counted(tmp_path: Path) -> None:
    tile = plane_tile(44, 5)
    tile[3:6, 4:7] = -32768  # nodes lat 44.7..44.5, lon 5.4..5.6
    path = write_hgt(tmp_path, "N44E005", tile)
    dem = open_as_stored(path)
    assert dem.holes_filled == 9 and dem.holes_left == 0
    assert dem.heights(5.53, 44.61) == pytest.approx(100 * 5.53 + 10 * 44.61, abs=1e-3)
    with pytest.raises(DemError, match="nodata hole"):
        open_as_stored(path, fill_holes=False).heights(5.53, 44.61)


def test_geotiff_and_hgt_tiles_mosaic_together(tmp_path: Path) -> None:
    write_hgt(tmp_path, "N44E005", plane_tile(44, 5))
    step = 0.1
    with rasterio.open(tmp_path / "east.tif", "w", driver="GTiff", height=11, width=11, count=1,
                       dtype="int16", crs="EPSG:4326", nodata=-32768,
                       transform=rasterio.Affine(step, 0, 6 - step / 2, 0, -step,
                                                 45 + step / 2)) as ds:
        ds.write(plane_tile(44, 6), 1)
    dem = open_as_stored([tmp_path / "N44E005.hgt", tmp_path / "east.tif"])
    assert dem.heights_m.shape == (11, 21)
    assert dem.heights(6.55, 44.45) == pytest.approx(100 * 6.55 + 10 * 44.45, abs=1e-3)


def test_mixed_crs_is_refused_naming_both_files(tmp_path: Path) -> None:
    write_hgt(tmp_path, "N44E005", plane_tile(44, 5))
    with rasterio.open(tmp_path / "utm.tif", "w", driver="GTiff", height=4, width=4, count=1,
                       dtype="float32", crs="EPSG:32631",
                       transform=rasterio.Affine(30, 0, 600000, 0, -30, 4900000)) as ds:
        ds.write(np.zeros((4, 4), np.float32), 1)
    with pytest.raises(DemError, match=r"N44E005\.hgt is EPSG:4326.*utm\.tif is EPSG:32631"):
        open_as_stored(tmp_path)


def test_file_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(RasterReadError, match="nope.tif"):
        open_as_stored(tmp_path / "nope.tif")
    with pytest.raises(RasterReadError, match="no DEM tiles in folder"):
        open_as_stored(tmp_path)
    (tmp_path / "N44E005.hgt").write_bytes(b"\x00" * 1000)
    with pytest.raises(DemError, match=r"N44E005\.hgt: 1000 bytes"):
        open_as_stored(tmp_path / "N44E005.hgt")
    bad_name = write_hgt(tmp_path, "somewhere", plane_tile(44, 5))
    with pytest.raises(DemError, match="somewhere.hgt"):
        open_as_stored(bad_name)
    (tmp_path / "junk.tif").write_bytes(b"not a tiff")
    with pytest.raises(RasterReadError, match="junk.tif"):
        open_as_stored(tmp_path / "junk.tif")
    with pytest.raises(DemError, match="empty list"):
        open_as_stored([])


def test_ungeoreferenced_tiff_is_refused(tmp_path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
        with rasterio.open(tmp_path / "plain.tif", "w", driver="GTiff", height=3, width=3,
                           count=1, dtype="float32") as ds:
            ds.write(np.zeros((3, 3), np.float32), 1)
    with pytest.raises(DemError, match=r"plain\.tif has no CRS"):
        open_as_stored(tmp_path / "plain.tif")


def test_bad_array_inputs_are_refused() -> None:
    with pytest.raises(DemError, match="'EPSG:99999999' is not understood"):
        Dem.from_array(np.ones((2, 2)), (1.0, 0, 0.0, 0, -1.0, 2.0), "EPSG:99999999")
    with pytest.raises(DemError, match="expected north-up"):
        Dem.from_array(np.ones((2, 2)), (1.0, 0, 0.0, 0, 1.0, 2.0), "EPSG:4326")
    with pytest.raises(DemError, match="expected 2-D"):
        Dem.from_array(np.ones(4), (1.0, 0, 0.0, 0, -1.0, 2.0), "EPSG:4326")


def test_all_nodata_is_refused(tmp_path: Path) -> None:
    path = write_hgt(tmp_path, "N44E005", np.full((11, 11), -32768, np.int16))
    with pytest.raises(DemError, match="only nodata"):
        open_as_stored(path)


# ---------------------------------------------------------------- geoid


def global_geoid_grid(lon0: float) -> tuple[NDArray[np.float32], NDArray[np.float64]]:
    """A 1-degree global grid (south row first) and the node longitudes."""
    lons = lon0 + np.arange(360.0)
    lats = -90 + np.arange(181.0)
    grid = (np.cos(np.radians(lons))[None, :] * 30 + lats[:, None] * 0.5).astype(np.float32)
    return grid, lons


@pytest.mark.parametrize("lon0", [-180.0, 0.0])
def test_gtx_wraps_around_the_antimeridian(tmp_path: Path, lon0: float) -> None:
    grid, _ = global_geoid_grid(lon0)
    geoid = Geoid.open(write_gtx(tmp_path / "g.gtx", grid, -90.0, lon0, 1.0, 1.0))
    assert geoid.periodic
    # 179.5 E is halfway between the nodes 179 E and 180 E (= -180 E)
    expected = 0.5 * (np.float32(np.cos(np.radians(179.0)) * 30) + np.float32(-30.0))
    for lon_deg in (179.5, -180.5, 539.5):
        assert geoid.undulation(lon_deg, 0.0) == pytest.approx(float(expected), abs=1e-5)
    lon = np.linspace(-180, 180, 97)
    np.testing.assert_allclose(geoid.undulation(lon, 10.25), geoid.undulation(lon + 360, 10.25),
                               atol=1e-9)
    # row 0 is the south pole
    assert geoid.undulation(0.0, -90.0) == pytest.approx(30 - 45)


def test_geoid_matches_scipy_inside_the_grid(tmp_path: Path) -> None:
    grid, lons = global_geoid_grid(-180.0)
    geoid = Geoid.open(write_gtx(tmp_path / "g.gtx", grid, -90.0, -180.0, 1.0, 1.0))
    interp = RegularGridInterpolator((-90 + np.arange(181.0), lons), grid.astype(np.float64))
    rng = np.random.default_rng(3)
    lat, lon = rng.uniform(-90, 90, 5000), rng.uniform(-180, 179, 5000)
    np.testing.assert_allclose(geoid.undulation(lon, lat), interp(np.column_stack([lat, lon])),
                               atol=1e-6)


def test_regional_geotiff_geoid_and_its_coverage(tmp_path: Path) -> None:
    values = np.arange(20, dtype=np.float32).reshape(4, 5)  # north row first
    with rasterio.open(tmp_path / "g.tif", "w", driver="GTiff", height=4, width=5, count=1,
                       dtype="float32", crs="EPSG:4326",
                       transform=rasterio.Affine(0.5, 0, 4.75, 0, -0.5, 45.25)) as ds:
        ds.write(values, 1)
    geoid = Geoid.open(tmp_path / "g.tif")
    assert not geoid.periodic
    assert geoid.undulation(5.0, 45.0) == 0.0 and geoid.undulation(6.0, 44.0) == 12.0
    with pytest.raises(DemCoverageError, match=r"g\.tif.*lon \[7\.500000"):
        geoid.undulation(7.5, 44.0)


def test_gtx_nodata_is_exactly_minus_88_8888(tmp_path: Path) -> None:
    grid = np.full((3, 4), -88.888, dtype=np.float32)  # a real value close to the marker
    grid[1, 2] = -88.8888
    geoid = Geoid.open(write_gtx(tmp_path / "g.gtx", grid, 40.0, 5.0, 1.0, 1.0))
    assert geoid.undulation(5.0, 40.0) == pytest.approx(-88.888)
    with pytest.raises(DemCoverageError, match="has no value at lon"):
        geoid.undulation(7.0, 41.0)


def test_geoid_file_errors(tmp_path: Path) -> None:
    with pytest.raises(RasterReadError, match="missing.gtx"):
        Geoid.open(tmp_path / "missing.gtx")
    (tmp_path / "short.gtx").write_bytes(struct.pack(">4d2i", -90, -180, 1, 1, 181, 360))
    with pytest.raises(DemError, match=r"short\.gtx: header says 181 x 360"):
        Geoid.open(tmp_path / "short.gtx")
    with rasterio.open(tmp_path / "utm.tif", "w", driver="GTiff", height=2, width=2, count=1,
                       dtype="float32", crs="EPSG:32631",
                       transform=rasterio.Affine(30, 0, 600000, 0, -30, 4900000)) as ds:
        ds.write(np.zeros((2, 2), np.float32), 1)
    with pytest.raises(DemError, match="expected a geographic"):
        Geoid.open(tmp_path / "utm.tif")


def test_dem_with_geoid_adds_the_undulation_at_every_node(tmp_path: Path) -> None:
    grid, _ = global_geoid_grid(-180.0)
    gtx = write_gtx(tmp_path / "g.gtx", grid, -90.0, -180.0, 1.0, 1.0)
    geoid = Geoid.open(gtx)
    heights = np.random.default_rng(4).uniform(0, 1000, (30, 40))
    transform = (0.05, 0, 5.0, 0, -0.05, 45.0)
    plain = Dem.from_array(heights, transform, "EPSG:4326")
    with_geoid = Dem.from_array(heights, transform, "EPSG:4326", geoid=gtx)
    assert with_geoid.geoid_source == str(gtx) and plain.geoid_source is None
    rows, cols = np.mgrid[0:30, 0:40]
    lon, lat = with_geoid.node_xy(rows, cols)
    np.testing.assert_allclose(with_geoid.heights(lon, lat),
                               plain.heights(lon, lat) + geoid.undulation(lon, lat), atol=1e-4)
    assert not with_geoid.heights_m.flags.writeable
