"""Truth-free accuracy check of real DSMs with GDAL as the independent tool (issue 16).

Run: ``python -m benchmarks.stereo_check [--cases gizeh ventoux synthetic relief] [--work DIR]``.
Writes ``benchmarks/results/stereo_check.json`` and prints one table.

On the real pairs there is no reference DSM; eochain and CARS 1.3.0
disagree (Gizeh NMAD 0.89 m, Ventoux 0.60 m with a 0.2 / 0.8 m row / column
offset) and nobody knows which is right. The check needs no truth: both views
are orthorectified onto eochain's DSM grid *through a candidate surface* by
GDAL's RPC transformer (``rasterio.warp.reproject`` with ``RPC_DEM`` = the
surface in ellipsoidal heights, exact transformer, bilinear:
:func:`ops.evaluation.gdal_ortho.gdal_ortho`), then the residual parallax
between the two orthos is measured every 8 cells in 21-px windows (NCC +
Lucas-Kanade, :func:`ops.evaluation.parallax.measure_parallax`) and turned
into the surface's height error, with its sign, by the parallax per metre
of height the RPCs give at each node
(:func:`ops.evaluation.parallax.implied_height_error`). A right surface
leaves no parallax. Per surface (eochain's DSM, CARS's, SRTM + EGM96 as the
control), over the nodes both DSMs cover and those only one covers: median,
NMAD and p90 of |implied error|, the across-base parallax (the RPCs'
epipolar residual, the same for every surface) and the surface's vertical
and planimetric offset against the RPCs' geometry
(:func:`ops.evaluation.parallax.surface_offset`: dh = dz - s . grad h).

``synthetic`` and ``relief`` validate the check itself: a generated pair with known
truth; the implied error of eochain's DSM and of the truth plus known smooth
bumps (±2 m) against the true error (Pearson correlation, and the slope of
implied on true error).

Found (load 3.2, ``benchmarks/results/stereo_check.json``): implied error
NMAD / p90 |dh| on the cells both DSMs cover, eochain vs CARS: Gizeh 0.33 /
0.74 m vs 0.65 / 1.14 m (CARS on the cells only it covers, the shaded pyramid
face: 0.78 / 1.57 m, median +0.02 m: mostly right there), Ventoux 0.37 /
0.60 m vs 0.26 / 0.51 m; SRTM (control) 6.0 / 19.0 m and 6.9 / 10.5 m, with
half its nodes beyond the search. The check's floor: 0.025 px on the
synthetic pair, i.e. 0.18 m at Gizeh (0.14 px/m, B/H 0.085) and 0.04 m at
Ventoux (0.70 px/m). Ventoux's column offset between the two DSMs is the
triangulation convention for the RPCs' 4.8 px across-base pointing offset
(``convention_experiment``: eochain's points lie on the left view's rays,
CARS's at the mid-point; eochain made to triangulate CARS's way is 0.40 m
NMAD from CARS before coregistration instead of 0.60 m, best shift 0.5 / 0.5
cells instead of 0.38 / 1.50, and moves by -0.50 / -2.25 cells where b/2
predicts -0.52 / -2.34); the check's own fit of each surface's offset against
the RPCs' geometry shows the same 1.6-cell column difference (eochain +1.27,
CARS -0.37 cells). What remains after the convention (0.5 / 0.5 cells at
Ventoux, 0.25 / 0.25 at Gizeh, CARS to be shifted towards higher rows and
columns) is on CARS's side: ``relief`` (a generated pair over 200 m of
relief, slopes ~7 %) puts eochain's DSM -0.14 / -0.10 cells from the truth
(fitted on the true error, se 0.01; the check's own fit -0.11 / +0.14).

DSMs: eochain's ``dsm`` with the options of ``benchmarks.stereo`` (one run)
and CARS via ``benchmarks.cars_baseline`` (accuracy only: no timing here),
kept in ``--work`` and reused when present (``--fresh`` reruns them).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import scipy.ndimage as ndi
from rasterio.warp import Resampling, reproject

from benchmarks.cars_baseline import run_cars
from benchmarks.common import shared_data
from benchmarks.stereo import (
    Case,
    eochain_cmd,
    grid_of,
    horizontal_crs,
    read_on,
    real_cases,
    run_eochain,
    synthetic_case,
    truth_on,
)
from ops.evaluation.gdal_ortho import gdal_ortho, write_dem_geotiff
from ops.evaluation.parallax import (
    ImpliedHeights,
    global_parallax,
    implied_height_error,
    line_of_sight_shift,
    measure_parallax,
    surface_offset,
)
from ops.evaluation.stereo_eval import coregistration_shift, nmad
from ops.raster.crs import lonlat_transformer
from ops.sensor.rpc_io import find_rpc
from ops.terrain.dem import Dem
from ops.terrain.geoid import Geoid
from planner.geometry.grid import GeoBox

RESULTS = Path(__file__).resolve().parent / "results" / "stereo_check.json"
STEP_PX, WINDOW_PX, SEARCH_PX = 8, 21, 6
#: Largest rms (m) of a surface about its window mean where its offset is fitted.
PLANAR_M = 0.5


@dataclass(frozen=True, slots=True)
class Surface:
    """A candidate surface on the check's grid, ellipsoidal heights (NaN = none);
    what :func:`write_dem_geotiff` writes for GDAL's ``RPC_DEM``."""

    heights_m: np.ndarray
    transform: tuple[float, float, float, float, float, float]
    crs: str
    source: str


