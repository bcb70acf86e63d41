"""``eochain dsm``: a digital surface model from two or more views, as a Cloud-Optimized GeoTIFF.

With two images, the DSM of that pair; with three or more, the pairs are
chosen by base-to-height ratio and overlap (or given with ``--pairs``), each
pair's heights are computed tile by tile and fused per cell, robust to a
pair's vertical bias and to blunders (see :mod:`ops.stereo.multiview`).

RPC models are found as ``eochain ortho`` finds them (in the image or a
sidecar); ``--dem`` is the initial DEM (a file or a folder of tiles, read
only around the pair), ``--geoid`` turns its geoid heights (SRTM) into
ellipsoidal ones. The DEM is only a prior (rectification surface and the
bounds of the disparity search); without it the images give it
(:mod:`ops.stereo.initial_terrain`). The output grid covers the overlap of the two views in
its UTM zone at the sensors' GSD unless ``--crs``/``--gsd`` say otherwise.
It is the campaign's DSM product of these views
(:func:`scheduler.products.product.plan_views_dsm_product`), run in this
process tile by tile (see :mod:`ops.stereo.pair`, :mod:`scheduler.products.one_product`)
with a progress bar: the file is the one a campaign writes for the same inputs
and parameters. The COG is published atomically. Bands: 1 height (m above the ellipsoid, or
above the geoid with ``--heights geoid``; nodata -32768), 2 number of
triangulated points supporting the cell (0 = interpolated or nodata),
3 mean matching confidence (NCC, nodata -32768).
"""

from __future__ import annotations

from pathlib import Path
from typing import cast

import click
import numpy as np
from numpy.typing import NDArray

from ops.errors import OpsError
from ops.raster.crs import check_crs
from ops.stereo.multiview import MultiViewPlan
from ops.stereo.pair import open_view
from ops.terrain.dem import MAX_HOLE_FRACTION
from planner.errors import PlannerError
from scheduler.cli.geometry_options import dem_reference_options
from scheduler.cli.guards import POSITIVE_FINITE, allow_large_option, check_product_box
from scheduler.cli.output_path import check_input_exists, check_output_file
from scheduler.cli.tile_bar import tile_bar
from scheduler.errors import SchedulerError
from scheduler.products.kernels import DSM_BANDS, DSM_NODATA, EMPTY_TILE_REASONS, StereoPlanTask
from scheduler.products.one_product import run_to_file
from scheduler.products.product import DsmStep, SceneInput, footprint_box, plan_views_dsm_product
from scheduler.runtime.actors import TaskContext

NODATA = DSM_NODATA
BANDS = DSM_BANDS


@click.command(name="dsm")
@click.argument("images", nargs=-1, required=True,
                type=click.Path(dir_okay=False, path_type=Path))
@click.option("--pairs", "pairs_text", default=None,
              help="With 3+ images, the pairs to use as I-J image indices (0-based), comma "
                   "separated, e.g. 0-1,1-2 (default: every pair with a usable B/H).")
@click.option("--dem", "dem_path", default=None, type=click.Path(path_type=Path),
              help="Initial DEM: file or folder of tiles (SRTM .hgt, GeoTIFF), a prior only. "
                   "Without it, initial heights come from the images (the RPC height range "
                   "narrowed by tie points).")
