"""``eochain ortho``: orthorectify one raw scene into a Cloud-Optimized GeoTIFF.

The command a user of ``gdalwarp -rpc -to RPC_DEM=...`` or OTB's
OrthoRectification expects: the RPC model is found in the image or its
sidecar (``.geom``, ``.RPB``, ``_RPC.TXT``, DIMAP XML) without being named,
``--dem`` takes a file or a folder of tiles (read only around the image's
footprint), ``--geoid`` turns geoid heights (SRTM) into ellipsoidal ones.
The output grid is the footprint in its UTM zone at the sensor's GSD unless
``--crs``/``--gsd`` say otherwise. It is the campaign's ortho product of one
scene (:func:`scheduler.products.product.plan_ortho_product`), run in this
process with a progress bar, its tiles side by side on every core the process
may use (``taskset`` limits them) while the COG writer compresses finished
ones (:mod:`scheduler.products.one_product`): the file is the one
``eochain run`` writes for the same inputs and parameters.
The COG is published atomically: on any error nothing is left at ``-o``.
An ``-o`` that is one of the inputs is refused, an existing file is replaced
only with ``--overwrite``, and the output folder is checked writable before
any compute (:mod:`scheduler.cli.output_path`).
"""

from __future__ import annotations

import gc
import os
from pathlib import Path
from typing import cast

import click

from ops.errors import OpsError
from ops.ortho.orthorectify import OrthoPlan, declare_tile_input
from ops.raster.crs import check_crs
from ops.sensor.rpc_io import find_rpc
from ops.terrain.dem import MAX_HOLE_FRACTION
from planner.errors import PlannerError
from scheduler.cli.geometry_options import dem_reference_options, rpc_source_options
from scheduler.cli.guards import POSITIVE_FINITE, allow_large_option, check_product_grid
from scheduler.cli.output_path import check_input_exists, check_output_file
from scheduler.cli.tile_bar import tile_bar
from scheduler.errors import SchedulerError
from scheduler.products.one_product import run_to_file
from scheduler.products.product import OrthoStep, SceneInput, plan_ortho_product


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
    # No cyclic garbage collection in this command: what it allocates is numba's
    # (loaded on the first calls, kept to the end) or tiles and blocks, freed by
    # reference counting. A run leaves 750 unreachable objects whatever its size
    # (the same for 100 and 1,444 tiles); collections cost 0.12 s of 3 s. Back on
    # at the end, for a caller in the same process (tests).
    gc.disable()
    try:
        _ortho(image, dem_path, geoid, crs, gsd_m, resampling, tile_px, output, overwrite, quiet,
               allow_large, rpc_source, rpc_origin, dem_heights, dem_max_holes)
    finally:
        gc.enable()


def _ortho(
    image: Path, dem_path: Path, geoid: Path | None, crs: str | None, gsd_m: float | None,
    resampling: str, tile_px: int, output: Path, overwrite: bool, quiet: bool, allow_large: bool,
    rpc_source: str | None, rpc_origin: tuple[float, float] | None, dem_heights: str | None,
    dem_max_holes: float,
) -> None:
    check_input_exists(dem_path, "--dem")
    check_input_exists(geoid, "--geoid")
    try:
        if crs is not None:
            check_crs(crs)
        rpc = find_rpc(image, rpc_source=rpc_source, origin=rpc_origin)
        check_output_file(output, [image, rpc.source, dem_path, geoid], overwrite=overwrite)
        # the campaign's ortho product of this one scene, run here into OUTPUT
        scene = SceneInput(image.stem, str(image), rpc=rpc_source, rpc_origin=rpc_origin)
        step = OrthoStep(str(dem_path), gsd_m, crs, None if geoid is None else str(geoid),
                         resampling, tile_px, dem_heights, dem_max_holes)
        product = plan_ortho_product(scene, step, store=None)
        writer = product.writer
        geobox = writer.geobox
        check_product_grid(f"ortho of {image}", geobox.height, geobox.width, tile_px,
                           bands=writer.count, allow_large=allow_large)
        with tile_bar(len(writer.windows), "ortho", quiet) as bar:
            run = run_to_file(product, output, progress=bar.update)
        plan = cast(OrthoPlan, run.shared[product.tasks[0].key])
        tiles_read = sum(1 for w in writer.windows if declare_tile_input(plan, w) is not None)
    except (OpsError, PlannerError, SchedulerError) as exc:
        raise click.ClickException(str(exc)) from exc
    res = geobox.resolution[0]
    click.echo(
        f"{output}: {geobox.width} x {geobox.height} px, {writer.count} band(s) {writer.dtype}, "
        f"{geobox.crs}, {res:g} per pixel, {resampling}; {run.tiles} tiles "
        f"({tiles_read} read), mapping grid step {plan.grid_step_px} px, "
        f"{plan.n_levels} height levels"
    )
