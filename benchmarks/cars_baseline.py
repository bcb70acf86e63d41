"""CARS 1.3.0 (the CNES stereo pipeline): the baseline of ``benchmarks.stereo``.

CARS lives in a virtual environment of its own, never in eochain's: the
folder named by ``$CARS_VENV`` or ``/tmp/cars-venv``, created with
``python3 -m venv VENV && VENV/bin/pip install cars==1.3.0`` (about 40 s,
1.6 GB) when :func:`ensure_cars` is allowed to install it. The runs use the
configuration of ``../shared/peers/cars_gizeh.json`` (2 workers,
multiprocessing, default resolutions 4 then 1) with the paths filled in; a
case may add an initial DEM and geoid (Ventoux needs them, and a single
resolution: see ``../shared/peers/README.md``) or ask for ellipsoidal
output heights (synthetic scenes, whose truth is ellipsoidal).

Run alone: ``python -m benchmarks.cars_baseline`` prints wall time, the peak
RSS of the largest process and the DSM path of the Gizeh run.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CARS_VERSION = "1.3.0"


def cars_venv() -> Path:
    return Path(os.environ.get("CARS_VENV", "/tmp/cars-venv"))


def ensure_cars(install: bool = True) -> Path:
    """The ``cars`` executable, installing CARS into its own venv if allowed."""
    venv = cars_venv()
    exe = venv / "bin" / "cars"
    if exe.exists():
        return exe
    if not install:
        raise SystemExit(f"CARS not found at {exe}; set CARS_VENV or allow the install")
    subprocess.run(["python3", "-m", "venv", str(venv)], check=True)
    subprocess.run([str(venv / "bin" / "pip"), "install", "-q", f"cars=={CARS_VERSION}"],
                   check=True)
    return exe


@dataclass(frozen=True, slots=True)
class CarsRun:
    wall_s: float
    max_rss_gib: float
    dsm_path: Path


@dataclass(frozen=True, slots=True)
class CarsCase:
    """The inputs of one CARS run: a pair, optionally an initial DEM and geoid."""

    images: tuple[Path, Path]
    dem: Path | None = None
    geoid: Path | None = None
    single_resolution: bool = False
    heights_above_geoid: bool = True


def gizeh_case(data: Path) -> CarsCase:
    g = data / "gizeh"
    return CarsCase((g / "img1.tif", g / "img2.tif"))


def cars_config(case: CarsCase, out_dir: Path, workers: int = 2) -> dict[str, Any]:
    """The CARS configuration of a case (the peers' Gizeh configuration, paths filled in)."""
    sensors = {
        name: {"image": str(img), "geomodel": {"path": str(img.with_suffix(".geom"))}}
        for name, img in zip(("one", "two"), case.images, strict=True)
    }
    inputs: dict[str, Any] = {"sensors": sensors, "pairing": [["one", "two"]]}
    if case.dem is not None:
        inputs["initial_elevation"] = {"dem": str(case.dem)}
        if case.geoid is not None:
            inputs["initial_elevation"]["geoid"] = str(case.geoid)
    config: dict[str, Any] = {
        "input": inputs,
        "orchestrator": {"mode": "multiprocessing", "nb_workers": workers,
                         "max_ram_per_worker": 2000},
        "output": {"directory": str(out_dir)},
    }
    if not case.heights_above_geoid:
        config["output"]["geoid"] = False
    if case.single_resolution:
        config["subsampling"] = {"advanced": {"resolutions": 1}}
    return config


def run_cars(case: CarsCase, out_dir: Path, workers: int = 2) -> CarsRun:
    """Run CARS on a case into ``out_dir``; wall time and largest process RSS."""
    exe = ensure_cars()
    out_dir.mkdir(parents=True, exist_ok=True)
    cfg_path = out_dir.parent / f"{out_dir.name}_cars.json"
    cfg_path.write_text(json.dumps(cars_config(case, out_dir, workers), indent=1),
                        encoding="utf-8")
    run = run_measured([str(exe), "--logtype", "plain", "--loglevel", "WARNING", str(cfg_path)])
    if run.returncode != 0:
        raise RuntimeError(f"CARS failed ({run.returncode}):\n{run.stderr[-3000:]}")
    return CarsRun(run.wall_s, run.max_rss_gib, out_dir / "dsm" / "dsm.tif")


@dataclass(frozen=True, slots=True)
class MeasuredRun:
    """A child process's exit status, output, wall time and peak RSS."""

    returncode: int
    stdout: str
    stderr: str
    wall_s: float
    max_rss_gib: float


def run_measured(cmd: list[str]) -> MeasuredRun:
    """Run ``cmd``; its wall time and the peak RSS of its largest process.

    ``os.wait4`` gives the resource use of this child alone (and of the
    descendants it waited for: CARS's workers), unlike RUSAGE_CHILDREN,
    which keeps the maximum over every child the benchmark ever ran.
    """
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return MeasuredRun(proc.returncode, out.read().decode(errors="replace"),
                           err.read().decode(errors="replace"), wall, usage.ru_maxrss / 2**20)


if __name__ == "__main__":
    from benchmarks.common import shared_data

    run = run_cars(gizeh_case(shared_data()), Path("/tmp/eochain-cars-bench") / "out")
    print(f"CARS {CARS_VERSION}: {run.wall_s:.1f} s wall, largest process {run.max_rss_gib:.2f} "
          f"GiB, DSM {run.dsm_path}")
