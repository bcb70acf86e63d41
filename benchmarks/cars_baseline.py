"""CARS 1.3.0 (the CNES stereo pipeline) on the Gizeh pair: the baseline of ``benchmarks.stereo``.

CARS lives in a virtual environment of its own, never in eochain's: the
folder named by ``$CARS_VENV`` or ``/tmp/cars-venv``, created with
``python3 -m venv VENV && VENV/bin/pip install cars==1.3.0`` (about 40 s,
1.6 GB) when :func:`ensure_cars` is allowed to install it. The run uses the
configuration of ``../shared/peers/cars_gizeh.json`` (2 workers,
multiprocessing, default resolutions 4 then 1) with the paths filled in.

Run alone: ``python -m benchmarks.cars_baseline`` prints wall time, the peak
RSS of the largest process and the DSM path.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

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


def run_cars(data: Path, out_dir: Path, workers: int = 2) -> CarsRun:
    """Run CARS on the Gizeh pair into ``out_dir``; wall time and largest process RSS."""
    exe = ensure_cars()
    g = data / "gizeh"
    config = {
        "input": {
            "sensors": {
                "one": {"image": str(g / "img1.tif"), "geomodel": {"path": str(g / "img1.geom")}},
                "two": {"image": str(g / "img2.tif"), "geomodel": {"path": str(g / "img2.geom")}},
            },
            "pairing": [["one", "two"]],
        },
        "orchestrator": {"mode": "multiprocessing", "nb_workers": workers,
                         "max_ram_per_worker": 2000},
        "output": {"directory": str(out_dir)},
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    cfg_path = out_dir.parent / "cars_gizeh.json"
    cfg_path.write_text(json.dumps(config, indent=1), encoding="utf-8")
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    t0 = time.perf_counter()
    proc = subprocess.run([str(exe), "--logtype", "plain", "--loglevel", "WARNING",
                           str(cfg_path)], check=False, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"CARS failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    rss = max(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, before) / 2**20
    return CarsRun(wall, rss, out_dir / "dsm" / "dsm.tif")


if __name__ == "__main__":
    from benchmarks.stereo import shared_data

    run = run_cars(shared_data(), Path("/tmp/eochain-cars-bench") / "out")
    print(f"CARS {CARS_VERSION}: {run.wall_s:.1f} s wall, largest process {run.max_rss_gib:.2f} "
          f"GiB, DSM {run.dsm_path}")
