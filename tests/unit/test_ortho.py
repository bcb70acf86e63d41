"""The ortho kernel: exact tiling, mapping accuracy, resampling against references.

The scene: the real Ventoux RPC (500 x 500 crop) over a synthetic UTM DEM
with a smooth hill and flat-roofed "buildings" (height steps the sparse grid
must not smooth), and a random smooth texture as the raw image.
"""

from __future__ import annotations

import dataclasses
import gc
from pathlib import Path

import numpy as np
import pytest
import scipy.ndimage

from ops.errors import DemCoverageError, GeometryError
from ops.ortho import orthorectify
from ops.ortho.kernel import CUBIC_A
from ops.ortho.orthorectify import (
    HeightModel,
    OrthoPlan,
    declare_tile_input,
    default_geobox,
    exact_sensor_coords,
    interpolated_sensor_coords,
    mapping_error_px,
    ortho_tile,
    plan_ortho,
    tile_input_windows,
)
from ops.raster.crs import lonlat_transformer
from ops.sensor.footprint import declare_input_window
from ops.sensor.rpc import RpcModel
from ops.sensor.rpc_io import find_rpc
from ops.terrain.dem import Dem
from planner.geometry.grid import TileGrid, Window

pytestmark = pytest.mark.unit

SHAPE = (500, 500)


@pytest.fixture(scope="module")
def rpc(shared_data: Path) -> RpcModel:
    return find_rpc(shared_data / "ventoux" / "left_image.tif")


def _stepped_dem(rpc: RpcModel, margin_m: float = 150.0) -> Dem:
    """2 m UTM DEM around the crop: hill + 12 m buildings, heights near the RPC's offset."""
    lon, lat = rpc.localize(np.array([0, 0, 499, 499.0]), np.array([0, 499, 0, 499.0]),
                            np.full(4, rpc.height_off))
    x, y = lonlat_transformer("EPSG:32631", inverse=True).transform(lon, lat)
    x0, y1 = float(np.min(x)) - margin_m, float(np.max(y)) + margin_m
    n_rows = int((y1 - float(np.min(y)) + margin_m) / 2.0) + 1
    n_cols = int((float(np.max(x)) + margin_m - x0) / 2.0) + 1
    ii, jj = np.mgrid[0:n_rows, 0:n_cols].astype(np.float64)
    h = rpc.height_off + 40.0 * np.sin(ii / 37.0) * np.cos(jj / 23.0) + 0.3 * ii
    rng = np.random.default_rng(7)
    for _ in range(25):
        i, j = rng.integers(0, n_rows - 12), rng.integers(0, n_cols - 12)
        h[i : i + rng.integers(4, 12), j : j + rng.integers(4, 12)] += 12.0
    return Dem.from_array(h, (2.0, 0.0, x0, 0.0, -2.0, y1), "EPSG:32631", source="<stepped>")


@pytest.fixture(scope="module")
def heights(rpc: RpcModel) -> HeightModel:
    return HeightModel.from_dem(_stepped_dem(rpc))