@click.option("--geoid", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Geoid grid (EGM96 .gtx) when DEM heights are above the geoid.")
@click.option("--heights", type=click.Choice(["ellipsoid", "geoid"]), default="ellipsoid",
              show_default=True, help="Vertical reference of the output heights.")
@click.option("--crs", default=None, help="Output CRS (default: the overlap's UTM zone).")
@click.option("--gsd", "gsd_m", type=POSITIVE_FINITE, default=None,
              help="Output cell size in metres (default: the sensors' mean GSD).")
@click.option("--tile-size", "tile_px", type=click.IntRange(64, 8192), default=512,
              show_default=True, help="Output tile size in cells.")
@click.option("--max-days-apart", type=POSITIVE_FINITE, default=60.0, show_default=True,
              help="Refuse views acquired further apart than this (when tagged).")
@click.option("-o", "--output", "output", required=True,
              type=click.Path(dir_okay=False, path_type=Path), help="Output COG path.")
@click.option("--overwrite", is_flag=True, help="Replace an existing file at OUTPUT.")
@allow_large_option
@dem_reference_options
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
def dsm(
    images: tuple[Path, ...], pairs_text: str | None, dem_path: Path | None,
    geoid: Path | None, heights: str,
    crs: str | None, gsd_m: float | None, tile_px: int, max_days_apart: float, output: Path,
    overwrite: bool, quiet: bool, allow_large: bool, dem_heights: str | None = None,
    dem_max_holes: float = MAX_HOLE_FRACTION,
) -> None:
    """Compute the DSM of the views IMAGES (two or more) into the COG OUTPUT."""
    if len(images) < 2:
        raise click.BadParameter(f"{len(images)} image given; expected two or more",
                                 param_hint="IMAGES")
    pairs = parse_pairs(pairs_text, len(images))
    if heights == "geoid" and geoid is None:
        raise click.BadParameter("--heights geoid needs --geoid", param_hint="--heights")
    check_input_exists(dem_path, "--dem")
    check_input_exists(geoid, "--geoid")
    try:
        if crs is not None:
            check_crs(crs)
        views = [open_view(path) for path in images]
        check_output_file(output, [*images, *(v.rpc.source for v in views), dem_path, geoid],
                          overwrite=overwrite)
        boxes = [footprint_box(v.rpc, v.shape) for v in views]
        box = (
            min(b[0] for b in boxes), min(b[1] for b in boxes),
            max(b[2] for b in boxes), max(b[3] for b in boxes),
        )
        if gsd_m is not None:
            check_product_box(f"DSM of {' + '.join(p.name for p in images)}", box, gsd_m, tile_px,
                              bands=len(BANDS), allow_large=allow_large)
        # the campaign's DSM product of these views, run here into OUTPUT
        scenes = [SceneInput(path.stem, str(path)) for path in images]
        step = DsmStep((), None if dem_path is None else str(dem_path), gsd_m, crs,
                       None if geoid is None else str(geoid), tile_px, heights, max_days_apart,
                       dem_heights, dem_max_holes)
        product = plan_views_dsm_product(scenes, step, None, view_pairs=pairs)
        planned = product.tasks[0].fn
        if not isinstance(planned, StereoPlanTask):
            raise click.ClickException(f"{product.label}: its first task is not a DSM plan")
        if isinstance(planned.plan, MultiViewPlan):
            mplan = planned.plan
            for reason in mplan.rejected:
                click.echo(f"pair not used: {reason}", err=True)
            about = f"{len(mplan.pairs)} pairs fused: " + ", ".join(
                f"{i}-{j} B/H {p.frame.base_to_height:.3f} offset {o:+.2f} m"
                for (i, j), p, o in zip(mplan.pairs, mplan.plans, mplan.offsets_m, strict=True))
        else:
            plan = planned.plan
            about = (f"B/H {plan.frame.base_to_height:.3f}, pointing correction "
                     f"{plan.right_row_shift_px:+.2f} px ({plan.n_tie_points} ties)")
        geobox = product.writer.geobox
        n_tiles = len(product.writer.windows)
        n_valid = n_supported = 0

        def count(tile: NDArray[np.generic]) -> None:
            nonlocal n_valid, n_supported
            valid = tile[0] != NODATA
            n_valid += int(valid.sum())
            n_supported += int((valid & (tile[1] > 0)).sum())

        ctx = TaskContext(node_id="local")
        with tile_bar(n_tiles, "dsm", quiet) as bar:
            run_to_file(product, output, progress=bar.update, ctx=ctx, on_tile=count)
        reasons = cast("set[str]", ctx.cache.get(EMPTY_TILE_REASONS, set()))
    except (OpsError, PlannerError, SchedulerError) as exc:
        raise click.ClickException(str(exc)) from exc
    g = geobox
    click.echo(
        f"{output}: {g.width} x {g.height} cells, {g.crs}, {g.resolution[0]:g} m, heights above "
        f"the {heights}; {n_valid / (g.width * g.height):.1%} of the grid has a height "
        f"({n_supported / (g.width * g.height):.1%} from points, the rest interpolated); "
        f"{about}; {n_tiles} tiles"
    )
    if n_valid == 0:
        click.echo(f"empty DSM: {'; '.join(sorted(reasons)) or 'no match'}", err=True)


def parse_pairs(text: str | None, n_images: int) -> list[tuple[int, int]] | None:
    """``--pairs 0-1,1-2`` as index pairs, checked against the number of images."""
    if text is None:
        return None
    pairs = []
    for item in text.split(","):
        parts = item.strip().split("-")
        try:
            i, j = (int(v) for v in parts)
        except ValueError:
            raise click.BadParameter(f"{item!r} is not I-J (two image indices)",
                                     param_hint="--pairs") from None
        if not (0 <= i < n_images and 0 <= j < n_images and i != j):
            raise click.BadParameter(
                f"pair {item!r}: expected two distinct indices in 0..{n_images - 1} "
                f"({n_images} images)", param_hint="--pairs")
        pairs.append((i, j))
    return pairs
