"""Stereo DSM benchmark: eochain vs CARS 1.3.0, side by side, on real and synthetic pairs.

Run: ``python -m benchmarks.stereo [--no-cars] [--cases NAME ...] [--synthetic-px N ...]``.
Writes everything to ``benchmarks/results/stereo.json`` and prints one table.

Cases (each tool runs as a separate process, one after the other, on the
same machine; wall time and the peak RSS of the largest process, from
``os.wait4``):

* ``gizeh``: the real Pléiades pair with SRTM + EGM96, heights above EGM96,
  0.6 m. CARS: its default pipeline (resolutions 4 then 1, no DEM).
  eochain also runs without the DEM (``eochain_no_dem``: initial heights
  from the RPCs and tie points), compared with the same CARS DSM.
* ``ventoux``: the real pair over Mont Ventoux (a third of the left image
  overlaps), SRTM + EGM96. CARS needs the DEM and a single resolution there.
* ``synthetic``: a generated pair (600 px, 0.5 m, B/H 0.25, buildings,
  noise) with a 30 m DEM made from the truth (no building, smoothed relief).
  That DEM is unrealistically exact: on open ground the true disparities
  left after rectifying on it are near 0 px, where SGBM's parabola locks
  onto whole pixels and looks best (NMAD 0.11 m before the half-pixel
  shift, 0.26 m after). With the DEM raised by 0.5, 1.0, 1.3 or 1.5 m
  (0.25 to 0.75 px, as a real DEM's error puts the disparities anywhere),
  the parabola gave 0.21 / 0.46 / 0.24 / 0.21 m and the half-pixel shift
  0.17 / 0.27 / 0.17 / 0.18 m. The half-pixel shift leaves a periodic bias
  of +/-0.09 px that the default refinement removes (``ops.stereo.matching``):
  0.270 -> 0.242 m on this case at 500 px, 0.266 -> 0.220 m with the DEM
  raised 1 m. What remains (0.11 px on flat ground against 0.03-0.06 px for
  real textures shifted in Fourier space) comes from the synthetic views
  themselves: their texture is point-sampled up to the Nyquist frequency
  (no optics blur), so the two resampled views differ by more than a shift.
* ``synthetic_defects``: the same scene with every defect of
  :mod:`ops.synthetic.defects` (pointing errors of about a pixel,
  radiometric differences, shadows, water, vegetation-like texture;
  buildings occlude). CARS gets no DEM on synthetic scenes and writes
  ellipsoidal heights, as the truth is.
* ``urban_defects``: dense, tall buildings (8 to 45 m) at B/H 0.45 with the
  same defects: the setting of the issue's held-out urban triplet, whose
  pairs showed std 4-12 m (blunders) where CARS had 1 m.
* ``terrain``: a generated pair (500 px) of bare fractal relief, 250 m, at
  B/H 0.45, run with its 30 m DEM and without it (``eochain_no_dem``: the
  terrain tilts enough that the initial surface comes from a coarse pass of
  the pair), both against the truth: the one case with a truth for the
  no-DEM surface.
* ``triplet``: a synthetic three-view scene with defects, eochain's
  ``dsm`` on all three views (pairs fused) and on each pair alone.

eochain runs three times per case (median wall time, every run's time
listed: the machine is shared); CARS, 15 to 60 times longer, once.

Per case: coverage (share of the cells both views see on eochain's grid
that hold a height; the other tool's DSM is resampled onto that grid by
nearest neighbour) and, for eochain, the share of those cells measured
(``measured``, column ``meas``: supporting points > 0, i.e. without the
cells its hole and border fills interpolated, which the DSM's second band
marks with 0), then against the truth where there is one (synthetic),
else against the other tool (real data): the median, NMAD, standard
deviation and 99th percentile of |difference - median| of the differences,
the NMAD after a planimetric coregistration (``NMADc``: the reference
shifted by the fraction of a cell that fits best,
:func:`ops.evaluation.stereo_eval.coregistration_shift`, as the held-out
cases are judged; for eochain's DSM and CARS's against the truth, and
eochain's against CARS),
and the blunder share (|difference - median|
> 3 m: after a vertical coregistration, like the NMAD; the raw share with
the median left in is reported as ``blunder_share_raw``). ratio = CARS wall
/ eochain wall; memory ratio = eochain peak / CARS peak.

Gizeh's Great Pyramid has plane faces (51.8 degrees): a square pyramid fitted
to CARS's south, east and west faces (:func:`pyramid_model`) is a truth for
the north face, in the shade, where the tools disagree; per face and tool,
coverage, NMAD and share beyond 3 m of the model (``pyramid_faces``).

Sub-pixel (``--subpixel``, alone, seconds): the matcher on real textures
(Gizeh, Ventoux) warped by a known smooth disparity field
(:mod:`ops.synthetic.warp`), at full contrast and at x0.15 (low-contrast ground),
with the global or the local contrast stretch before the 8-bit rounding,
per sub-pixel method: NMAD and bias of the disparity error, share matched,
bias per tenth of the fraction (pixel locking); written to
``benchmarks/results/stereo_subpixel.json``.

Throughput (``--synthetic-px``): generated pairs of growing size, DSM cells
per second per core over the whole run (512-cell tiles) and, in a fresh
process, the RSS before one 512-cell tile and its high-water mark while
computing it (a tile's memory depends on the tile size and the height
range, not on the scene size).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyproj
import rasterio
from rasterio.warp import Resampling, reproject

from benchmarks.cars_baseline import CarsCase, run_cars, run_measured
from benchmarks.common import shared_data

RESULTS = Path(__file__).resolve().parent / "results" / "stereo.json"
#: |error - median| above this is a blunder (the issue's definition, after coregistration).
BLUNDER_M = 3.0
CASES = ("gizeh", "ventoux", "synthetic", "synthetic_defects", "urban_defects", "terrain",
         "triplet")


@dataclass(frozen=True)
class Case:
    """The inputs of one side-by-side run."""

    name: str
    images: tuple[Path, ...]
    dem: Path
    geoid: Path | None
    gsd_m: float | None
    heights: str
    cars: CarsCase | None
    scene_dir: Path | None = None
    pairs_alone: tuple[tuple[int, int], ...] = field(default=())
    #: also run without the DEM (initial heights from the images): real cases, tilted terrain
    without_dem: bool = False


def eochain_cmd(case: Case, images: tuple[Path, ...], out: Path, tile_px: int,
                with_dem: bool = True) -> list[str]:
    cmd = [sys.executable, "-c", "from scheduler.cli.dsm import dsm; dsm()",
           *(str(p) for p in images), "--heights", case.heights,
           "--tile-size", str(tile_px), "-q", "--overwrite", "-o", str(out)]
    if with_dem:
        cmd += ["--dem", str(case.dem)]
    if case.geoid is not None:
        cmd += ["--geoid", str(case.geoid)]
    if case.gsd_m is not None:
        cmd += ["--gsd", str(case.gsd_m)]
    return cmd


def run_eochain(case: Case, images: tuple[Path, ...], out: Path, tile_px: int = 1024,
                runs: int = 3, with_dem: bool = True) -> dict[str, Any]:
    """Median of ``runs`` runs of ``eochain dsm``, with their spread (the machine is
    shared); CARS, many times longer, runs once."""
    walls: list[float] = []
    rss: list[float] = []
    summary = ""
    for _ in range(runs):
        run = run_measured(eochain_cmd(case, images, out, tile_px, with_dem))
        if run.returncode != 0:
            raise RuntimeError(f"eochain dsm failed on {case.name}:\n{run.stderr[-3000:]}")
        walls.append(run.wall_s)
        rss.append(run.max_rss_gib)
        summary = run.stdout.strip()
    return {"wall_s": float(np.median(walls)), "wall_s_runs": walls,
            "max_rss_gib": max(rss), "summary": summary}


def read_on(path: Path, like: Path, band: int = 1) -> np.ndarray:
    """Band ``band`` of ``path`` resampled (nearest) onto the grid of ``like``; NaN = nodata."""
    with rasterio.open(like) as ref, rasterio.open(path) as src:
        out = np.full((ref.height, ref.width), np.nan, np.float32)
        values = src.read(band).astype(np.float32)
        if src.nodata is not None:
            values[values == src.nodata] = np.nan
        reproject(values, out, src_transform=src.transform, src_crs=horizontal_crs(src.crs),
                  dst_transform=ref.transform, dst_crs=horizontal_crs(ref.crs),
                  resampling=Resampling.nearest, src_nodata=np.nan, dst_nodata=np.nan)
    return out


def horizontal_crs(crs: Any) -> str:
    """The horizontal part of a raster's CRS (a DSM's is compound: + its heights)."""
    full = pyproj.CRS.from_wkt(crs.to_wkt())
    flat = full.sub_crs_list[0] if full.is_compound else full
    epsg = flat.to_epsg()
    return f"EPSG:{epsg}" if epsg else flat.to_wkt()


def grid_of(path: Path) -> Any:
    from planner.geometry.grid import GeoBox

    with rasterio.open(path) as ref:
        return GeoBox(horizontal_crs(ref.crs), tuple(ref.transform)[:6], ref.height, ref.width)


def seen_by_both(case: Case, like: Path) -> np.ndarray:
    """Cells of ``like``'s grid whose ground (on the DEM) the case's first two views see."""
    from ops.stereo.pair import StereoConfig, open_view, overlap_mask, plan_stereo
    from ops.terrain.dem import Dem
    from ops.terrain.geoid import Geoid

    geoid = Geoid.open(case.geoid) if case.geoid is not None else None
    dem = Dem.open(case.dem, geoid=geoid)
    left, right = open_view(case.images[0]), open_view(case.images[-1])
    plan = plan_stereo(left, right, dem, config=StereoConfig())
    return overlap_mask(plan, dem, grid_of(like))


def errors_stats(diff: np.ndarray) -> dict[str, float]:
    """Median, NMAD, std and blunder shares of the finite differences."""
    from ops.evaluation.stereo_eval import nmad

    d = diff[np.isfinite(diff)].astype(np.float64)
    if d.size == 0:
        return {"n_cells": 0}
    med = float(np.median(d))
    return {"n_cells": int(d.size), "median_m": med, "nmad_m": nmad(d),
            "std_m": float(np.std(d)),
            "p99_abs_m": float(np.percentile(np.abs(d - med), 99)),
            "blunder_share": float(np.mean(np.abs(d - med) > BLUNDER_M)),
            "blunder_share_raw": float(np.mean(np.abs(d) > BLUNDER_M))}


def with_coregistration(stats: dict[str, Any], h: np.ndarray, ref: np.ndarray) -> dict[str, Any]:
    """``stats`` plus the NMAD after shifting ``ref`` horizontally to fit ``h`` best
    (held-out DSMs are judged after such a coregistration) and that shift."""
    from ops.evaluation.stereo_eval import coregistration_shift

    if not stats.get("n_cells"):
        return stats
    fit = coregistration_shift(h, ref)
    return {**stats, "nmad_coregistered_m": fit.nmad_m,
            "shift_cells": [fit.row_cells, fit.col_cells]}


def truth_on(case: Case, like: Path) -> np.ndarray:
    from ops.synthetic.scene import SyntheticScene, truth_heights

    assert case.scene_dir is not None
    return truth_heights(SyntheticScene.load(case.scene_dir), grid_of(like))


def coverage_shares(path: Path, like: Path, seen: np.ndarray) -> dict[str, float]:
    """Shares of the ``seen`` cells of ``like``'s grid where eochain's DSM ``path`` has a
    height (``coverage``) and a measured one (``measured``: band 2, supporting points, > 0)."""
    h = read_on(path, like)
    support = read_on(path, like, band=2)
    return {"coverage": float((np.isfinite(h) & seen).sum() / seen.sum()),
            "measured": float((np.isfinite(h) & (support > 0) & seen).sum() / seen.sum())}


#: The Great Pyramid's apex (WGS84 lon, lat), where the faces' model starts its fit.
PYRAMID_APEX_LONLAT = (31.134358, 29.979175)
#: Heights (above EGM96) of the faces' cells the model is fitted on and judged on: above
#: the base's rubble and below the apex's platform.
PYRAMID_FACE_M = (85.0, 180.0)


def pyramid_model(h: np.ndarray, like: Path) -> tuple[np.ndarray, np.ndarray]:
    """A square pyramid ``A - s max(|u|, |v|)`` ((u, v): map metres from the apex, turned
    by the angle of its base) fitted robustly to the south, east and west faces of ``h``
    (a DSM on ``like``'s grid); its heights and each cell's face ('N', 'S', 'E', 'W', or ''
    off the faces). The faces of the Great Pyramid are planes (51.8 degrees): the model is
    a truth for Gizeh's north face, in the shade, that neither tool fitted it on."""
    from scipy.optimize import least_squares

    with rasterio.open(like) as ref:
        transform, crs = ref.transform, horizontal_crs(ref.crs)
    x_apex, y_apex = pyproj.Transformer.from_crs("EPSG:4326", crs, always_xy=True).transform(
        *PYRAMID_APEX_LONLAT)
    rows, cols = np.indices(h.shape)
    x, y = transform * (cols + 0.5, rows + 0.5)

    def turned(p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        dx, dy = x - p[2], y - p[3]
        return np.cos(p[4]) * dx + np.sin(p[4]) * dy, -np.sin(p[4]) * dx + np.cos(p[4]) * dy

    def heights(p: np.ndarray) -> np.ndarray:
        u, v = turned(p)
        return np.asarray(p[0] - p[1] * np.maximum(np.abs(u), np.abs(v)))

    def faces(p: np.ndarray) -> np.ndarray:
        u, v = turned(p)
        face = np.where(np.abs(v) >= np.abs(u), np.where(v > 0, "N", "S"),
                        np.where(u > 0, "E", "W"))
        lo, hi = PYRAMID_FACE_M
        model = heights(p)
        return np.where((model > lo) & (model < hi), face, "")

    def fitted(p: np.ndarray, on: np.ndarray) -> np.ndarray:
        return np.asarray(least_squares(lambda q: heights(q)[on] - h[on], p, loss="soft_l1",
                                        f_scale=1.0).x)

    near = (np.abs(x - x_apex) < 140) & (np.abs(y - y_apex) < 140) & np.isfinite(h)
    # every face first, then the south, east and west faces of that fit only
    p = fitted(np.array([205.0, 1.27, x_apex, y_apex, 0.0]),
               near & (h > PYRAMID_FACE_M[0]) & (h < PYRAMID_FACE_M[1]))
    p = fitted(p, near & np.isin(faces(p), ["S", "E", "W"]))
    return heights(p), faces(p)


def face_errors(h: np.ndarray, model: np.ndarray, faces: np.ndarray) -> dict[str, Any]:
    """Per pyramid face: coverage, NMAD and share beyond ``BLUNDER_M`` of ``h`` - the model."""
    from ops.evaluation.stereo_eval import nmad

    out: dict[str, Any] = {}
    for face in "NSEW":
        on = faces == face
        d = (h - model)[on & np.isfinite(h)]
        out[face] = {"coverage": float(d.size / max(on.sum(), 1)),
                     "nmad_m": nmad(d) if d.size else None,
                     "beyond_3m": float(np.mean(np.abs(d) > BLUNDER_M)) if d.size else None}
    return out


def measure_case(case: Case, work: Path, with_cars: bool) -> dict[str, Any]:
    """Both tools on one case, then coverage and errors."""
    out: dict[str, Any] = {}
    ours_path = work / f"{case.name}_eochain.tif"
    ours = run_eochain(case, case.images, ours_path)
    seen = seen_by_both(case, ours_path)
    h_ours = read_on(ours_path, ours_path)
    ours.update(coverage_shares(ours_path, ours_path, seen))
    if case.scene_dir is not None:
        truth = truth_on(case, ours_path)
        ours["vs_truth"] = with_coregistration(errors_stats(h_ours - truth), h_ours, truth)
    out["eochain"] = ours
    for i, j in case.pairs_alone:
        pair_path = work / f"{case.name}_pair{i}{j}.tif"
        alone = run_eochain(case, (case.images[i], case.images[j]), pair_path, runs=1)
        h = read_on(pair_path, ours_path)
        alone.update(coverage_shares(pair_path, ours_path, seen))
        alone["vs_truth"] = errors_stats(h - truth_on(case, ours_path))
        out[f"eochain_pair_{i}{j}"] = alone
    nodem_path = work / f"{case.name}_eochain_nodem.tif"
    if case.without_dem:
        nodem = run_eochain(case, case.images, nodem_path, runs=1, with_dem=False)
        nodem.update(coverage_shares(nodem_path, ours_path, seen))
        if case.scene_dir is not None:
            h = read_on(nodem_path, ours_path)
            nodem["vs_truth"] = errors_stats(h - truth_on(case, ours_path))
        out["eochain_no_dem"] = nodem
    if with_cars and case.cars is not None:
        try:
            cars = run_cars(case.cars, work / f"{case.name}_cars")
        except RuntimeError as exc:
            out["cars"] = {"failed": str(exc)[-500:]}
            return out
        h_cars = read_on(cars.dsm_path, ours_path)
        res: dict[str, Any] = {
            "wall_s": cars.wall_s, "max_rss_gib": cars.max_rss_gib,
            "coverage": float((np.isfinite(h_cars) & seen).sum() / seen.sum()),
        }
        if case.scene_dir is not None:
            h_c, truth_c = read_on(cars.dsm_path, cars.dsm_path), truth_on(case, cars.dsm_path)
            res["vs_truth"] = with_coregistration(errors_stats(h_c - truth_c), h_c, truth_c)
        out["cars"] = res
        out["eochain_minus_cars"] = with_coregistration(errors_stats(h_ours - h_cars), h_ours,
                                                        h_cars)
        if "eochain_no_dem" in out:
            out["eochain_no_dem"]["vs_cars"] = errors_stats(read_on(nodem_path, ours_path) - h_cars)
        if case.name == "gizeh":
            model, faces = pyramid_model(h_cars, ours_path)
            out["pyramid_faces"] = {"eochain": face_errors(h_ours, model, faces),
                                    "cars": face_errors(h_cars, model, faces)}
        out["speed_ratio_cars_over_eochain"] = cars.wall_s / ours["wall_s"]
        out["memory_ratio_eochain_over_cars"] = ours["max_rss_gib"] / cars.max_rss_gib
    return out


def synthetic_case(name: str, work: Path, *, n_views: int, defects: bool,
                   size_px: int = 600, urban: bool = False, terrain: bool = False) -> Case:
    """Generate a scene (and its defective views), write its 30 m DEM; the case.

    ``urban``: dense, tall buildings (70 % of 40 m cells, 8 to 45 m high) at
    B/H 0.45, the setting where the issue's held-out triplet showed blunders
    (std 4-12 m). ``terrain``: no buildings, 250 m of fractal relief at B/H 0.45
    (tilted enough that ``eochain dsm`` without a DEM takes its initial surface from
    a coarse pass of the pair, :mod:`ops.stereo.initial_terrain`), also run without
    its DEM.
    """
    from ops.synthetic.defects import DefectSpec, apply_defects
    from ops.synthetic.scene import SceneSpec, generate_scene, truth_heights
    from planner.geometry.grid import GeoBox

    scene_dir = work / name
    b_over_h = 0.25 if n_views == 2 and not (urban or terrain) else 0.45
    city: dict[str, Any] = {"building_fraction": 0.7, "building_cell_m": 40.0,
                            "building_height_m": (8.0, 45.0)} if urban else {}
    if terrain:
        city = {"building_fraction": 0.0, "relief_m": 250.0}
    scene = generate_scene(SceneSpec(width=size_px, height=size_px, noise_sigma=0.004,
                                     n_views=n_views, b_over_h=b_over_h,
                                     seed=22 if urban else 3 if terrain else 11, **city),
                           scene_dir)
    views = scene.view_paths
    if defects:
        views = apply_defects(scene, DefectSpec.realistic(n_views, seed=5))
    x0, y0, x1, y1 = scene.footprint_utm
    box = GeoBox.from_bounds(scene.crs, x0 - 300, y0 - 300, x1 + 300, y1 + 300, 30.0)
    h = truth_heights(scene, box)
    dem_path = scene_dir / "coarse_dem.tif"
    with rasterio.open(dem_path, "w", driver="GTiff", width=box.width, height=box.height,
                       count=1, dtype="float32", crs=scene.crs,
                       transform=rasterio.Affine(*box.transform)) as dst:
        dst.write(np.where(np.isfinite(h), h, np.nanmean(h)).astype(np.float32), 1)
    cars = CarsCase((views[0], views[-1]), heights_above_geoid=False) if n_views == 2 else None
    pairs = ((0, 1), (1, 2), (0, 2)) if n_views == 3 else ()
    return Case(name, tuple(views), dem_path, None, None, "ellipsoid", cars, scene_dir, pairs,
                without_dem=terrain)


def real_cases(data: Path) -> dict[str, Case]:
    g, v = data / "gizeh", data / "ventoux"
    geoid = v / "geoid" / "egm96_15.gtx"
    return {
        "gizeh": Case("gizeh", (g / "img1.tif", g / "img2.tif"), g / "srtm_dir", geoid, 0.6,
                      "geoid", CarsCase((g / "img1.tif", g / "img2.tif")), without_dem=True),
        "ventoux": Case(
            "ventoux", (v / "left_image.tif", v / "right_image.tif"), v / "srtm", geoid, None,
            "geoid", CarsCase((v / "left_image.tif", v / "right_image.tif"),
                              dem=v / "srtm" / "N44E005.hgt", geoid=geoid,
                              single_resolution=True),
            without_dem=True),
    }


TILE_PROBE = """
import sys
import numpy as np
from ops.terrain.dem import Dem
from ops.stereo.pair import open_view, plan_stereo, run_dsm_tile
from ops.synthetic.scene import SyntheticScene, truth_heights
from planner.geometry.grid import GeoBox, TileGrid

scene = SyntheticScene.load(sys.argv[1])
x0, y0, x1, y1 = scene.footprint_utm
box = GeoBox.from_bounds(scene.crs, x0 - 300, y0 - 300, x1 + 300, y1 + 300, 30.0)
h = truth_heights(scene, box)
dem = Dem.from_array(np.where(np.isfinite(h), h, np.nanmean(h)), box.transform, scene.crs)
plan = plan_stereo(open_view(scene.view_paths[0]), open_view(scene.view_paths[1]), dem)
grid = TileGrid(plan.geobox, int(sys.argv[2]), int(sys.argv[2]))
idx = next(grid.tiles())  # a full-size tile (the grid is larger than one tile)
def status_mib(key):
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
before = status_mib("VmRSS")
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # reset the RSS high-water mark (Linux)
run_dsm_tile(plan, grid.tile_geobox(idx), dem)
print(before, status_mib("VmHWM"))
"""


def tile_peak_mib(scene_dir: Path, tile_px: int) -> tuple[float, float]:
    """(RSS before the tile, RSS high-water mark during it), MiB, in a fresh process."""
    out = subprocess.run([sys.executable, "-c", TILE_PROBE, str(scene_dir), str(tile_px)],
                         check=True, capture_output=True, text=True).stdout.split()
    return float(out[0]), float(out[1])


def throughput(sizes_px: list[int], work: Path, tile_px: int = 512) -> list[dict[str, Any]]:
    """Throughput (whole run) and one tile's memory, for scenes of growing size."""
    from ops.evaluation.stereo_eval import nmad
    from ops.stereo.pair import assemble_dsm, open_view, plan_stereo
    from ops.synthetic.scene import SceneSpec, generate_scene, truth_heights
    from ops.terrain.dem import Dem
    from planner.geometry.grid import GeoBox

    rows = []
    for size_px in sizes_px:
        scene_dir = work / f"throughput_{size_px}"
        scene = generate_scene(SceneSpec(width=size_px, height=size_px, noise_sigma=0.004),
                               scene_dir)
        x0, y0, x1, y1 = scene.footprint_utm
        box = GeoBox.from_bounds(scene.crs, x0 - 300, y0 - 300, x1 + 300, y1 + 300, 30.0)
        h = truth_heights(scene, box)
        dem = Dem.from_array(np.where(np.isfinite(h), h, np.nanmean(h)), box.transform,
                             scene.crs)
        left, right = open_view(scene.view_paths[0]), open_view(scene.view_paths[1])
        t0 = time.perf_counter()
        plan = plan_stereo(left, right, dem)
        out = assemble_dsm(plan, dem, tile_px=tile_px)
        run_s = time.perf_counter() - t0
        truth = truth_heights(scene, plan.geobox)
        before, after = tile_peak_mib(scene_dir, tile_px)
        cells = plan.geobox.height * plan.geobox.width
        rows.append({
            "image_px": size_px, "dsm_cells": cells, "tile_px": tile_px, "dsm_s": run_s,
            "mcells_per_s_per_core": cells / 1e6 / run_s / (os.cpu_count() or 1),
            "nmad_m": nmad(out.height_m - truth), "valid_fraction": out.valid_fraction,
            "rss_before_tile_mib": before, "rss_peak_with_tile_mib": after,
        })
    return rows


#: Sub-pixel cases: (texture, contrast factor, noise in grey levels before it).
SUBPIXEL_TEXTURES = (("gizeh/img1.tif", 1.0, 1.0), ("gizeh/img1.tif", 0.15, 0.25),
                     ("ventoux/left_image.tif", 1.0, 1.0), ("ventoux/left_image.tif", 0.15, 0.25))
#: Sub-pixel methods compared: label, MatchingConfig fields.
SUBPIXEL_METHODS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("sgbm", {"subpixel": "sgbm"}),
    ("half shift", {"subpixel": "halfshift", "shift_phases": 2}),
    ("half shift+ncc", {"subpixel": "halfshift+ncc", "shift_phases": 2}),
    ("thirds", {"subpixel": "halfshift", "shift_phases": 3}),
    ("default", {}),
)


def subpixel(data: Path, size_px: int = 460) -> list[dict[str, Any]]:
    """The matcher's disparity error on real textures warped by a known field.

    Per texture (``ops.synthetic.warp``), contrast (x0.15 around mid-grey:
    ground whose texture spans a few grey levels once stretched) and grey-level rounding
    (global stretch, or with the local contrast stretch), per sub-pixel
    method: NMAD and median of the error (px), share matched, and the
    median error in each tenth of the true disparity's fraction (pixel
    locking shows as a bias that changes sign across the pixel).
    """
    from ops.evaluation.stereo_eval import nmad
    from ops.stereo.matching import MatchingConfig, match, to_grey_levels
    from ops.synthetic.warp import warped_pair

    rows = []
    for name, contrast, noise in SUBPIXEL_TEXTURES:
        with rasterio.open(data / name) as src:
            raw = src.read(1).astype(np.float64)
        lo, hi = np.percentile(raw, [0.5, 99.5])
        texture = 255.0 * np.sqrt(np.clip((raw - lo) / (hi - lo), 0.0, 1.0))
        pair = warped_pair(texture, size_px, noise_sigma=noise)
        d_lo = float(np.floor(pair.disparity_px.min())) - 3
        d_hi = float(np.ceil(pair.disparity_px.max())) + 3
        for stretch in (False, True):
            defaults = MatchingConfig()
            kw = {"contrast_window_px": defaults.contrast_window_px,
                  "contrast_target_std": defaults.contrast_target_std,
                  "contrast_max_gain": defaults.contrast_max_gain} if stretch else {}
            grey = []
            for view in (pair.left, pair.right):
                faint = np.clip(128.0 + contrast * (view - 128.0), 0.0, 255.0) / 255.0
                grey.append(to_grey_levels((faint**2).astype(np.float32), 0.0, 1.0, **kw))
            (left, valid_l), (right, valid_r) = grey
            for method, fields in SUBPIXEL_METHODS:
                disp = match(left, right, valid_l, valid_r, d_lo, d_hi,
                             MatchingConfig(**fields))
                ok = pair.inside & disp.valid
                err = (disp.disparity_px - pair.disparity_px)[ok]
                tenth = np.floor(10 * (pair.disparity_px[ok] % 1.0)).astype(int)
                rows.append({
                    "texture": name.split("/")[0], "contrast": contrast, "noise": noise,
                    "local_stretch": stretch, "method": method,
                    "matched": float(ok.sum() / pair.inside.sum()),
                    "nmad_px": nmad(err), "median_px": float(np.median(err)),
                    "median_by_tenth_px": [float(np.median(err[tenth == k])) for k in range(10)],
                })
    return rows


def print_subpixel(rows: list[dict[str, Any]]) -> None:
    print(f"{'sub-pixel':<10}{'contrast':>9}{'stretch':>8}{'method':>16}{'matched':>9}"
          f"{'NMAD px':>9}{'median':>8}  median error by tenth of the fraction (px)")
    for r in rows:
        print(f"{r['texture']:<10}{r['contrast']:>9.2f}{'local' if r['local_stretch'] else 'global':>8}"
              f"{r['method']:>16}{r['matched']:>9.1%}{r['nmad_px']:>9.3f}{r['median_px']:>+8.3f}  "
              + " ".join(f"{b:+.3f}" for b in r["median_by_tenth_px"]))


def _fmt(value: Any, spec: str) -> str:
    if isinstance(value, (int, float)):
        return format(value, spec)
    return "-".rjust(int(spec.lstrip("+").split(".")[0]))


def print_table(results: dict[str, Any]) -> None:
    head = (f"{'case':<19}{'tool':<16}{'wall s':>7}{'peak GiB':>9}{'cover':>7}{'meas':>7}{'vs':>7}"
            f"{'median':>8}{'NMAD':>7}{'NMADc':>7}{'std':>7}{'p99':>7}{'blund%':>8}{'raw%':>7}"
            "  wall runs")
    print(head)
    for name, case in results["cases"].items():
        for tool, r in case.items():
            if not isinstance(r, dict) or tool in ("eochain_minus_cars", "pyramid_faces"):
                continue
            if "failed" in r:
                print(f"{name:<19}{tool:<16} failed: {r['failed'][-120:]!r}")
                continue
            err = r.get("vs_truth") or r.get("vs_cars") or (
                case.get("eochain_minus_cars") if tool == "eochain" else None) or {}
            vs = "truth" if "vs_truth" in r else ("CARS" if err else "")

            print(f"{name:<19}{tool:<16}{_fmt(r.get('wall_s'), '7.1f')}"
                  f"{_fmt(r.get('max_rss_gib'), '9.2f')}{_fmt(r.get('coverage'), '7.1%')}"
                  f"{_fmt(r.get('measured'), '7.1%')}"
                  f"{vs:>7}{_fmt(err.get('median_m'), '+8.2f')}{_fmt(err.get('nmad_m'), '7.2f')}"
                  f"{_fmt(err.get('nmad_coregistered_m'), '7.2f')}"
                  f"{_fmt(err.get('std_m'), '7.2f')}{_fmt(err.get('p99_abs_m'), '7.2f')}"
                  f"{_fmt(100 * err['blunder_share'] if 'blunder_share' in err else None, '8.2f')}"
                  f"{_fmt(100 * err['blunder_share_raw'] if 'blunder_share_raw' in err else None, '7.2f')}"
                  f"  {' '.join(f'{w:.1f}' for w in r.get('wall_s_runs', []))}")
        for tool, faces in case.get("pyramid_faces", {}).items():
            print(f"{'':<19}pyramid faces vs planes fitted on CARS's S/E/W, {tool}: " + ", ".join(
                f"{k} {f['coverage']:.0%} covered" + (
                    f" NMAD {f['nmad_m']:.2f} m {f['beyond_3m']:.0%} > 3 m" if f['nmad_m'] else "")
                for k, f in faces.items()))
        if "speed_ratio_cars_over_eochain" in case:
            print(f"{'':<19}ratio: CARS/eochain wall {case['speed_ratio_cars_over_eochain']:.1f}x,"
                  f" eochain/CARS peak memory {case['memory_ratio_eochain_over_cars']:.2f}")
    if results.get("throughput"):
        print(f"{'throughput':<12}{'Mcells':>8}{'s':>7}{'Mcells/s/core':>15}{'NMAD m':>8}"
              f"{'valid':>7}{'RSS before tile':>17}{'RSS peak in tile':>18}")
        for s in results["throughput"]:
            print(f"{str(s['image_px']) + '^2 px':<12}{s['dsm_cells'] / 1e6:>8.2f}"
                  f"{s['dsm_s']:>7.1f}{s['mcells_per_s_per_core']:>15.3f}"
                  f"{s['nmad_m']:>8.3f}{s['valid_fraction']:>7.1%}"
                  f"{s['rss_before_tile_mib']:>15.0f}MiB{s['rss_peak_with_tile_mib']:>15.0f}MiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--no-cars", action="store_true", help="skip the CARS baseline")
    parser.add_argument("--cases", nargs="+", choices=CASES, default=list(CASES))
    parser.add_argument("--synthetic-px", type=int, nargs="*", default=[1200],
                        help="scene sizes of the throughput runs (none: skip them)")
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--subpixel", action="store_true",
                        help="only the matcher's sub-pixel error on warped real textures "
                             "(written to stereo_subpixel.json beside the results)")
    args = parser.parse_args()
    data = shared_data()
    if args.subpixel:
        rows = subpixel(data)
        print_subpixel(rows)
        args.results.with_name("stereo_subpixel.json").write_text(
            json.dumps({"load_avg_1min": os.getloadavg()[0], "rows": rows}, indent=1),
            encoding="utf-8")
        return
    state = {
        "machine": platform.machine(), "cpu_count": os.cpu_count(),
        "python": platform.python_version(), "platform": platform.platform(),
        "load_avg_1min": os.getloadavg()[0],
        "inputs": "gizeh, ventoux (SRTM + EGM96); synthetic 600 px seed 11, defects seed 5; "
                  "urban 600 px seed 22; terrain 500 px seed 3, 250 m relief, B/H 0.45",
    }
    results: dict[str, Any] = {"state": state, "cases": {}}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        cases = real_cases(data)
        for name in args.cases:
            if name == "synthetic":
                case = synthetic_case(name, work, n_views=2, defects=False)
            elif name == "synthetic_defects":
                case = synthetic_case(name, work, n_views=2, defects=True)
            elif name == "urban_defects":
                case = synthetic_case(name, work, n_views=2, defects=True, urban=True)
            elif name == "terrain":
                case = synthetic_case(name, work, n_views=2, defects=False, size_px=500,
                                      terrain=True)
            elif name == "triplet":
                case = synthetic_case(name, work, n_views=3, defects=True)
            else:
                case = cases[name]
            results["cases"][name] = measure_case(case, work, not args.no_cars)
            print(f"{name}: done", file=sys.stderr)
        results["throughput"] = throughput(args.synthetic_px, work) if args.synthetic_px else []
    print("state:", json.dumps(state))
    print_table(results)
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(results, indent=1, default=float), encoding="utf-8")


if __name__ == "__main__":
    main()
