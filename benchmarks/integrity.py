"""What integrity costs: resume verification, a black-holed input, two drivers on one output.

Run: ``python -m benchmarks.integrity [--scenes S] [--size PX] [--timeout S]``.
Writes ``benchmarks/results/integrity.json``.

All runs are in-process (``Driver(address="serial")``) on S synthetic scenes
(two views each: 2S ortho products, ``--size`` pixels square, tiles of 128).

* resume: wall time of a rerun that verifies and skips every product (sizes
  and versions unchanged: no checksum), and of one after every product was
  touched (new mtime: each checksum recomputed), against the first run's.
* black hole: the same campaign plus one scene on an S3 endpoint that
  accepts connections and never answers, with a survey timeout of
  ``--timeout`` s; baseline: the campaign without it. Expected: the
  baseline plus about the timeout, the good products all written.
* two drivers: two processes run the campaign on one folder at once;
  baseline: one process alone. Reported: products written by each (their
  sum must be 2S: each computed once) and the wall time of the slower one.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from benchmarks.common import synthetic_scenes
from scheduler.products.driver import Driver
from scheduler.products.flow import FlowReport, SceneInput

RESULTS = Path(__file__).resolve().parent / "results" / "integrity.json"
REPO = Path(__file__).resolve().parents[1]
TILE_PX = 128

DRIVER = """
import json, sys
from scheduler.products.flow import SceneInput
from scheduler.products.driver import Driver
scenes, out = json.loads(sys.argv[1]), sys.argv[2]
r = (Driver(address="serial", lease_poll_s=0.2).get_flow([SceneInput(*s) for s in scenes])
     .ortho(tile_px=TILE).write(out).run())
print(json.dumps({"written": len(r.written), "ok": r.ok}))
""".replace("TILE", str(TILE_PX))


def timed(scenes: list[SceneInput], dest: Path, **driver: Any) -> tuple[float, FlowReport]:
    start = time.perf_counter()
    report = Driver(address="serial", **driver).get_flow(scenes).ortho(tile_px=TILE_PX) \
        .write(dest).run()
    return time.perf_counter() - start, report


def black_hole() -> tuple[int, socket.socket]:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    held: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                held.append(server.accept()[0])
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    return int(server.getsockname()[1]), server


def two_drivers(scenes: list[SceneInput], dest: Path, n: int) -> tuple[float, list[int]]:
    arg = json.dumps([[s.id, s.uri, s.dem] for s in scenes])
    start = time.perf_counter()
    procs = [subprocess.Popen([sys.executable, "-c", DRIVER, arg, str(dest)], cwd=REPO,
                              stdout=subprocess.PIPE, text=True) for _ in range(n)]
    written = []
    for p in procs:
        out, _ = p.communicate(timeout=1800)
        doc = json.loads(out.strip().splitlines()[-1])
        if p.returncode != 0 or not doc["ok"]:
            raise SystemExit(f"a driver failed: {out}")
        written.append(int(doc["written"]))
    return time.perf_counter() - start, written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", type=int, default=2)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--timeout", type=float, default=10.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="eochain-integrity-") as tmp:
        root = Path(tmp)
        scenes = synthetic_scenes(root / "scenes", args.scenes, args.size)
        n = len(scenes)
        first_s, first = timed(scenes, root / "a")
        resume_s, resumed = timed(scenes, root / "a")
        for p in (root / "a" / "ortho").glob("*.tif"):
            os.utime(p)  # same bytes, new version: every checksum is recomputed
        touched_s, touched = timed(scenes, root / "a")
        assert len(first.written) == n and len(resumed.skipped) == n == len(touched.skipped)

        port, server = black_hole()
        env = {"AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "x",
               "AWS_DEFAULT_REGION": "us-east-1", "AWS_S3_ENDPOINT": f"127.0.0.1:{port}",
               "AWS_HTTPS": "NO", "AWS_VIRTUAL_HOSTING": "FALSE",
               "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}"}
        os.environ.update(env)
        stuck = SceneInput("stuck", "s3://far-away/scene.tif", scenes[0].dem)
        hole_s, hole = timed([*scenes, stuck], root / "b", survey_timeout_s=args.timeout)
        server.close()
        assert len(hole.written) == n and [f.label for f in hole.failures] == ["stuck"]

        one_s, _ = two_drivers(scenes, root / "c", 1)
        two_s, two = two_drivers(scenes, root / "d", 2)
        assert sum(two) == n, two
    result = {
        "benchmark": "integrity", "machine": platform.machine(), "cpus": os.cpu_count(),
        "products": n, "size_px": args.size, "tile_px": TILE_PX,
        "first_run_s": round(first_s, 2),
        "resume_verified_s": round(resume_s, 2),
        "resume_after_touch_s": round(touched_s, 2),
        "resume_over_first": round(resume_s / first_s, 3),
        "black_hole_survey_timeout_s": args.timeout,
        "black_hole_run_s": round(hole_s, 2),
        "black_hole_over_first": round(hole_s / first_s, 2),
        "one_driver_s": round(one_s, 2),
        "two_drivers_s": round(two_s, 2),
        "two_drivers_written": two,
        "two_over_one": round(two_s / one_s, 2),
    }
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
