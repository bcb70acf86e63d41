"""Whole-command comparison and codec table for ``python -m benchmarks.ortho``.

Whole command: ``eochain ortho`` (read, map, resample, compress, overviews,
COG layout, rename; Python start-up and imports included) against
``gdalwarp -rpc -to RPC_DEM=... -r bilinear -wo NUM_THREADS=1 -co TILED=YES
-co COMPRESS=DEFLATE`` (no overviews), both as subprocesses pinned to one
core with ``taskset -c 0`` (eochain with ``NUMBA_NUM_THREADS=1``), on the
same output grid (gdalwarp gets eochain's ``-te``/``-ts``/``-t_srs``) over
a 1 arc-second lon/lat DEM covering the scene (the scene's DEM resampled,
edges extended). After one untimed eochain run (numba's cache), with eochain's
bytecode compiled as an install leaves it (:func:`compile_bytecode`), the runs
go in rounds: eochain ``per_round`` times on one core, half before and half
after one gdalwarp run, then eochain ``per_round`` times on two cores
(``taskset -c 0,1``). eochain's run is a tenth of gdalwarp's, so one run of it
is a sample of a few seconds of a shared machine's load where gdalwarp's
averages over forty: each tool gets about the same wall time of samples, and
the sandwich cancels a drift of the load over a round. Per run: wall time,
the child's CPU time (user + sys, from ``os.wait4``) and peak RSS. Reported:
median, min and max of each over all runs, the ratios of medians, and each
round's ratio (gdalwarp's run over the median of eochain's runs around it)
with their median and spread.
``gdal-bin`` is installed with apt-get when ``gdalwarp`` is missing.

Codecs: the eochain output's full 512 px blocks encoded one thread at a
time by each candidate (ISA-L deflate levels 0-3, the codec eochain uses;
Python's zlib levels 1 and 6), and the same blocks written by GDAL's GTiff
driver (one thread, no overviews) with DEFLATE (libdeflate in rasterio's
GDAL), ZSTD and LZW: seconds, MB/s of raw pixels and compressed size.
"""

from __future__ import annotations

import compileall
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import scipy.ndimage
from isal import isal_zlib
from rasterio.enums import Resampling
from rasterio.io import MemoryFile
from rasterio.warp import calculate_default_transform, reproject

from ops.ortho.orthorectify import HeightModel, default_geobox
from ops.raster.cog_blocks import predict
from ops.raster.raster_io import raster_info
from ops.synthetic.scene import SyntheticScene
from ops.terrain.dem import Dem
from scheduler.cloud.bundle import PACKAGES


def ensure_gdalwarp() -> str:
    """The path of ``gdalwarp``, installing Debian's ``gdal-bin`` when it is missing."""
    found = shutil.which("gdalwarp")
    if found:
        print(f"gdalwarp found at {found}")
        return found
    print("gdalwarp not found: running apt-get update && apt-get install -y gdal-bin")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "gdal-bin"]):
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise SystemExit(f"{' '.join(cmd)} failed ({done.returncode}): {done.stderr[-500:]}"
                             "; install gdal-bin to run the whole-command comparison")
    found = shutil.which("gdalwarp")
    if not found:
        raise SystemExit("gdal-bin installed but gdalwarp is still not on PATH")
    print(f"installed gdal-bin: {found}")
    return found


def compile_bytecode() -> None:
    """eochain's modules as an install leaves them: their bytecode compiled.

    pip compiles a wheel's modules when it installs it, and an editable install
    writes a module's bytecode on its first import, unless PYTHONDONTWRITEBYTECODE
    is set (it is in this project's development shells): there every run would
    compile its ~60 eochain modules from source (0.16 s, timed in process) where
    gdalwarp is a compiled program. ``compileall`` writes the files whatever that
    variable says, as pip does.
    """
    root = Path(__file__).resolve().parents[1]
    for package in PACKAGES:
        if not compileall.compile_dir(root / package, quiet=1):
            raise SystemExit(f"cannot compile the bytecode of {root / package}")