def read_bilinear(path: Path, box: GeoBox, band: int = 1) -> np.ndarray:
    """Band ``band`` of ``path`` on ``box`` (bilinear: no half-cell displacement, unlike
    nearest; NaN = nodata)."""
    with rasterio.open(path) as src:
        values = src.read(band).astype(np.float32)
        if src.nodata is not None:
            values[values == src.nodata] = np.nan
        out = np.full(box.shape, np.nan, np.float32)
        reproject(values, out, src_transform=src.transform, src_crs=horizontal_crs(src.crs),
                  dst_transform=rasterio.Affine(*box.transform), dst_crs=box.crs,
                  resampling=Resampling.bilinear, src_nodata=np.nan, dst_nodata=np.nan)
    return out


def cell_lonlat(box: GeoBox) -> tuple[np.ndarray, np.ndarray]:
    rows, cols = np.mgrid[0 : box.height, 0 : box.width]
    x, y = box.xy(rows, cols)
    lon, lat = lonlat_transformer(box.crs).transform(x, y)
    return np.asarray(lon), np.asarray(lat)


def orthos(case: Case, surface: Surface, box: GeoBox, work: Path) -> tuple[np.ndarray, ...]:
    """GDAL's orthos of the case's first and last views on ``box`` through ``surface``."""
    dem_tif = write_dem_geotiff(surface, work / f"{case.name}_{surface.source}_rpc_dem.tif")
    out = []
    for image in (case.images[0], case.images[-1]):
        o = gdal_ortho(image, find_rpc(image), dem_tif, box, dst_nodata=0)[0].astype(np.float64)
        out.append(np.where(o == 0, np.nan, o))
    return tuple(out)


@dataclass(frozen=True, slots=True)
class NodeCheck:
    """The check of one surface at the parallax nodes."""

    rows: np.ndarray
    cols: np.ndarray
    error: ImpliedHeights
    ncc: np.ndarray
    right_share: float
    centre_px: tuple[int, int]
    base_px_per_m: tuple[float, float]


