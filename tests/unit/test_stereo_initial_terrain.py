"""The initial surface (:mod:`ops.stereo.initial_terrain`) on generated pairs.

A pair over tilted relief gets the coarse pass's surface, close to the
truth everywhere the views overlap, defined beyond it and usable by the
kernel as its DEM; a pair over flat ground keeps the flat surface and says why.
The tilted pair is planned as the DSM product without a DEM (the surface is
estimated there, once): its plan task counts the surface's grid as it would
a DEM's, and the product records where its initial heights came from.
With a DEM (30 m posts, SRTM-like errors) the coarse pass runs on it: the
tilted pair's product takes the surface, closer to the truth than the DEM;
the flat pair keeps the DEM and says why, as it does when the DEM does not
cover the coarse pass.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
import scipy.ndimage as ndi

from ops.raster.crs import lonlat_transformer
from ops.stereo.initial_terrain import (
    ConstantTerrain,
    SurfaceTerrain,
    estimate_terrain,
    tie_terrain,
)
from ops.stereo.pair import StereoConfig, StereoPlan, declare_stereo_inputs, open_view
from ops.synthetic.scene import SceneSpec, SyntheticScene, generate_scene, truth_heights
from ops.terrain.dem import Dem
from planner.geometry.grid import GeoBox
from scheduler.products.kernels import StereoPlanTask
from scheduler.products.product import SMALL_RESULT_BYTES, DsmStep, SceneInput, plan_dsm_product

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def tilted(tmp_path_factory: pytest.TempPathFactory) -> SyntheticScene:
    return generate_scene(SceneSpec(width=256, height=256, relief_m=250.0, b_over_h=0.45,
                                    building_fraction=0.0, noise_sigma=0.004, seed=3),
                          tmp_path_factory.mktemp("tilted"))


@pytest.fixture(scope="module")
def level(tmp_path_factory: pytest.TempPathFactory) -> SyntheticScene:
    return generate_scene(SceneSpec(width=160, height=160, relief_m=0.0,
                                    building_fraction=0.0, noise_sigma=0.004, seed=3),
                          tmp_path_factory.mktemp("flat"))


def write_srtm_like_dem(scene: SyntheticScene, path: Path, margin_m: float = 300.0) -> Path:
    """The scene's heights on 30 m posts ``margin_m`` beyond its footprint (their mean
    beyond the scene) plus errors of 5 m std correlated over ~60 m."""
    x0, y0, x1, y1 = scene.footprint_utm
    box = GeoBox.from_bounds(scene.crs, x0 - margin_m, y0 - margin_m, x1 + margin_m,
                             y1 + margin_m, 30.0)
    error_m = ndi.gaussian_filter(
        np.random.default_rng(0).normal(size=(box.height, box.width)), 2.0)
    error_m *= 5.0 / error_m.std()
    heights_m = truth_heights(scene, box)
    heights_m = np.where(np.isfinite(heights_m), heights_m, np.nanmean(heights_m)) + error_m
    with rasterio.open(path, "w", driver="GTiff", width=box.width, height=box.height, count=1,
                       dtype="float32", crs=scene.crs,
                       transform=rasterio.Affine(*box.transform)) as dst:
        dst.write(heights_m.astype(np.float32), 1)
    return path


def every_4th_cell(scene: SyntheticScene, box: GeoBox
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Longitudes, latitudes and true heights of every 4th cell of ``box``."""
    rows, cols = np.mgrid[0 : box.height : 4, 0 : box.width : 4]
    lon, lat = lonlat_transformer(box.crs).transform(*box.xy(rows, cols))
    return lon, lat, truth_heights(scene, box)[::4, ::4]


