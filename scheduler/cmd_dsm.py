"""``eochain dsm``: a digital surface model from one stereo pair, as a Cloud-Optimized GeoTIFF.

RPC models are found as ``eochain ortho`` finds them (in the image or a
sidecar); ``--dem`` is the initial DEM (a file or a folder of tiles, read
only around the pair), ``--geoid`` turns its geoid heights (SRTM) into
ellipsoidal ones. The output grid covers the overlap of the two views in
its UTM zone at the sensors' GSD unless ``--crs``/``--gsd`` say otherwise.
It runs tile by tile (see :mod:`ops.stereo`) with a progress bar and
publishes the COG atomically. Bands: 1 height (m above the ellipsoid, or
above the geoid with ``--heights geoid``; nodata -32768), 2 number of
triangulated points supporting the cell (0 = interpolated or nodata),
3 mean matching confidence (NCC, nodata -32768).
"""

from __future__ import annotations

from pathlib import Path

import click
import numpy as np
from tqdm import tqdm

from ops.acquisition import read_acquisition, span
from ops.crs import check_crs
from ops.dem import Dem
from ops.errors import OpsError
from ops.geoid import Geoid
from ops.raster_io import CogWriter
from ops.stereo import StereoConfig, iter_dsm_tiles, open_view, plan_stereo
from planner.errors import PlannerError
from planner.grid import TileGrid
from scheduler.cmd_ortho import footprint_box
from scheduler.guards import POSITIVE_FINITE, allow_large_option, check_product_box
from scheduler.output_path import check_input_exists, check_output_file
from scheduler.runtime.errors import MetadataError
from scheduler.runtime.provenance import dsm_metadata

NODATA = -32768.0
BANDS = ("height (m)", "supporting points (0 = interpolated)", "matching confidence (NCC)")
#: Degrees added around the pair's footprints when reading the DEM (matching context).
DEM_PAD_DEG = 0.004


@click.command(name="dsm")
@click.argument("left", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("right", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--dem", "dem_path", required=True, type=click.Path(path_type=Path),
              help="Initial DEM: file or folder of tiles (SRTM .hgt, GeoTIFF).")
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
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
def dsm(
    left: Path, right: Path, dem_path: Path, geoid: Path | None, heights: str,
    crs: str | None, gsd_m: float | None, tile_px: int, max_days_apart: float, output: Path,
    overwrite: bool, quiet: bool, allow_large: bool,
) -> None:
    """Compute the DSM of the stereo pair LEFT RIGHT into the COG OUTPUT."""
    if heights == "geoid" and geoid is None:
        raise click.BadParameter("--heights geoid needs --geoid", param_hint="--heights")
    check_input_exists(dem_path, "--dem")
    check_input_exists(geoid, "--geoid")
    try:
        if crs is not None:
            check_crs(crs)
        view_l, view_r = open_view(left), open_view(right)
        check_output_file(output, [left, right, view_l.rpc.source, view_r.rpc.source, dem_path,
                                   geoid], overwrite=overwrite)
        boxes = [footprint_box(v.rpc, v.shape) for v in (view_l, view_r)]
        box = (
            min(b[0] for b in boxes), min(b[1] for b in boxes),
            max(b[2] for b in boxes), max(b[3] for b in boxes),
        )
        if gsd_m is not None:
            check_product_box(f"DSM of {left.name} + {right.name}", box, gsd_m, tile_px,
                              bands=len(BANDS), allow_large=allow_large)
        geoid_model = Geoid.open(geoid) if geoid is not None else None
        dem = Dem.open(dem_path, geoid=geoid_model, bounds_lonlat=box, pad_deg=DEM_PAD_DEG,
                       require_bounds=False)
        config = StereoConfig(max_days_apart=max_days_apart)
        plan = plan_stereo(view_l, view_r, dem, crs=crs, gsd_m=gsd_m, config=config)
        n_tiles = len(TileGrid(plan.geobox, tile_px, tile_px))
        n_valid = n_supported = 0
        reasons: set[str] = set()
        meta = dsm_metadata(
            horizontal_crs=plan.geobox.crs, heights=heights, band_descriptions=BANDS,
            images=[str(left.resolve()), str(right.resolve())],
            rpc_sources=[view_l.rpc.source, view_r.rpc.source], dem=str(dem_path.resolve()),
            geoid=None if geoid is None else str(geoid.resolve()),
            acquired=span([read_acquisition(left), read_acquisition(right)]),
            parameters={"crs": crs, "gsd_m": gsd_m, "tile_px": tile_px,
                        "max_days_apart": max_days_apart})
        with CogWriter(output, plan.geobox, count=3, dtype="float32", nodata=NODATA,
                       descriptions=BANDS, crs=meta.file_crs, units=meta.band_units,
                       tags=meta.tags()) as out, tqdm(
            total=n_tiles, unit="tile", desc="dsm", disable=quiet
        ) as bar:
            for window, tile in iter_dsm_tiles(
                plan, dem, tile_px=tile_px,
                geoid=geoid_model if heights == "geoid" else None,
            ):
                valid = np.isfinite(tile.height_m)
                n_valid += int(valid.sum())
                n_supported += int((valid & (tile.count > 0)).sum())
                if tile.reason:
                    reasons.add(tile.reason)
                data = np.stack([
                    np.where(valid, tile.height_m, NODATA),
                    tile.count.astype(np.float32),
                    np.where(np.isfinite(tile.confidence), tile.confidence, NODATA),
                ]).astype(np.float32)
                out.write(window, data)
                bar.update()
    except (OpsError, PlannerError, MetadataError) as exc:
        raise click.ClickException(str(exc)) from exc
    g = plan.geobox
    click.echo(
        f"{output}: {g.width} x {g.height} cells, {g.crs}, {g.resolution[0]:g} m, heights above "
        f"the {heights}; {n_valid / (g.width * g.height):.1%} of the grid has a height "
        f"({n_supported / (g.width * g.height):.1%} from points, the rest interpolated); "
        f"B/H {plan.frame.base_to_height:.3f}, pointing correction "
        f"{plan.right_row_shift_px:+.2f} px ({plan.n_tie_points} ties); {n_tiles} tiles"
    )
    if n_valid == 0:
        click.echo(f"empty DSM: {'; '.join(sorted(reasons)) or 'no match'}", err=True)