def check_surface(case: Case, surface: Surface, box: GeoBox, work: Path) -> NodeCheck:
    left, right = orthos(case, surface, box, work)
    centre = global_parallax(left, right)
    pmap = measure_parallax(left, right, step_px=STEP_PX, window_px=WINDOW_PX,
                            search_px=SEARCH_PX, centre_px=centre)
    rows, cols = np.meshgrid(pmap.rows, pmap.cols, indexing="ij")
    h = surface.heights_m[rows, cols].astype(np.float64)
    h = np.where(np.isfinite(h), h, np.nanmedian(surface.heights_m))
    left_rpc, right_rpc = find_rpc(case.images[0]), find_rpc(case.images[-1])
    gl = line_of_sight_shift(left_rpc, box, rows.astype(float), cols.astype(float), h)
    gr = line_of_sight_shift(right_rpc, box, rows.astype(float), cols.astype(float), h)
    v = (gr[0] - gl[0], gr[1] - gl[1])
    # where the check's zero surface sits between the two views' rays when the RPCs
    # leave an across-base offset b: at k b from the left ray (module docstring)
    k = float(np.median((gr[0] * v[0] + gr[1] * v[1]) / (v[0] ** 2 + v[1] ** 2)))
    return NodeCheck(rows, cols, implied_height_error(pmap, *v), pmap.ncc, k, centre,
                     (float(np.median(v[0])), float(np.median(v[1]))))


def stats(values: np.ndarray) -> dict[str, Any]:
    v = values[np.isfinite(values)]
    if v.size < 10:
        return {"n_nodes": int(v.size)}
    return {"n_nodes": int(v.size), "median_m": float(np.median(v)), "nmad_m": nmad(v),
            "p90_abs_m": float(np.percentile(np.abs(v), 90))}


def offsets(dh_m: np.ndarray, check: NodeCheck, heights_m: np.ndarray, gsd_m: float
            ) -> dict[str, Any]:
    """A surface's vertical and planimetric offsets (m, + = east / north) from its height
    errors ``dh_m`` at the check's nodes (dh ~ slope)."""
    # slopes at the scale the parallax windows see (a wall within a window hardly moves it)
    filled = np.nan_to_num(heights_m.astype(np.float64), nan=float(np.nanmean(heights_m)))
    smooth = ndi.uniform_filter(filled, WINDOW_PX)
    g_row, g_col = np.gradient(smooth)
    # only where the surface is nearly planar over the window: there dh = -s . grad h
    # holds; across a wall the windows' parallax follows the majority, not the mean
    # (clipped: the filter's rounding leaves tiny negative means on planes)
    rough = np.sqrt(np.maximum(ndi.uniform_filter((filled - smooth) ** 2, WINDOW_PX), 0.0))
    planar = (rough < PLANAR_M)[check.rows, check.cols]
    fit = surface_offset(np.where(planar, dh_m, np.nan),
                         g_row[check.rows, check.cols], g_col[check.rows, check.cols])
    return {"dz_m": fit.dz_m, "east_m": fit.col_cells * gsd_m, "north_m": -fit.row_cells * gsd_m,
            "row_cells": fit.row_cells, "col_cells": fit.col_cells, "n_nodes": fit.n_nodes,
            "row_se_cells": fit.row_se_cells, "col_se_cells": fit.col_se_cells}


def pointing(check: NodeCheck) -> dict[str, Any]:
    """The across-base offset b the RPCs leave between the orthos and where it puts surfaces.

    A surface on the left view's rays (eochain: the pointing correction is
    charged to the right RPC) fits an offset of ``-k b`` in this check, one at
    the mid-point of the two rays (intersecting the corrected right position
    with the raw RPC) ``(1/2 - k) b``, one on the right view's rays
    ``(1 - k) b`` (cells, + = rows / columns).
    """
    vr, vc = check.base_px_per_m
    norm = float(np.hypot(vr, vc))
    across = float(np.nanmedian(check.error.across_px))
    b = (-vc / norm * across, vr / norm * across)
    k = check.right_share
    return {"across_px": across, "b_cells": list(b), "k": k,
            "base_unit_rowcol": [vr / norm, vc / norm],
            "expected_offset_cells": {
                name: [(f - k) * b[0], (f - k) * b[1]]
                for name, f in (("left_ray", 0.0), ("mid_point", 0.5), ("right_ray", 1.0))}}


