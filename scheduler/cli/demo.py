"""``eochain demo``: the most complete end-to-end path the project has, on an embedded default.

It grows with every capability and must never break. Today it:

1. generates a synthetic stereo acquisition with exact ground truth (a
   fractal terrain with buildings, a textured ground, two pushbroom views with
   fitted RPC models) and prints its footprint and the output tile grid;
2. checks the RPC models the files carry against the generator's own
   (read back from the GeoTIFF tags, as any user's file would be);
3. orthorectifies both views with ``eochain ortho`` (Cloud-Optimized GeoTIFFs)
   and measures each against the generator's true ortho;
4. computes the DSM of the pair with ``eochain dsm`` and measures it against
   the generator's true surface, starting from a 30 m SRTM-like DEM;
5. plans the sample campaign ``examples/campaign.yaml`` (hundreds of
   Pléiades pairs, ortho + DSM) with ``eochain plan``: fleet, cost, makespan,
   Pareto frontier and ``plan.json``;
6. runs the demo campaign (the pair's DSM and both orthos) on a local Ray
   cluster, depth-first, with the progress bar and the summary, leaving COGs,
   STAC items and the manifest under ``OUT/campaign``.
"""

from __future__ import annotations

import time
from pathlib import Path

import click
import numpy as np
import rasterio

from ops.evaluation.ortho_quality import image_shift_px, ncc
from ops.evaluation.stereo_eval import agreement
from ops.sensor.rpc_io import read_rpc
from ops.synthetic.scene import (
    SceneSpec,
    SyntheticScene,
    generate_scene,
    truth_heights,
    truth_ortho,
)
from planner.geometry.grid import GeoBox, TileGrid
from scheduler.cli.demo_campaign import demo_campaign, write_coarse_dem
from scheduler.cli.dsm import dsm as dsm_command
from scheduler.cli.ortho import ortho as ortho_command
from scheduler.cli.plan import plan as plan_command

DEMO_TILE_PX = 256
EXAMPLE_CAMPAIGN = Path(__file__).resolve().parents[2] / "examples" / "campaign.yaml"


def _say(title: str) -> None:
    click.secho(f"\n== {title}", bold=True)


def demo_geobox(scene: SyntheticScene) -> GeoBox:
    """The product grid of the demo: the scene's UTM footprint at the sensor GSD."""
    left, bottom, right, top = scene.footprint_utm
    return GeoBox.from_bounds(scene.crs, left, bottom, right, top, scene.spec.gsd_m)


def step_scene(out: Path, spec: SceneSpec) -> SyntheticScene:
    _say("1. synthetic stereo scene")
    start = time.perf_counter()
    scene = generate_scene(spec, out / "scene")
    lon0, lat0, lon1, lat1 = scene.footprint_lonlat
    click.echo(
        f"   {spec.n_views} views of {spec.width}x{spec.height} px at {spec.gsd_m} m GSD, "
        f"B/H {scene.b_over_h():.2f}, incidences "
        + ", ".join(f"{a:.1f}°" for a in scene.incidences_deg)
        + f"  ({time.perf_counter() - start:.1f} s)"
    )
    click.echo(f"   footprint lon {lon0:.5f}..{lon1:.5f}, lat {lat0:.5f}..{lat1:.5f} ({scene.crs})")
    click.echo(f"   terrain {scene.dem_min_m:.1f}..{scene.dem_max_m:.1f} m above the ellipsoid")
    click.echo(
        "   RPC fit residual "
        + ", ".join(f"{r:.1e} px" for r in scene.fit_residual_px)
        + f"; files in {scene.out_dir}"
    )
    grid = TileGrid(demo_geobox(scene), DEMO_TILE_PX, DEMO_TILE_PX)
    n_rows, n_cols = grid.shape
    click.echo(
        f"   product grid {grid.geobox.width}x{grid.geobox.height} px, "
        f"{n_rows}x{n_cols} = {len(grid)} tiles of {DEMO_TILE_PX} px"
    )
    return scene


def step_rpc_check(scene: SyntheticScene) -> None:
    _say("2. RPC models read back from the files")
    rng = np.random.default_rng(0)
    lon0, lat0, lon1, lat1 = scene.footprint_lonlat
    lon = rng.uniform(lon0, lon1, 10_000)
    lat = rng.uniform(lat0, lat1, 10_000)
    h = rng.uniform(scene.dem_min_m, scene.dem_max_m, 10_000)
    for path, truth in zip(scene.view_paths, scene.rpcs):
        model = read_rpc(path)
        r0, c0 = truth.project(lon, lat, h)
        r1, c1 = model.project(lon, lat, h)
        err = float(np.max(np.hypot(r1 - r0, c1 - c0)))
        lon_back, lat_back = model.localize(r1, c1, h)
        r2, c2 = model.project(lon_back, lat_back, h)
        trip = float(np.max(np.hypot(r2 - r1, c2 - c1)))
        click.echo(f"   {path.name}: file vs generator {err:.1e} px, localisation round trip {trip:.1e} px")


