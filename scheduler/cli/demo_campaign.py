"""The runtime's part of ``make demo``: a small DSM + ortho campaign on a local Ray cluster.

:func:`demo_campaign` takes a generated synthetic stereo scene (its folder,
as :func:`ops.synthetic.scene.generate_scene` leaves it), writes the coarse
initial DEM that stereo starts from (the scene's true heights every 30 m
over its footprint plus 300 m, standing in for SRTM), then runs, on a local
Ray cluster of ``workers`` CPUs, the flow

    get_flow(views).dsm([(view_0, view_1)]).ortho(dem).write(out)

with the progress bar and the summary. Products land under ``out`` as COGs
with STAC items beside them (``dsm/view_0+view_1.tif``, ``ortho/view_K.tif``)
and the manifest under ``out/_manifest``; running it again recomputes nothing.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from scheduler.cli.progress import run_with_progress
from scheduler.products.driver import Driver
from scheduler.products.flow import FlowReport, SceneInput
from scheduler.runtime.dispatch import DispatchOptions

COARSE_DEM_STEP_M = 30.0
COARSE_DEM_PAD_M = 300.0


def write_coarse_dem(scene_dir: Path, dest: Path) -> Path:
    """The scene's true heights on a 30 m grid around its footprint, as a GeoTIFF."""
    import rasterio

    from ops.synthetic.scene import SyntheticScene, truth_heights
    from planner.geometry.grid import GeoBox

    scene = SyntheticScene.load(scene_dir)
    x0, y0, x1, y1 = scene.footprint_utm
    pad = COARSE_DEM_PAD_M
    box = GeoBox.from_bounds(scene.crs, x0 - pad, y0 - pad, x1 + pad, y1 + pad,
                             COARSE_DEM_STEP_M)
    heights = truth_heights(scene, box)
    heights = np.where(np.isfinite(heights), heights, np.nanmean(heights)).astype(np.float32)
    with rasterio.open(dest, "w", driver="GTiff", height=box.height, width=box.width, count=1,
                       dtype="float32", crs=box.crs,
                       transform=rasterio.Affine(*box.transform)) as dst:
        dst.write(heights[None])
    return dest


def demo_campaign(scene_dir: Path, out: Path, *, workers: int = 2, tile_px: int = 256,
                  quiet: bool = False) -> FlowReport:
    """Run the demo campaign (see the module docstring) and return its report."""
    out.mkdir(parents=True, exist_ok=True)
    # kept beside the scene: its identity (size, mtime) is part of the DSM's product key
    coarse = scene_dir / "coarse_dem.tif"
    if not coarse.exists():
        write_coarse_dem(scene_dir, coarse)
    views = [SceneInput(f"view_{k}", str(scene_dir / f"view_{k}.tif")) for k in (0, 1)]
    driver = Driver(num_cpus=workers, options=DispatchOptions(max_bytes_in_flight=256 << 20))
    flow = (driver.get_flow(views)
            .dsm([("view_0", "view_1")], dem=coarse, tile_px=tile_px)
            .ortho(dem=scene_dir / "dem.tif", tile_px=tile_px)
            .write(out))
    return run_with_progress(flow, quiet=quiet)
