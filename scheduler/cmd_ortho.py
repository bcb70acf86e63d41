"""``eochain ortho``: orthorectify one raw scene into a Cloud-Optimized GeoTIFF.

The command a user of ``gdalwarp -rpc -to RPC_DEM=...`` or OTB's
OrthoRectification expects: the RPC model is found in the image or its
sidecar (``.geom``, ``.RPB``, ``_RPC.TXT``, DIMAP XML) without being named,
``--dem`` takes a file or a folder of tiles (read only around the image's
footprint), ``--geoid`` turns geoid heights (SRTM) into ellipsoidal ones.
The output grid is the footprint in its UTM zone at the sensor's GSD unless
``--crs``/``--gsd`` say otherwise. It runs tile by tile with a progress bar
and publishes the COG atomically: on any error nothing is left at ``-o``.
An ``-o`` that is one of the inputs is refused, an existing file is replaced
only with ``--overwrite``, and the output folder is checked writable before
any compute (:mod:`scheduler.output_path`).
"""

from __future__ import annotations

import os
from pathlib import Path

import click
import numpy as np
from tqdm import tqdm

from ops.acquisition import read_acquisition
from ops.crs import check_crs
from ops.dem import MAX_HOLE_FRACTION, Dem
from ops.errors import OpsError
from ops.footprint import lonlat_bounds
from ops.ortho import HeightModel, default_geobox, orthorectify, plan_ortho, tile_jobs
from ops.raster_io import raster_info
from ops.rpc import RpcModel
from ops.rpc_io import find_rpc
from planner.errors import PlannerError
from scheduler.geometry_options import dem_reference_options, rpc_source_options
from scheduler.guards import POSITIVE_FINITE, allow_large_option, check_product_grid
from scheduler.output_path import check_input_exists, check_output_file
from scheduler.runtime.provenance import ortho_metadata

#: Degrees read around the footprint where the DEM has them (~200 m); only the
#: footprint itself must be covered.
DEM_PAD_DEG = 0.002


def footprint_box(rpc: RpcModel, shape: tuple[int, int]) -> tuple[float, float, float, float]:
    """Lon/lat box of the image at the RPC's lowest and highest heights, padded."""
    h, w = shape
    rows = np.array([-0.5, -0.5, h - 0.5, h - 0.5, h / 2])
    cols = np.array([-0.5, w - 0.5, -0.5, w - 0.5, w / 2])
    lons, lats = [], []
    for height in (rpc.height_off - rpc.height_scale, rpc.height_off + rpc.height_scale):
        lon, lat = rpc.localize(rows, cols, np.full(rows.shape, height), check=False)
        lons.append(lon)
        lats.append(lat)
    lon_all, lat_all = np.concatenate(lons), np.concatenate(lats)
    ok = np.isfinite(lon_all) & np.isfinite(lat_all)
    if not ok.any():
        raise click.ClickException(f"{rpc.source}: cannot localise the image corners")
    return lonlat_bounds(lon_all[ok], lat_all[ok], pad_deg=0.0)


@click.command(name="ortho")
@click.argument("image", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--dem", "dem_path", required=True, type=click.Path(path_type=Path),
              help="DEM file or folder of DEM tiles (SRTM .hgt, GeoTIFF).")
@click.option("--geoid", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Geoid grid (EGM96 .gtx) when DEM heights are above the geoid.")
@dem_reference_options
@rpc_source_options
@click.option("--crs", default=None, help="Output CRS (default: the footprint's UTM zone).")
@click.option("--gsd", "gsd_m", type=POSITIVE_FINITE, default=None,
              help="Output pixel size in metres (default: the sensor's GSD).")
@click.option("--resampling", type=click.Choice(["bilinear", "bicubic"]), default="bicubic",
              show_default=True)
@click.option("--tile-size", "tile_px", type=click.IntRange(64, 8192), default=1024,
              show_default=True, help="Output tile size in pixels.")
@click.option("-o", "--output", "output", required=True,
              type=click.Path(dir_okay=False, path_type=Path), help="Output COG path.")
@click.option("--overwrite", is_flag=True, help="Replace an existing file at OUTPUT.")
@allow_large_option
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
def ortho(
    image: Path, dem_path: Path, geoid: Path | None, crs: str | None, gsd_m: float | None,
    resampling: str, tile_px: int, output: Path, overwrite: bool, quiet: bool, allow_large: bool,
    rpc_source: str | None = None, rpc_origin: tuple[float, float] | None = None,
    dem_heights: str | None = None, dem_max_holes: float = MAX_HOLE_FRACTION,
) -> None:
    """Orthorectify IMAGE with its RPC model and a DEM into the COG OUTPUT."""
    # Idle OpenMP threads of the numba kernels sleep rather than spin (read before
    # the first parallel kernel): spinning beside the COG writer's encoding threads
    # cost 1.5 s of CPU on 2 cores (benchmarks.ortho, whole command).
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    check_input_exists(dem_path, "--dem")
    check_input_exists(geoid, "--geoid")
    try:
        info = raster_info(image)
        rpc = find_rpc(image, rpc_source=rpc_source, origin=rpc_origin)
        check_output_file(output, [image, rpc.source, dem_path, geoid], overwrite=overwrite)
        if crs is not None:
            check_crs(crs)
        dem = Dem.open(dem_path, geoid=geoid, bounds_lonlat=footprint_box(rpc, info.shape),
                       pad_deg=DEM_PAD_DEG, require_bounds=False, vertical_datum=dem_heights,
                       max_hole_fraction=dem_max_holes)
        heights = HeightModel.from_dem(dem)
        geobox = default_geobox(rpc, info.shape, heights, crs=crs, gsd_m=gsd_m)
        check_product_grid(f"ortho of {image}", geobox.height, geobox.width, tile_px,
                           bands=info.count, allow_large=allow_large)
        plan = plan_ortho(rpc, heights, geobox, info.shape, band_count=info.count,
                          dtype=info.dtype, src_nodata=info.nodata, resampling=resampling)
        n_tiles = sum(1 for _ in tile_jobs(plan, tile_px))
        meta = ortho_metadata(
            crs=geobox.crs, band_descriptions=info.descriptions, image=str(image.resolve()),
            rpc_source=rpc.source, dem=str(dem_path.resolve()),
            geoid=None if geoid is None else str(geoid.resolve()),
            acquired=read_acquisition(image),
            parameters={"crs": crs, "gsd_m": gsd_m, "resampling": resampling, "tile_px": tile_px,
                        "dem_heights": dem_heights, "dem_max_holes": dem_max_holes})
        with tqdm(total=n_tiles, unit="tile", desc="ortho", disable=quiet) as bar:
            report = orthorectify(image, plan, output, tile_px=tile_px, progress=bar.update,
                                  tags=meta.tags())
    except (OpsError, PlannerError) as exc:
        raise click.ClickException(str(exc)) from exc
    res = geobox.resolution[0]
    click.echo(
        f"{output}: {geobox.width} x {geobox.height} px, {info.count} band(s) {info.dtype}, "
        f"{geobox.crs}, {res:g} per pixel, {resampling}; {report.tiles} tiles "
        f"({report.tiles_read} read), mapping grid step {plan.grid_step_px} px, "
        f"{plan.n_levels} height levels"
    )