def arcsec_dem(scene: SyntheticScene, root: Path) -> Path:
    """The scene's DEM resampled to 1 arc-second lon/lat, holes filled from the nearest node.

    SRTM's posting and CRS; it covers the whole scene (the bilinear resampling
    leaves no-data wedges at the corners of the rotated UTM extent, filled by
    extension so both tools see one covering DEM).
    """
    dest = root / f"arcsec_{scene.spec.width}.tif"
    if dest.exists():
        return dest
    with rasterio.open(scene.dem_path) as src:
        transform, width, height = calculate_default_transform(
            src.crs, "EPSG:4326", src.width, src.height, *src.bounds, resolution=1 / 3600)
        out = np.full((height, width), np.nan, dtype=np.float32)
        reproject(rasterio.band(src, 1), out, dst_transform=transform, dst_crs="EPSG:4326",
                  resampling=Resampling.bilinear, dst_nodata=np.nan)
    nearest = scipy.ndimage.distance_transform_edt(
        ~np.isfinite(out), return_distances=False, return_indices=True)
    out = out[tuple(nearest)]
    with rasterio.open(dest, "w", driver="GTiff", width=width, height=height, count=1,
                       dtype="float32", crs="EPSG:4326", transform=transform) as dst:
        dst.write(out, 1)
    return dest


def _run(cmd: list[str], env: dict[str, str]) -> dict[str, float]:
    """Wall and CPU seconds and peak RSS (MiB) of one subprocess; exits on its failure."""
    with tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        pid = os.posix_spawnp(cmd[0], cmd, env, file_actions=[
            (os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0),
            (os.POSIX_SPAWN_DUP2, err.fileno(), 2)])
        _, status, usage = os.wait4(pid, 0)
        wall = time.perf_counter() - t0
        code = os.waitstatus_to_exitcode(status)
        if code != 0:
            err.seek(0)
            raise SystemExit(f"{' '.join(cmd)} exited {code}: {err.read().decode()[-800:]}")
    return {"wall_s": wall, "cpu_s": usage.ru_utime + usage.ru_stime,
            "peak_rss_mib": usage.ru_maxrss / 1024}


def _stats(runs: list[dict[str, float]]) -> dict[str, Any]:
    out: dict[str, Any] = {"runs": runs}
    for key in ("wall_s", "cpu_s", "peak_rss_mib"):
        values = [r[key] for r in runs]
        out[key] = {"median": statistics.median(values), "min": min(values), "max": max(values)}
    return out


