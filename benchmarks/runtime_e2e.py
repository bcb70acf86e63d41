"""End to end: ortho tiles per second of a campaign of synthetic scenes, 1 to N Ray workers.

Run: ``python -m benchmarks.runtime_e2e [--scenes S] [--size PX] [--tile PX] [--workers 1,2]``.
Writes the table to ``benchmarks/results/runtime_e2e.json``.

State machine and inputs: S synthetic scenes (:func:`ops.synthetic.scene.generate_scene`,
``--size`` pixels square, 0.5 m, float32, seeds 0..S-1, generated once into a
temporary folder; each scene's two views are two products, sharing the
scene's DEM). For each worker count W: a fresh local Ray instance
(``ray.init(num_cpus=W)``), then the flow
``get_flow(views).ortho(dem, tile_px).write(tmp)`` runs the whole campaign
(survey, per-scene plan, tiles, COG + STAC publication, manifest) into an
empty folder. Baseline: the same flow run serially in this process
(``Driver(address="serial")``, no Ray, one core).

tiles/s = ortho tiles / wall seconds of ``run()``; speed-up = tiles/s over
the serial baseline's; efficiency = speed-up / W. Products of every run are
checked byte-identical to the baseline's.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import synthetic_scenes
from scheduler.products.driver import Driver
from scheduler.products.flow import FlowReport, SceneInput
from scheduler.ray_private import use_loopback

RESULTS = Path(__file__).resolve().parent / "results" / "runtime_e2e.json"


def run_campaign(driver: Driver, scenes: list[SceneInput], tile_px: int,
                 dest: Path) -> tuple[float, int, FlowReport]:
    """The whole campaign as one flow; wall time of run() and the ortho tiles computed."""
    start = time.perf_counter()
    report = driver.get_flow(scenes).ortho(tile_px=tile_px).write(dest).run()
    wall_s = time.perf_counter() - start
    if not report.ok or report.dispatch is None:
        raise SystemExit(f"campaign failed: {report.failures}")
    tiles = sum(1 for k in report.dispatch.runs_by_key
                if "/ortho/" in k and not k.endswith(("/plan", "/write")))
    return wall_s, tiles, report


def products(dest: Path) -> dict[str, bytes]:
    return {p.relative_to(dest).as_posix(): p.read_bytes()
            for p in sorted((dest / "ortho").glob("*.tif"))}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", type=int, default=3)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--tile", type=int, default=256)
    parser.add_argument("--workers", default="1,2")
    args = parser.parse_args(argv)
    workers = [int(w) for w in args.workers.split(",")]
    use_loopback()
    import ray

    root = Path(tempfile.mkdtemp(prefix="eochain-e2e-"))
    try:
        scenes = synthetic_scenes(root / "scenes", args.scenes, args.size)
        serial_s, tiles, _ = run_campaign(Driver(address="serial"), scenes, args.tile,
                                          root / "serial")
        reference = products(root / "serial")
        rows = [{"runner": "serial, in-process (baseline)", "workers": 1, "tiles": tiles,
                 "wall_s": round(serial_s, 2), "tiles_per_s": round(tiles / serial_s, 2),
                 "speedup": 1.0, "efficiency": 1.0}]
        for w in workers:
            ray.init(address="local", num_cpus=w, include_dashboard=False, log_to_driver=False,
                     object_store_memory=256 * 2**20)
            try:
                dest = root / f"ray{w}"
                wall_s, n, _ = run_campaign(Driver(), scenes, args.tile, dest)
            finally:
                ray.shutdown()
            if products(dest) != reference:
                raise SystemExit(f"products with {w} workers differ from the serial run")
            speedup = serial_s / wall_s
            rows.append({"runner": "eochain on local Ray", "workers": w, "tiles": n,
                         "wall_s": round(wall_s, 2), "tiles_per_s": round(n / wall_s, 2),
                         "speedup": round(speedup, 2), "efficiency": round(speedup / w, 2)})
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
          f"{args.scenes} scenes x 2 views of {args.size} px, tiles of {args.tile} px")
    print(f"{'runner':<32} {'W':>3} {'tiles':>6} {'wall s':>8} {'tiles/s':>8} {'speedup':>8} "
          f"{'eff':>5}")
    for r in rows:
        print(f"{r['runner']:<32} {r['workers']:>3} {r['tiles']:>6} {r['wall_s']:>8.2f} "
              f"{r['tiles_per_s']:>8.2f} {r['speedup']:>8.2f} {r['efficiency']:>5.2f}")
    doc = {"cores": os.cpu_count(), "scenes": args.scenes, "size_px": args.size,
           "tile_px": args.tile, "rows": rows}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(doc, indent=2) + "\n")
    return doc


if __name__ == "__main__":
    main()