#: eochain's ``dsm`` with CARS's triangulation convention, in a child process: the right
#: match taken where the right image was sampled (pointing correction included) and
#: intersected through the raw right RPC (rays ~2.4 m apart at Ventoux, mid-point kept),
#: instead of the right RPC's model position (rays meeting on the left view's ray).
MID_POINT_DSM = """
import dataclasses, sys
import numpy as np
import ops.stereo.pair as pair
maps, tri = pair.sensor_maps, pair._triangulate
def sampled_right(*a, **k):
    m = maps(*a, **k)
    return dataclasses.replace(m, rows_r_model=m.rows_r, cols_r_model=m.cols_r)
def no_ray_limit(*a, **k):
    lon, lat, h, ray = tri(*a, **k)
    return lon, lat, h, np.zeros_like(ray)
pair.sensor_maps, pair._triangulate = sampled_right, no_ray_limit
sys.argv = ["eochain-dsm", *sys.argv[1:]]
from scheduler.cli.dsm import dsm
dsm()
"""


def convention_experiment(case: Case, ours_path: Path, cars_path: Path, work: Path
                          ) -> dict[str, Any]:
    """eochain's DSM, and eochain's with CARS's mid-point convention, against CARS's DSM:
    NMAD before and after a planimetric coregistration, and the shift (cells)."""
    mid_path = work / f"{case.name}_eochain_mid_point.tif"
    cmd = eochain_cmd(case, case.images, mid_path, 1024)
    subprocess.run([sys.executable, "-c", MID_POINT_DSM, *cmd[3:]], check=True,
                   capture_output=True)
    cars = read_on(cars_path, ours_path)
    out: dict[str, Any] = {}
    for name, path in (("eochain", ours_path), ("eochain_mid_point", mid_path)):
        fit = coregistration_shift(read_on(path, ours_path), cars, max_shift_cells=3.0)
        out[f"{name}_vs_cars"] = {"nmad_m": fit.nmad_unshifted_m,
                                  "nmad_coregistered_m": fit.nmad_m,
                                  "shift_cells": [fit.row_cells, fit.col_cells]}
    fit = coregistration_shift(read_on(mid_path, ours_path), read_on(ours_path, ours_path),
                               max_shift_cells=3.0)
    out["mid_point_vs_eochain_shift_cells"] = [fit.row_cells, fit.col_cells]
    return out


