"""DEM and geoid sampling throughput and agreement against independent implementations.

Run: ``python -m benchmarks.dem_sampling`` (reads the shared sample data from
``$EOCHAIN_SHARED_DATA`` or ``../shared/data``). Writes the table to
``benchmarks/results/dem_sampling.json``.

Inputs: the Ventoux SRTM 3" tile ``N44E005.hgt`` (1201 x 1201, 4822 voids)
with the EGM96 15' ``.gtx`` folded in, and a synthetic 1" tile (3601 x 3601)
with a 300 x 300 void; N random (lon, lat) points inside the tile.

Baselines (same grids, same points):

* ``Dem.heights``: scipy ``RegularGridInterpolator`` (method linear), and a
  vectorised numpy bilinear; ours is a single-threaded numba kernel.
* ``Geoid.undulation``: PROJ's ``vgridshift`` reading the same ``.gtx``.

ratio = baseline time / our time (higher is better); ``max |d|`` is the
largest height difference (metres) between ours and the baseline.
Best of 3 runs each.
"""

from __future__ import annotations

import json
import os
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyproj
from scipy.interpolate import RegularGridInterpolator

from benchmarks.common import shared_data
from ops.terrain.dem import Dem
from ops.terrain.geoid import Geoid

RESULTS = Path(__file__).resolve().parent / "results" / "dem_sampling.json"


def best_s(fn: Callable[[], Any], runs: int = 3) -> tuple[float, Any]:
    best, out = float("inf"), None
    for _ in range(runs):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def numpy_bilinear(dem: Dem, lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
    a, _, c, _, e, f = dem.transform
    z = dem.heights_m
    r = np.clip((lat - (f + e / 2)) / e, 0, z.shape[0] - 1)
    k = np.clip((lon - (c + a / 2)) / a, 0, z.shape[1] - 1)
    i = np.minimum(np.floor(r).astype(np.int64), z.shape[0] - 2)
    j = np.minimum(np.floor(k).astype(np.int64), z.shape[1] - 2)
    fr, fc = r - i, k - j
    return ((1 - fr) * ((1 - fc) * z[i, j] + fc * z[i, j + 1])
            + fr * ((1 - fc) * z[i + 1, j] + fc * z[i + 1, j + 1]))


def scipy_bilinear(dem: Dem) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    a, _, c, _, e, f = dem.transform
    n_rows, n_cols = dem.heights_m.shape
    lats = f + e * (np.arange(n_rows) + 0.5)
    lons = c + a * (np.arange(n_cols) + 0.5)
    interp = RegularGridInterpolator((lats[::-1], lons), dem.heights_m[::-1].astype(np.float64))
    return lambda lon, lat: interp(np.column_stack([lat, lon]))


def sampling_row(name: str, dem: Dem, ref: Callable[[np.ndarray, np.ndarray], np.ndarray],
                 lon: np.ndarray, lat: np.ndarray) -> dict[str, Any]:
    """Dem.heights at the points against the numpy loop and (up to 1e6 points) scipy's."""
    dem.heights(lon[:10], lat[:10])  # compile / load the numba cache
    t_ours, h = best_s(lambda: dem.heights(lon, lat))
    t_np, h_np = best_s(lambda: numpy_bilinear(dem, lon, lat))
    row: dict[str, Any] = {"case": f"Dem.heights {name}", "n": lon.size, "ours_ms": 1e3 * t_ours,
                           "numpy_ms": 1e3 * t_np, "ratio_numpy": t_np / t_ours,
                           "max_d_numpy_m": float(np.abs(h - h_np).max())}
    if lon.size <= 10**6:
        t_sp, h_sp = best_s(lambda: ref(lon, lat))
        row |= {"scipy_ms": 1e3 * t_sp, "ratio_scipy": t_sp / t_ours,
                "max_d_scipy_m": float(np.abs(h - h_sp).max())}
    return row


def main() -> None:
    data = shared_data()
    gtx = data / "ventoux/geoid/egm96_15.gtx"
    rows: list[dict[str, Any]] = []
    rng = np.random.default_rng(0)
    geoid = Geoid.open(gtx)
    t_open, ventoux = best_s(lambda: Dem.open(data / "ventoux/srtm/N44E005.hgt", geoid=geoid))
    rows.append({"case": "open N44E005.hgt 3\" + EGM96 (fill 4822 voids)", "n": 1201 * 1201,
                 "ours_ms": 1e3 * t_open})
    with tempfile.TemporaryDirectory() as tmp:
        one = rng.normal(800, 200, (3601, 3601)).astype(">i2")
        one[1000:1300, 1000:1300] = -32768
        one.tofile(Path(tmp) / "N44E005.hgt")
        t_open1, big = best_s(lambda: Dem.open(Path(tmp) / "N44E005.hgt", geoid=geoid), runs=1)
        t_win, _ = best_s(lambda: Dem.open(Path(tmp) / "N44E005.hgt", geoid=geoid,
                                           bounds_lonlat=(5.4, 44.4, 5.5, 44.5)))
    rows.append({"case": "open synthetic 1\" tile + EGM96 (fill 90000 voids)",
                 "n": 3601 * 3601, "ours_ms": 1e3 * t_open1})
    rows.append({"case": "open 1\" tile, bounds_lonlat 0.1 x 0.1 deg", "n": 0, "ours_ms": 1e3 * t_win})
    for name, dem in (("3\" Ventoux", ventoux), ("1\" synthetic", big)):
        ref = scipy_bilinear(dem)
        for n in (10**5, 10**6, 10**7):
            rows.append(sampling_row(name, dem, ref, rng.uniform(5, 6, n), rng.uniform(44, 45, n)))
    proj = pyproj.Transformer.from_pipeline(
        "+proj=pipeline +step +proj=unitconvert +xy_in=deg +xy_out=rad "
        f"+step +proj=vgridshift +grids={gtx} +multiplier=1 "
        "+step +proj=unitconvert +xy_in=rad +xy_out=deg")
    n = 10**6
    lon, lat = rng.uniform(-180, 180, n), rng.uniform(-89, 89, n)
    t_g, und = best_s(lambda: geoid.undulation(lon, lat))
    t_p, (_, _, z) = best_s(lambda: proj.transform(lon, lat, np.zeros(n)))
    rows.append({"case": "Geoid.undulation EGM96 15' worldwide", "n": n, "ours_ms": 1e3 * t_g,
                 "proj_ms": 1e3 * t_p, "ratio_proj": t_p / t_g,
                 "max_d_proj_m": float(np.abs(und - z).max())})
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores")
    print(f"{'case':52s} {'n':>9s} {'ours ms':>9s} {'base ms':>9s} {'ratio':>7s} {'max|d| m':>9s}  baseline")
    for r in rows:
        for base in ("scipy", "numpy", "proj"):
            if f"{base}_ms" in r:
                print(f"{r['case']:52s} {r['n']:9d} {r['ours_ms']:9.1f} {r[base + '_ms']:9.1f} "
                      f"{r['ratio_' + base]:7.2f} {r['max_d_' + base + '_m']:9.1e}  {base}")
        if not any(f"{b}_ms" in r for b in ("scipy", "numpy", "proj")):
            print(f"{r['case']:52s} {r['n']:9d} {r['ours_ms']:9.1f} {'-':>9s} {'-':>7s} {'-':>9s}  -")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"cores": os.cpu_count(), "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