def _read_product(path: Path) -> tuple[np.ndarray, GeoBox]:
    with rasterio.open(path) as ds:
        data = ds.read(1, masked=True).astype(np.float64).filled(np.nan)
        box = GeoBox(ds.crs.to_string(), tuple(ds.transform)[:6], ds.height, ds.width)
    return data, box


def step_ortho(ctx: click.Context, scene: SyntheticScene, out: Path) -> None:
    _say("3. ortho of each view (eochain ortho), checked against the true ortho")
    for i, view in enumerate(scene.view_paths):
        dest = out / f"ortho_view_{i}.tif"
        start = time.perf_counter()
        # only what the demo sets; click fills in every other option's default
        ctx.invoke(ortho_command, image=view, dem_path=scene.dem_path,
                   gsd_m=scene.spec.gsd_m, resampling="bicubic", tile_px=DEMO_TILE_PX,
                   output=dest, overwrite=True, quiet=True)
        elapsed = time.perf_counter() - start
        image, box = _read_product(dest)
        truth = truth_ortho(scene, box) * scene.spec.gain
        dy, dx = image_shift_px(truth, image)
        click.echo(
            f"   {dest.name}: {box.width}x{box.height} px in {elapsed:.1f} s; shift vs truth "
            f"({dy:+.3f}, {dx:+.3f}) px, NCC {ncc(truth, image):.4f}"
        )


def step_dsm(ctx: click.Context, scene: SyntheticScene, out: Path) -> None:
    _say("4. DSM of the pair (eochain dsm) over a 30 m SRTM-like DEM, checked against the truth")
    dest = out / "dsm.tif"
    # the true terrain every 30 m (no building survives), as SRTM would give it: a DSM
    # computed over the true DEM itself would only return its input
    coarse = write_coarse_dem(scene.out_dir, out / "dem_30m.tif")
    start = time.perf_counter()
    ctx.invoke(dsm_command, images=tuple(scene.view_paths[:2]), dem_path=coarse,
               gsd_m=scene.spec.gsd_m, tile_px=DEMO_TILE_PX * 2, output=dest, overwrite=True,
               quiet=True)
    elapsed = time.perf_counter() - start
    heights, box = _read_product(dest)
    with rasterio.open(dest) as ds:
        points = ds.read(2)  # supporting matches per cell; 0 = interpolated
    truth = truth_heights(scene, box)
    measured = np.isfinite(heights) & (points > 0)
    stats = agreement(np.where(measured, heights, np.nan), truth)
    click.echo(
        f"   {dest.name}: {box.width}x{box.height} px in {elapsed:.1f} s; "
        f"{np.isfinite(heights).mean():.0%} of the grid has a height, {measured.mean():.0%} "
        f"matched; matched cells vs truth: median {stats.median_m:+.2f} m, "
        f"NMAD {stats.nmad_m:.2f} m"
    )


def step_plan(ctx: click.Context, out: Path) -> None:
    _say(f"5. plan the sample campaign {EXAMPLE_CAMPAIGN.name} (eochain plan)")
    if not EXAMPLE_CAMPAIGN.exists():
        raise click.ClickException(f"{EXAMPLE_CAMPAIGN} is missing: the demo plans it")
    ctx.invoke(plan_command, campaign_file=EXAMPLE_CAMPAIGN, out_dir=out / "plan", runs=5)


def step_run(scene: SyntheticScene, out: Path) -> None:
    _say("6. run the demo campaign on a local Ray cluster (DSM + orthos, depth-first)")
    report = demo_campaign(scene.out_dir, out / "campaign", workers=2)
    if not report.ok:
        raise click.ClickException(f"{len(report.failures)} product(s) failed: {report.failures}")


@click.command(name="demo")
@click.option("--out", "out_dir", default="demo-output", show_default=True,
              type=click.Path(file_okay=False, path_type=Path), help="Where the products go.")
@click.option("--size", default=1000, show_default=True, type=click.IntRange(64, 20000),
              help="Raw image size in pixels (square).")
@click.pass_context
def demo(ctx: click.Context, out_dir: Path, size: int) -> None:
    """Run the sample campaign end to end on an embedded synthetic scene."""
    out_dir.mkdir(parents=True, exist_ok=True)
    spec = SceneSpec(width=size, height=size)
    scene = step_scene(out_dir, spec)
    step_rpc_check(scene)
    step_ortho(ctx, scene, out_dir)
    step_dsm(ctx, scene, out_dir)
    step_plan(ctx, out_dir)
    step_run(scene, out_dir)
    click.secho(f"\ndemo finished: outputs under {out_dir}/", fg="green")