def real_case(case: Case, work: Path, fresh: bool) -> dict[str, Any]:
    """eochain's DSM, CARS's and SRTM checked on eochain's grid."""
    ours_path = work / f"{case.name}_eochain.tif"
    if fresh or not ours_path.exists():
        run_eochain(case, case.images, ours_path, runs=1)
    if case.cars is None or case.geoid is None:
        raise SystemExit(f"case {case.name}: the check needs a CARS case and a geoid")
    cars_path = work / f"{case.name}_cars" / "dsm" / "dsm.tif"
    if fresh or not cars_path.exists():
        cars_path = run_cars(case.cars, work / f"{case.name}_cars").dsm_path
    box = grid_of(ours_path)
    lon, lat = cell_lonlat(box)
    undulation = Geoid.open(case.geoid).undulation(lon, lat)
    srtm = Dem.open(case.dem, geoid=Geoid.open(case.geoid)).heights(lon, lat, strict=False)
    surfaces = {
        "eochain": read_bilinear(ours_path, box) + undulation,
        "cars": read_bilinear(cars_path, box) + undulation,
        "srtm": srtm,
    }
    gsd_m = abs(box.transform[0])
    checks = {name: check_surface(case, Surface(h.astype(np.float32), box.transform, box.crs,
                                                name), box, work)
              for name, h in surfaces.items()}
    rows, cols = checks["eochain"].rows, checks["eochain"].cols
    has = {name: np.isfinite(h[rows, cols]) for name, h in surfaces.items()}
    regions = {"both": has["eochain"] & has["cars"], "cars_only": has["cars"] & ~has["eochain"],
               "eochain_only": has["eochain"] & ~has["cars"]}
    out: dict[str, Any] = {"grid": {"crs": box.crs, "transform": list(box.transform),
                                    "shape": list(box.shape)}}
    with rasterio.open(cars_path) as src:
        out["cars_grid"] = {"transform": list(src.transform)[:6], "shape": [src.height, src.width]}
    for name, check in checks.items():
        dh = check.error.dh_m
        res: dict[str, Any] = {
            "measured_share": float(np.isfinite(dh[has[name]]).mean()),
            "all": stats(dh[has[name]]),
            "across_median_px": float(np.nanmedian(check.error.across_px)),
            "across_nmad_px": nmad(check.error.across_px),
            "px_per_m": float(np.nanmedian(check.error.px_per_m)),
            "global_parallax_px": list(check.centre_px),
            "reference_share_of_across_offset": check.right_share,
            "offset": offsets(check.error.dh_m, check, surfaces[name], gsd_m),
        }
        for region, mask in regions.items():
            res[region] = stats(dh[mask & has[name]])
        out[name] = res
    out["pointing"] = pointing(checks["eochain"])
    out["convention_experiment"] = convention_experiment(case, ours_path, cars_path, work)
    eo, ca = surfaces["eochain"][rows, cols], surfaces["cars"][rows, cols]
    # who is right where they disagree: the implied errors of both vs their difference
    d = eo - ca
    both = regions["both"] & np.isfinite(checks["eochain"].error.dh_m) & np.isfinite(
        checks["cars"].error.dh_m)
    out["disagreement"] = {
        "nmad_eochain_minus_cars_m": nmad(d[both]),
        "corr_difference_vs_implied_eochain": float(np.corrcoef(
            d[both], checks["eochain"].error.dh_m[both])[0, 1]),
        "corr_difference_vs_implied_cars": float(np.corrcoef(
            d[both], -checks["cars"].error.dh_m[both])[0, 1]),
    }
    return out


def synthetic(work: Path, fresh: bool) -> dict[str, Any]:
    """The check against a known truth (generated pair, no defects)."""
    case = synthetic_case("synthetic", work, n_views=2, defects=False, size_px=500)
    ours_path = work / "synthetic_eochain.tif"
    if fresh or not ours_path.exists():
        run_eochain(case, case.images, ours_path, runs=1)
    box = grid_of(ours_path)
    truth = truth_on(case, ours_path).astype(np.float64)
    rows, cols = np.mgrid[0 : box.height, 0 : box.width]
    bumps = 2.0 * np.sin(rows / 23.0) * np.cos(cols / 31.0)
    out: dict[str, Any] = {}
    shifted = ndi.shift(np.nan_to_num(truth, nan=float(np.nanmean(truth))), (0.0, 3.0),
                        order=3, mode="nearest")
    for name, h in (("eochain", read_bilinear(ours_path, box).astype(np.float64)),
                    ("truth_plus_bumps", truth + bumps),
                    ("truth_three_cells_east", np.where(np.isfinite(truth), shifted, np.nan))):
        check = check_surface(case, Surface(h.astype(np.float32), box.transform, box.crs, name),
                              box, work)
        true_err = h - truth
        # the check sees the error averaged over its window
        win = np.isfinite(true_err)
        mean_err = ndi.uniform_filter(np.where(win, true_err, 0.0), WINDOW_PX) / np.maximum(
            ndi.uniform_filter(win.astype(float), WINDOW_PX), 1e-9)
        at_node = mean_err[check.rows, check.cols]
        implied = check.error.dh_m
        ok = np.isfinite(implied) & np.isfinite(at_node) & win[check.rows, check.cols]
        slope = np.polyfit(at_node[ok], implied[ok], 1)[0]
        out[name] = {
            "n_nodes": int(ok.sum()), "measured_share": float(ok.sum() / max(
                (win[check.rows, check.cols]).sum(), 1)),
            "corr_implied_vs_true": float(np.corrcoef(implied[ok], at_node[ok])[0, 1]),
            "slope_implied_on_true": float(slope),
            "nmad_true_m": nmad(at_node[ok]), "nmad_implied_m": nmad(implied[ok]),
            "nmad_implied_minus_true_m": nmad(implied[ok] - at_node[ok]),
            "median_true_m": float(np.median(at_node[ok])),
            "median_implied_m": float(np.median(implied[ok])),
            "offset": offsets(implied, check, h, abs(box.transform[0])),
            "offset_true": offsets(true_err[check.rows, check.cols], check, h,
                                   abs(box.transform[0])),
        }
    return out