def _texture(dtype: str, bands: int = 1, seed: int = 3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    noise = rng.normal(size=(bands, *SHAPE))
    smooth = scipy.ndimage.gaussian_filter(noise, sigma=(0, 1.5, 1.5))
    scaled = 1000.0 + 400.0 * smooth / smooth.std()
    return np.asarray(scaled, dtype=dtype)


def _plan(rpc: RpcModel, heights: HeightModel, **kw: object) -> OrthoPlan:
    geobox = default_geobox(rpc, SHAPE, heights, gsd_m=0.7)
    return plan_ortho(rpc, heights, geobox, SHAPE, **kw)  # type: ignore[arg-type]


def _whole(plan: OrthoPlan, image: np.ndarray) -> np.ndarray:
    window = Window(0, 0, plan.geobox.height, plan.geobox.width)
    return ortho_tile(plan, window, image, Window(0, 0, *SHAPE))


@pytest.mark.parametrize(("resampling", "dtype"), [("bilinear", "uint16"), ("bicubic", "float32")])
def test_tiles_assemble_to_the_whole_image_exactly(
    rpc: RpcModel, heights: HeightModel, resampling: str, dtype: str
) -> None:
    image = _texture(dtype, bands=2)
    plan = _plan(rpc, heights, band_count=2, dtype=dtype, resampling=resampling)
    assert plan.grid_step_px > 1  # the sparse grid is in use, so tiling is a real test
    whole = _whole(plan, image)
    assembled = np.full_like(whole, 123)
    grid = TileGrid(plan.geobox, 37, 53)
    for idx in grid.tiles():
        window = grid.window(idx)
        src_window = declare_tile_input(plan, window)
        block = None if src_window is None else image[(slice(None), *src_window.slices())]
        assembled[(slice(None), *window.slices())] = ortho_tile(plan, window, block, src_window)
    np.testing.assert_array_equal(assembled, whole)
    assert np.isfinite(whole).mean() > 0.3 if dtype == "float32" else (whole != 0).mean() > 0.3


def test_declared_windows_are_memoised_per_plan_and_dropped_with_it(
    rpc: RpcModel, heights: HeightModel
) -> None:
    plan = _plan(rpc, heights)
    margin = plan.radius + orthorectify.WINDOW_SAFETY_PX
    grid = TileGrid(plan.geobox, 128, 128)
    windows = [grid.window(idx) for idx in grid.tiles()]
    first = [declare_tile_input(plan, w) for w in windows]
    assert any(w is not None for w in first)
    for window, declared in zip(windows, first, strict=True):
        fresh = declare_input_window(plan.rpc, plan.heights, plan.geobox.window_geobox(window),
                                     plan.image_shape, margin_px=margin)
        assert declared == fresh
        assert declare_tile_input(plan, window) is declared  # asked again: the memo's answer
    # another plan of the same scene with a wider kernel gets its own windows
    bicubic = _plan(rpc, heights, resampling="bicubic")
    wider = [declare_tile_input(bicubic, w) for w in windows]
    assert any(a is not None and b is not None and b.height > a.height
               for a, b in zip(first, wider, strict=True))
    held = len(orthorectify._DECLARED)
    del plan, bicubic
    gc.collect()
    assert len(orthorectify._DECLARED) == held - 2


def test_mapping_meets_the_tolerance_over_building_steps(
    rpc: RpcModel, heights: HeightModel
) -> None:
    plan = _plan(rpc, heights)
    window = Window(plan.geobox.height // 2 - 60, plan.geobox.width // 2 - 60, 120, 120)
    assert mapping_error_px(plan, [window], plan.grid_step_px) <= 0.01
    # The DEM steps are honoured pixel by pixel: a coarse mapping of the heights
    # alone would be off by several pixels at the building edges.
    er, ec = exact_sensor_coords(plan, window)
    ir, ic = interpolated_sensor_coords(plan, window)
    assert np.max(np.hypot(er - ir, ec - ic)) <= 0.01


def _keys(t: np.ndarray) -> np.ndarray:
    t = np.abs(t)
    a = CUBIC_A
    near = ((a + 2) * t - (a + 3)) * t * t + 1
    far = ((a * t - 5 * a) * t + 8 * a) * t - 4 * a
    return np.where(t < 1, near, np.where(t < 2, far, 0.0))


def _reference_resample(image: np.ndarray, rows: np.ndarray, cols: np.ndarray, cubic: bool
                        ) -> np.ndarray:
    """Plain numpy bilinear / Keys cubic with edge clamping, at float coordinates."""
    if not cubic:
        return np.asarray(scipy.ndimage.map_coordinates(
            image.astype(np.float64), [rows, cols], order=1, mode="nearest"))
    y0, x0 = np.floor(rows).astype(int), np.floor(cols).astype(int)
    fy, fx = rows - y0, cols - x0
    out = np.zeros(rows.shape)
    h, w = image.shape
    for dy in range(-1, 3):
        for dx in range(-1, 3):
            tap = image[np.clip(y0 + dy, 0, h - 1), np.clip(x0 + dx, 0, w - 1)]
            out += _keys(fy - dy) * _keys(fx - dx) * tap
    return out


@pytest.mark.parametrize("resampling", ["bilinear", "bicubic"])
def test_resampling_matches_a_numpy_reference(
    rpc: RpcModel, heights: HeightModel, resampling: str
) -> None:
    image = _texture("float64")
    plan = _plan(rpc, heights, dtype="float64", resampling=resampling)
    ours = _whole(plan, image)[0]
    full = Window(0, 0, plan.geobox.height, plan.geobox.width)
    rows, cols = exact_sensor_coords(plan, full)
    inside = (rows >= 2) & (rows <= SHAPE[0] - 3) & (cols >= 2) & (cols <= SHAPE[1] - 3)
    ref = _reference_resample(image[0], rows[inside], cols[inside], resampling == "bicubic")
    slope = max(np.abs(np.diff(image[0], axis=0)).max(), np.abs(np.diff(image[0], axis=1)).max())
    # Only the mapping differs (<= 0.01 px on each axis); cubic amplifies slopes by <= 1.25.
    assert np.max(np.abs(ours[inside] - ref)) <= 0.01 * 2 * 1.25 * slope + 1e-9
    assert np.isnan(ours[~inside & ((rows < -0.5) | (cols > SHAPE[1] - 0.5))]).all()


def test_integer_output_is_rounded_and_saturated(rpc: RpcModel, heights: HeightModel) -> None:
    # uint16, the product's usual type (each pixel type compiles a kernel of its own)
    checker = ((np.indices(SHAPE).sum(axis=0) // 3) % 2 * 65535).astype(np.uint16)[None]
    as_float = _whole(_plan(rpc, heights, dtype="float64", resampling="bicubic"),
                      checker.astype(np.float64))
    as_uint16 = _whole(_plan(rpc, heights, dtype="uint16", resampling="bicubic", nodata=0),
                       checker)
    valid = np.isfinite(as_float)
    assert as_float[valid].max() > 65535.5 and as_float[valid].min() < -0.5  # cubic overshoots
    expected = np.clip(np.floor(as_float[valid] + 0.5), 0, 65535)
    np.testing.assert_array_equal(as_uint16[valid], expected)


def test_source_nodata_propagates(rpc: RpcModel, heights: HeightModel) -> None:
    image = _texture("int16")
    image[0, 200:260, 200:260] = -9999
    plan = _plan(rpc, heights, dtype="int16", src_nodata=-9999.0)
    out = _whole(plan, image)[0]
    assert plan.nodata == -9999.0
    rows, cols = exact_sensor_coords(plan, Window(0, 0, *plan.geobox.shape))
    hole = (rows > 201) & (rows < 258) & (cols > 201) & (cols < 258)
    assert hole.any() and (out[hole] == -9999).all()
    assert (out[(rows > 100) & (rows < 150) & (cols > 100) & (cols < 150)] != -9999).all()


def test_a_too_small_input_window_is_reported(rpc: RpcModel, heights: HeightModel) -> None:
    plan = _plan(rpc, heights)
    window = Window(plan.geobox.height // 2, plan.geobox.width // 2, 64, 64)
    rows, cols = exact_sensor_coords(plan, window)
    needed = Window.bounding(rows, cols)  # the taps' span, before any margin
    short = Window(needed.row_off + 2, needed.col_off + 2, needed.height - 4, needed.width - 4)
    image = _texture("float32")
    with pytest.raises(GeometryError, match="outside the declared input window"):
        ortho_tile(plan, window, image[(slice(None), *short.slices())], short)


def test_default_grid_is_utm_at_the_sensor_gsd(rpc: RpcModel, heights: HeightModel) -> None:
    geobox = default_geobox(rpc, SHAPE, heights)
    assert geobox.crs == "EPSG:32631"
    assert 0.45 <= geobox.resolution[0] <= 0.6
    assert geobox.transform[2] % geobox.resolution[0] == pytest.approx(0.0, abs=1e-6)


def test_a_dem_missing_the_footprint_is_refused(rpc: RpcModel) -> None:
    small = HeightModel.from_dem(_stepped_dem(rpc, margin_m=-50.0))
    with pytest.raises(DemCoverageError, match="<stepped>.*footprint"):
        default_geobox(rpc, SHAPE, small)


def test_one_height_rule_for_the_dem_the_reference_and_the_kernel(
    rpc: RpcModel, heights: HeightModel
) -> None:
    """Dem, the ortho's reference and its kernel sample one way; off the DEM: no height.

    The plan is made over the big DEM, then given one 50 m short of the
    footprint on every side: Dem.heights refuses the points off it, the
    reference gives them NaN and the kernel's mapping NaN (output nodata),
    where the old kernel held the edge heights.
    """
    small_dem = _stepped_dem(rpc, margin_m=-50.0)
    plan = dataclasses.replace(_plan(rpc, heights), heights=HeightModel.from_dem(small_dem))
    full = Window(0, 0, *plan.geobox.shape)
    rr, cc = np.meshgrid(np.arange(full.height, dtype=np.float64),
                         np.arange(full.width, dtype=np.float64), indexing="ij")
    lon, lat = lonlat_transformer(plan.geobox.crs).transform(*plan.geobox.xy(rr, cc))
    ref = plan.heights.heights_at(lon, lat)
    off = np.isnan(ref)
    assert 0.05 < off.mean() < 0.9
    np.testing.assert_array_equal(ref[~off], small_dem.heights(lon[~off], lat[~off]))
    with pytest.raises(DemCoverageError, match="<stepped>"):
        small_dem.heights(lon[off][:5], lat[off][:5])
    rows, _ = interpolated_sensor_coords(plan, full)
    # the kernel interpolates the DEM coordinates on its sparse grid: the edge may move by a pixel
    edge = scipy.ndimage.binary_dilation(off) & ~scipy.ndimage.binary_erosion(off)
    np.testing.assert_array_equal(np.isnan(rows)[~edge], off[~edge])


def test_tile_declarations_for_the_planner(rpc: RpcModel, heights: HeightModel) -> None:
    plan = _plan(rpc, heights)
    grid = TileGrid(plan.geobox, 128, 128)
    declared = {idx: tile_input_windows(plan, "raw.tif", grid.window(idx)) for idx in grid.tiles()}
    assert all(len(d) <= 1 for d in declared.values())
    windows = [d[0] for d in declared.values() if d]
    assert windows and all(w.raster == "raw.tif" for w in windows)
    assert all(w.window.clip(*SHAPE) == w.window for w in windows)
    # Far tiles (grid corners outside the rotated footprint) may read nothing at all.
    assert sum(w.window.size for w in windows) < 3 * SHAPE[0] * SHAPE[1]


def test_integer_fast_path_equals_the_general_path(rpc: RpcModel, heights: HeightModel) -> None:
    """Bilinear on uint16 without nodata takes its own loop; it must agree with the float one."""
    image = _texture("uint16")
    as_float = _whole(_plan(rpc, heights, dtype="float64"), image.astype(np.float64))
    as_uint16 = _whole(_plan(rpc, heights, dtype="uint16", nodata=0), image)
    valid = np.isfinite(as_float)
    assert valid.mean() > 0.3
    np.testing.assert_array_equal(as_uint16[valid], np.floor(as_float[valid] + 0.5))
    assert (as_uint16[~valid] == 0).all()


def test_more_height_levels_take_the_general_path(rpc: RpcModel, heights: HeightModel) -> None:
    """Two levels have their own mapping loop; more levels (the level chosen per pixel) agree."""
    plan2 = _plan(rpc, heights, dtype="uint16")  # the image's type: no kernel of its own
    assert plan2.n_levels == 2
    plan5 = dataclasses.replace(plan2, n_levels=5, dh_m=plan2.dh_m / 4)
    window = Window(plan2.geobox.height // 2 - 60, plan2.geobox.width // 2 - 60, 120, 120)
    r2, c2 = interpolated_sensor_coords(plan2, window)
    r5, c5 = interpolated_sensor_coords(plan5, window)
    assert 0 < np.max(np.hypot(r5 - r2, c5 - c2)) <= 0.01
    assert mapping_error_px(plan5, [window], plan5.grid_step_px) <= 0.01
    image = _texture("uint16")
    whole = _whole(plan5, image)
    half = Window(0, 0, plan5.geobox.height // 2, plan5.geobox.width)
    src_window = declare_tile_input(plan5, half)
    assert src_window is not None
    top = ortho_tile(plan5, half, image[(slice(None), *src_window.slices())], src_window)
    np.testing.assert_array_equal(top, whole[:, : half.height])