def test_tilted_relief_gets_the_coarse_surface_and_flat_ground_keeps_the_flat_one(
    tilted: SyntheticScene, level: SyntheticScene,
) -> None:
    left, right = (open_view(p) for p in tilted.view_paths)
    product = plan_dsm_product(*(SceneInput(p.stem, str(p)) for p in tilted.view_paths),
                               DsmStep((), None), store=None)
    planned = product.tasks[0]
    assert isinstance(planned.fn, StereoPlanTask) and isinstance(planned.fn.plan, StereoPlan)
    prior = planned.fn.dem
    assert isinstance(prior, SurfaceTerrain), getattr(prior, "source", prior)
    assert "coarse pass" in prior.source
    assert planned.out_bytes == prior.dem.heights_m.nbytes > SMALL_RESULT_BYTES
    meta = product.writer.meta
    assert meta is not None and meta.provenance["dem"] is None
    assert meta.provenance["initial_heights"] == f"from the images, {prior.source}"

    flat, plan = tie_terrain(left, right, StereoConfig())
    lon, lat, truth = every_4th_cell(tilted, plan.geobox)
    seen = np.isfinite(truth)
    error_surface = np.abs(prior.heights(lon, lat) - truth)[seen]
    error_flat = np.abs(flat.heights(lon, lat) - truth)[seen]
    assert np.median(error_surface) < 1.5 < np.median(error_flat)
    assert np.median(error_surface) < 0.25 * np.median(error_flat)
    low, high = prior.min_max(float(lon.min()), float(lat.min()), float(lon.max()),
                              float(lat.max()))
    assert np.nanmin(truth) - 10.0 < low < high < np.nanmax(truth) + 10.0
    # beyond the overlap (matching context, other pairs) the edge heights hold
    far_lon, far_lat = float(lon.max()) + 0.1, float(lat.min()) - 0.1
    far = prior.heights(np.array([far_lon]), np.array([far_lat]))
    assert low <= far[0] <= high
    assert low <= prior.min_max(far_lon, far_lat, far_lon + 0.01, far_lat + 0.01)[0] <= high
    # the kernel plans on it and bounds every tile with it
    on_surface = planned.fn.plan
    inputs = declare_stereo_inputs(on_surface, on_surface.geobox, prior)
    assert not inputs.empty
    assert inputs.height_range_m[0] < np.nanmin(truth) < np.nanmax(truth) < (
        inputs.height_range_m[1])

    kept = estimate_terrain(*(open_view(p) for p in level.view_paths))
    assert isinstance(kept, ConstantTerrain)
    assert "flat kept: terrain tilt" in kept.source
    assert kept.height_m == pytest.approx(200.0, abs=0.5)


def test_with_a_dem_tilted_relief_gets_the_coarse_surface_on_it_and_flat_ground_keeps_it(
    tilted: SyntheticScene, level: SyntheticScene, tmp_path: Path,
) -> None:
    dem_path = write_srtm_like_dem(tilted, tmp_path / "tilted_dem.tif")
    product = plan_dsm_product(*(SceneInput(p.stem, str(p)) for p in tilted.view_paths),
                               DsmStep((), str(dem_path)), store=None)
    planned = product.tasks[0]
    assert isinstance(planned.fn, StereoPlanTask) and isinstance(planned.fn.plan, StereoPlan)
    prior = planned.fn.dem
    assert isinstance(prior, SurfaceTerrain), getattr(prior, "source", prior)
    assert f"coarse pass on {dem_path}" in prior.source

    lon, lat, truth = every_4th_cell(tilted, planned.fn.plan.geobox)
    seen = np.isfinite(truth)
    error_surface = np.abs(prior.heights(lon, lat) - truth)[seen]
    error_dem = np.abs(Dem.open(dem_path).heights(lon, lat) - truth)[seen]
    assert np.median(error_surface) < 1.5 < np.median(error_dem)
    assert np.median(error_surface) < 0.5 * np.median(error_dem)

    level_dem = Dem.open(write_srtm_like_dem(level, tmp_path / "flat_dem.tif"))
    kept = estimate_terrain(*(open_view(p) for p in level.view_paths), StereoConfig(),
                            level_dem)
    assert isinstance(kept, Dem)
    assert kept.source.startswith(f"{level_dem.source}; DEM kept: terrain tilt")
    # a DEM that covers the full-resolution pass but not the coarse one's 4x wider context
    tight = Dem.open(write_srtm_like_dem(level, tmp_path / "tight_dem.tif", margin_m=120.0))
    kept = estimate_terrain(*(open_view(p) for p in level.view_paths), StereoConfig(), tight)
    assert isinstance(kept, Dem)
    assert kept.source.startswith(f"{tight.source}; DEM kept: the coarse pass reaches beyond")