def steep_relief(work: Path, fresh: bool) -> dict[str, Any]:
    """eochain's planimetric position against a known truth: a generated pair over steep
    relief (200 m, no buildings: slopes of ~7 %, where a shift of a cell shows), its DSM's
    offset fitted on the true error over every cell, and the check's fit of it."""
    from ops.synthetic.scene import SceneSpec, generate_scene, truth_heights

    scene_dir = work / "relief"
    ours_path = work / "relief_eochain.tif"
    scene = generate_scene(SceneSpec(width=500, height=500, noise_sigma=0.004, relief_m=200.0,
                                     building_fraction=0.0, seed=3), scene_dir)
    x0, y0, x1, y1 = scene.footprint_utm
    coarse = GeoBox.from_bounds(scene.crs, x0 - 300, y0 - 300, x1 + 300, y1 + 300, 30.0)
    h30 = truth_heights(scene, coarse)
    dem_path = scene_dir / "coarse_dem.tif"
    write_dem_geotiff(Surface(np.where(np.isfinite(h30), h30, np.nanmean(h30)).astype(
        np.float32), coarse.transform, coarse.crs, "relief_dem"), dem_path)
    case = Case("relief", tuple(scene.view_paths), dem_path, None, None, "ellipsoid", None,
                scene_dir)
    if fresh or not ours_path.exists():
        run_eochain(case, case.images, ours_path, runs=1)
    box = grid_of(ours_path)
    h = read_bilinear(ours_path, box).astype(np.float64)
    truth = truth_heights(scene, box).astype(np.float64)
    g_row, g_col = np.gradient(truth)
    fit = surface_offset(h - truth, g_row, g_col)
    check = check_surface(case, Surface(h.astype(np.float32), box.transform, box.crs, "relief"),
                          box, work)
    return {"true_offset_cells": [fit.row_cells, fit.col_cells],
            "true_offset_se_cells": [fit.row_se_cells, fit.col_se_cells],
            "check_offset": offsets(check.error.dh_m, check, h, abs(box.transform[0])),
            "nmad_true_m": nmad(h - truth)}