def whole_command(scene: SyntheticScene, root: Path, runs: int, per_round: int
                  ) -> dict[str, Any]:
    """eochain ortho vs gdalwarp, whole processes, one core each; eochain on two cores.

    ``runs`` rounds of one gdalwarp run and ``per_round`` runs of eochain each (see the
    module docstring)."""
    gdalwarp = ensure_gdalwarp()
    gdal_version = subprocess.run([gdalwarp, "--version"], capture_output=True, text=True,
                                  check=True).stdout.strip()
    image = scene.view_paths[0]
    dem_path = arcsec_dem(scene, root)
    info = raster_info(image)
    heights = HeightModel.from_dem(Dem.open(dem_path))
    geobox = default_geobox(scene.rpcs[0], info.shape, heights, gsd_m=0.5)
    x0, y1 = geobox.transform[2], geobox.transform[5]
    x1 = x0 + geobox.width * geobox.transform[0]
    y0 = y1 + geobox.height * geobox.transform[4]
    eo_out, gd_out = root / "whole_eochain.tif", root / "whole_gdalwarp.tif"
    eochain = [str(Path(sys.executable).parent / "eochain"), "ortho", str(image),
               "--dem", str(dem_path), "--gsd", "0.5", "--resampling", "bilinear",
               "-o", str(eo_out), "-q", "--overwrite"]
    warp = [gdalwarp, "-q", "-overwrite", "-rpc", "-to", f"RPC_DEM={dem_path}", "-r", "bilinear",
            "-t_srs", geobox.crs, "-te", *(f"{v:.6f}" for v in (x0, y0, x1, y1)),
            "-ts", str(geobox.width), str(geobox.height), "-wo", "NUM_THREADS=1",
            "-co", "TILED=YES", "-co", "COMPRESS=DEFLATE", str(image), str(gd_out)]
    one = {**os.environ, "NUMBA_NUM_THREADS": "1", "GDAL_NUM_THREADS": "1"}
    two = {**os.environ, "NUMBA_NUM_THREADS": "2"}
    print(f"whole command, {runs} rounds of 1 gdalwarp run between {per_round} eochain runs, "
          f"then {per_round} eochain runs on 2 cores:\n  {' '.join(eochain)}\n"
          f"  {' '.join(warp)}")
    compile_bytecode()
    warmup = _run(["taskset", "-c", "0", *eochain], one)
    print(f"  eochain warm-up (numba cache): {warmup['wall_s']:.2f} s")
    ours: list[dict[str, float]] = []
    theirs: list[dict[str, float]] = []
    ours2: list[dict[str, float]] = []
    round_ratios = []
    for k in range(runs):
        before = [_run(["taskset", "-c", "0", *eochain], one) for _ in range(per_round // 2)]
        theirs.append(_run(["taskset", "-c", "0", *warp], one))
        after = [_run(["taskset", "-c", "0", *eochain], one)
                 for _ in range(per_round - per_round // 2)]
        sandwich = before + after
        ours += sandwich
        ours2 += [_run(["taskset", "-c", "0,1", *eochain], two) for _ in range(per_round)]
        round_walls = " ".join(f"{r['wall_s']:.2f}" for r in sandwich)
        round_ratios.append(theirs[-1]["wall_s"]
                            / statistics.median(r["wall_s"] for r in sandwich))
        walls2 = " ".join(f"{r['wall_s']:.2f}" for r in ours2[-per_round:])
        print(f"  round {k + 1}: eochain {round_walls} s, gdalwarp {theirs[-1]['wall_s']:.2f} s "
              f"(cpu {theirs[-1]['cpu_s']:.2f}): {round_ratios[-1]:.1f}x; eochain 2 cores "
              f"{walls2} s")
    e1, g1, e2 = _stats(ours), _stats(theirs), _stats(ours2)
    with rasterio.open(eo_out) as eo, rasterio.open(gd_out) as gd:
        a, b = eo.read(1), gd.read(1)
        both = (a != 0) & (b != 0)
        diff = np.abs(a.astype(np.float64) - b.astype(np.float64))[both]
        outputs = {
            "eochain": {"bytes": eo_out.stat().st_size, "overviews": eo.overviews(1),
                        "layout": eo.tags(ns="IMAGE_STRUCTURE").get("LAYOUT"),
                        "block": list(eo.block_shapes[0])},
            "gdalwarp": {"bytes": gd_out.stat().st_size, "overviews": gd.overviews(1),
                         "block": list(gd.block_shapes[0])},
            "same_shape": a.shape == b.shape,
            "diff_dn_where_both_valid": {"mean": float(diff.mean()), "p99": float(
                np.percentile(diff, 99)), "max": float(diff.max())},
        }
    return {
        "gdalwarp_version": gdal_version, "eochain_bytecode": "compiled before the runs",
        "eochain_cmd": eochain, "gdalwarp_cmd": warp,
        "dem": str(dem_path), "output_px": [geobox.height, geobox.width],
        "output_mpx": geobox.height * geobox.width / 1e6, "eochain_warmup": warmup,
        "eochain_1core": e1, "gdalwarp_1core": g1, "eochain_2cores": e2,
        "ratio_1core_wall": g1["wall_s"]["median"] / e1["wall_s"]["median"],
        "ratio_1core_cpu": g1["cpu_s"]["median"] / e1["cpu_s"]["median"],
        "eochain_runs_per_round": per_round,
        "ratio_1core_wall_by_round": {"rounds": round_ratios,
                                      "median": statistics.median(round_ratios),
                                      "min": min(round_ratios), "max": max(round_ratios)},
        "ratio_eochain_2cores_vs_gdalwarp_1core_wall":
            g1["wall_s"]["median"] / e2["wall_s"]["median"],
        "loadavg_end": os.getloadavg(), "outputs": outputs,
    }


def _blocks(path: Path) -> list[np.ndarray]:
    with rasterio.open(path) as src:
        data = src.read(1)
    h, w = data.shape
    return [np.ascontiguousarray(data[r:r + 512, c:c + 512])[:, :, None]
            for r in range(0, h - 511, 512) for c in range(0, w - 511, 512)]


def codecs(cog: Path) -> dict[str, Any]:
    """Size and one-thread time of each candidate codec on eochain's output."""
    blocks = _blocks(cog)
    raw = sum(b.nbytes for b in blocks)
    t0 = time.process_time()
    predicted = [predict(b.copy()) for b in blocks]  # the predictor works in place
    table: dict[str, Any] = {"raw_mb": raw / 1e6, "blocks": len(blocks),
                             "predictor2_s": time.process_time() - t0, "per_block": {},
                             "gdal_gtiff": {}}
    candidates: list[tuple[str, Callable[[Any, int], bytes], int, list[np.ndarray]]] = [
        *((f"isal_deflate_L{lv}_pred2", isal_zlib.compress, lv, predicted) for lv in range(4)),
        ("isal_deflate_L2_nopred", isal_zlib.compress, 2, blocks),
        ("zlib_deflate_L1_pred2", zlib.compress, 1, predicted),
        ("zlib_deflate_L6_pred2", zlib.compress, 6, predicted),
    ]
    for name, compress, level, arrays in candidates:
        t0 = time.process_time()
        size = sum(len(compress(a, level)) for a in arrays)
        sec = time.process_time() - t0
        table["per_block"][name] = {"s": sec, "mb_s": raw / 1e6 / sec, "mb": size / 1e6,
                                    "ratio": raw / size}
    # GDAL encodes the same pixels: the full blocks side by side, one 512 px tile each.
    data = np.concatenate(blocks, axis=1).transpose(2, 0, 1)
    with rasterio.open(cog) as src:
        profile = {**src.profile, "height": data.shape[1], "width": data.shape[2]}
    gdal_options = {
        "DEFLATE_L6_pred2": {"compress": "DEFLATE", "predictor": 2, "zlevel": 6},
        "DEFLATE_L1_pred2": {"compress": "DEFLATE", "predictor": 2, "zlevel": 1},
        "ZSTD_L1_pred2": {"compress": "ZSTD", "predictor": 2, "zstd_level": 1},
        "ZSTD_L9_pred2": {"compress": "ZSTD", "predictor": 2, "zstd_level": 9},
        "LZW_pred2": {"compress": "LZW", "predictor": 2},
    }
    for name, options in gdal_options.items():
        prof = {**profile, "driver": "GTiff", "tiled": True, "blockxsize": 512,
                "blockysize": 512, "num_threads": 1, **options}
        prof.pop("interleave", None)
        with MemoryFile() as mem:
            t0 = time.perf_counter()
            with mem.open(**prof) as dst:
                dst.write(data)
            sec = time.perf_counter() - t0
            size = len(mem.getbuffer())
        table["gdal_gtiff"][name] = {"s": sec, "mb_s": data.nbytes / 1e6 / sec,
                                     "mb": size / 1e6, "ratio": data.nbytes / size}
    return table


def print_whole(res: dict[str, Any]) -> None:
    e1, g1, e2 = res["eochain_1core"], res["gdalwarp_1core"], res["eochain_2cores"]
    print(f"WHOLE COMMAND ({res['output_mpx']:.1f} Mpx output, {res['gdalwarp_version']}), "
          f"median [min, max] of {len(g1['runs'])} gdalwarp and {len(e1['runs'])} eochain runs "
          "on each core count:")
    for name, s in (("eochain ortho, 1 core", e1), ("gdalwarp, 1 core", g1),
                    ("eochain ortho, 2 cores", e2)):
        w, c, m = s["wall_s"], s["cpu_s"], s["peak_rss_mib"]
        print(f"  {name:<24} wall {w['median']:6.2f} s [{w['min']:.2f}, {w['max']:.2f}]  "
              f"cpu {c['median']:6.2f} s [{c['min']:.2f}, {c['max']:.2f}]  "
              f"peak RSS {m['median']:5.0f} MiB")
    print(f"  ratio gdalwarp / eochain, 1 core: {res['ratio_1core_wall']:.1f}x wall, "
          f"{res['ratio_1core_cpu']:.1f}x CPU; eochain 2 cores vs gdalwarp 1 core: "
          f"{res['ratio_eochain_2cores_vs_gdalwarp_1core_wall']:.1f}x wall")
    by_round = res["ratio_1core_wall_by_round"]
    print(f"  ratio by round (gdalwarp's run / median of the eochain runs around it), 1 core: "
          f"median {by_round['median']:.1f}x [{by_round['min']:.1f}, {by_round['max']:.1f}]")
    out = res["outputs"]
    print(f"  outputs: eochain {out['eochain']['bytes'] / 1e6:.1f} MB (COG layout "
          f"{out['eochain']['layout']}, overviews {out['eochain']['overviews']}), gdalwarp "
          f"{out['gdalwarp']['bytes'] / 1e6:.1f} MB (no overviews); |eochain - gdalwarp| "
          f"where both valid: mean {out['diff_dn_where_both_valid']['mean']:.2f} DN, p99 "
          f"{out['diff_dn_where_both_valid']['p99']:.0f} DN")


def print_codecs(table: dict[str, Any]) -> None:
    print(f"CODECS on eochain's output ({table['blocks']} full 512 px blocks, "
          f"{table['raw_mb']:.0f} MB raw), one thread:")
    for group in ("per_block", "gdal_gtiff"):
        for name, row in table[group].items():
            label = name if group == "per_block" else f"GDAL GTiff {name}"
            print(f"  {label:<28} {row['s']:6.2f} s {row['mb_s']:7.0f} MB/s "
                  f"{row['mb']:7.1f} MB (ratio {row['ratio']:.2f})")