def print_table(results: dict[str, Any]) -> None:
    print(f"{'case':<10}{'surface':<10}{'region':<14}{'nodes':>7}{'median':>8}{'NMAD':>7}"
          f"{'p90|dh|':>8}   offset dz / east / north (m), across-base px")
    for name, case in results["cases"].items():
        if name == "relief":
            off = case["check_offset"]
            print(f"{name:<10}eochain's DSM over steep relief vs the truth: offset rows/cols "
                  f"{case['true_offset_cells'][0]:+.2f}/{case['true_offset_cells'][1]:+.2f} cells"
                  f" (se {case['true_offset_se_cells'][0]:.2f}); the check's fit "
                  f"{off['row_cells']:+.2f}/{off['col_cells']:+.2f}")
            continue
        if name == "synthetic":
            for surf, r in case.items():
                print(f"{name:<10}{surf:<18} corr(implied, true) {r['corr_implied_vs_true']:.2f}"
                      f", slope {r['slope_implied_on_true']:.2f}, NMAD true "
                      f"{r['nmad_true_m']:.2f} implied {r['nmad_implied_m']:.2f} m, "
                      f"{r['n_nodes']} nodes; offset dz {r['offset']['dz_m']:+.2f} m, "
                      f"rows {r['offset']['row_cells']:+.2f} cols {r['offset']['col_cells']:+.2f}"
                      f" (true: rows {r['offset_true']['row_cells']:+.2f} cols "
                      f"{r['offset_true']['col_cells']:+.2f})")
            continue
        for surf in ("eochain", "cars", "srtm"):
            r = case[surf]
            off = r["offset"]
            for region in ("all", "both", "cars_only", "eochain_only"):
                s = r[region]
                if "median_m" not in s:
                    continue
                gsd = abs(case["grid"]["transform"][0])
                tail = (f"   {off['dz_m']:+.2f} / {off['east_m']:+.2f} / {off['north_m']:+.2f}"
                        f" (se {off['col_se_cells'] * gsd:.2f} / {off['row_se_cells'] * gsd:.2f})"
                        f", {r['across_median_px']:+.3f}" if region == "all" else "")
                print(f"{name:<10}{surf:<10}{region:<14}{s['n_nodes']:>7}{s['median_m']:>+8.2f}"
                      f"{s['nmad_m']:>7.2f}{s['p90_abs_m']:>8.2f}{tail}")
        pt = case["pointing"]
        exp = pt["expected_offset_cells"]
        print(f"{name:<10}across-base offset b = {pt['across_px']:+.2f} px -> rows/cols "
              f"{pt['b_cells'][0]:+.2f}/{pt['b_cells'][1]:+.2f}, k {pt['k']:.2f}: expected "
              f"offset (cells) on the left rays {exp['left_ray'][0]:+.2f}/{exp['left_ray'][1]:+.2f}"
              f", at the mid-point {exp['mid_point'][0]:+.2f}/{exp['mid_point'][1]:+.2f}; fitted "
              f"eochain {case['eochain']['offset']['row_cells']:+.2f}/"
              f"{case['eochain']['offset']['col_cells']:+.2f}, CARS "
              f"{case['cars']['offset']['row_cells']:+.2f}/{case['cars']['offset']['col_cells']:+.2f}")
        ce = case["convention_experiment"]
        for tool in ("eochain", "eochain_mid_point"):
            r = ce[f"{tool}_vs_cars"]
            print(f"{name:<10}{tool} vs CARS: NMAD {r['nmad_m']:.2f} m, "
                  f"{r['nmad_coregistered_m']:.2f} m after shifting CARS by rows/cols "
                  f"{r['shift_cells'][0]:+.2f}/{r['shift_cells'][1]:+.2f}")
        d = case["disagreement"]
        print(f"{name:<10}eochain-CARS NMAD {d['nmad_eochain_minus_cars_m']:.2f} m; corr with "
              f"eochain's implied error {d['corr_difference_vs_implied_eochain']:.2f}, with "
              f"CARS's {d['corr_difference_vs_implied_cars']:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", nargs="+", choices=("gizeh", "ventoux", "synthetic", "relief"),
                        default=["gizeh", "ventoux", "synthetic", "relief"])
    parser.add_argument("--work", type=Path, default=Path("/tmp/eochain-stereo-check"))
    parser.add_argument("--fresh", action="store_true", help="rerun eochain and CARS")
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    data = shared_data()
    state = {"machine": platform.machine(), "cpu_count": os.cpu_count(),
             "python": platform.python_version(), "load_avg_1min": os.getloadavg()[0],
             "parallax": {"step_px": STEP_PX, "window_px": WINDOW_PX, "search_px": SEARCH_PX}}
    results: dict[str, Any] = {"state": state, "cases": {}}
    cases = real_cases(data)
    for name in args.cases:
        if name == "synthetic":
            results["cases"][name] = synthetic(args.work, args.fresh)
        elif name == "relief":
            results["cases"][name] = steep_relief(args.work, args.fresh)
        else:
            results["cases"][name] = real_case(cases[name], args.work,
                                               args.fresh)
        print(f"{name}: done", file=sys.stderr)
    print("state:", json.dumps(state))
    print_table(results)
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(results, indent=1, default=float), encoding="utf-8")


if __name__ == "__main__":
    main()
