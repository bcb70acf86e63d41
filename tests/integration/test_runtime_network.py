"""Network calls that never answer: one scene behind a black-holed S3 endpoint does not
hold up the others, and a Ray address that does not answer fails fast with a clear error.

The black hole is a socket server on 127.0.0.1 that accepts every connection
and never sends a byte (what a stalled proxy or a firewalled endpoint does).
The campaign run is a subprocess given 60 s: a hang fails the test instead
of blocking the suite.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from scheduler.products.driver import Driver
from scheduler.runtime.errors import FlowError

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
#: The stated bound: good scenes finish and the bad one is reported within this time.
RUN_LIMIT_S = 60


@pytest.fixture
def black_hole() -> Iterator[int]:
    """A port on 127.0.0.1 that accepts connections and never answers; closed afterwards."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            held.append(conn)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield int(server.getsockname()[1])
    stop.set()
    thread.join(timeout=5)
    for conn in held:
        conn.close()
    server.close()


SCRIPT = """
import json, sys
from scheduler.products.flow import SceneInput
from scheduler.products.driver import Driver
scenes, dem, out = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3]
driver = Driver(address="serial", survey_timeout_s=float(sys.argv[4]))
report = (driver.get_flow([SceneInput(i, u) for i, u in scenes]).ortho(dem=dem, tile_px=128)
          .write(out).run())
print(json.dumps({"written": [r.object_key for r in report.written],
                  "failures": {f.label: f.error for f in report.failures}}))
"""


def test_a_black_holed_scene_is_reported_while_the_good_ones_finish(black_hole: int,
                                                                    tmp_path: Path) -> None:
    from ops.synthetic.scene import SceneSpec, generate_scene

    scene = generate_scene(SceneSpec(width=200, height=200, seed=4), tmp_path / "scene")
    scenes = [["good0", str(scene.out_dir / "view_0.tif")],
              ["good1", str(scene.out_dir / "view_1.tif")],
              ["stuck", "s3://far-away/scene.tif"]]
    env = dict(os.environ, AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing",
               AWS_DEFAULT_REGION="us-east-1", AWS_S3_ENDPOINT=f"127.0.0.1:{black_hole}",
               AWS_HTTPS="NO", AWS_VIRTUAL_HOSTING="FALSE",
               AWS_ENDPOINT_URL=f"http://127.0.0.1:{black_hole}")
    env.pop("AWS_PROFILE", None)
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, json.dumps(scenes), str(scene.out_dir / "dem.tif"),
         str(tmp_path / "out"), "10"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=RUN_LIMIT_S, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["written"] == ["ortho/good0.tif", "ortho/good1.tif"]
    assert list(result["failures"]) == ["stuck"]
    assert "timed out after 10 s" in result["failures"]["stuck"]
    assert "/vsis3/far-away/scene.tif" in result["failures"]["stuck"]


def test_a_ray_address_that_does_not_answer_fails_fast(black_hole: int) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"127.0.0.1:{s.getsockname()[1]}"  # closed when the block ends: nothing listens
    for address in (dead, f"127.0.0.1:{black_hole}"):
        driver = Driver(address=address)
        with pytest.raises(FlowError, match="no answer within"):
            driver.connect()


def test_eochain_run_reports_a_black_holed_scene_and_writes_the_others(black_hole: int,
                                                                      tmp_path: Path) -> None:
    """The same, as a user runs it: ``eochain run --survey-timeout 10`` with a local Ray
    (bounded at 120 s, Ray's start included)."""
    import yaml

    from ops.synthetic.scene import SceneSpec, generate_scene

    scene = generate_scene(SceneSpec(width=200, height=200, seed=4), tmp_path / "scene")
    lon0, lat0, lon1, lat1 = scene.footprint_lonlat
    scenes = [{"id": i, "uri": u, "footprint": [lon0, lat0, lon1, lat1], "rows": 200,
               "cols": 200} for i, u in (("good0", "scene/view_0.tif"),
                                         ("good1", "scene/view_1.tif"),
                                         ("stuck", "s3://far-away/scene.tif"))]
    campaign = tmp_path / "campaign.yaml"
    campaign.write_text(yaml.safe_dump({
        "name": "hole", "inputs": {"scenes": scenes}, "products": {"ortho": {"gsd_m": 0.5}},
        "tiling": {"tile_px": 128, "margin_px": 0},
        "data": {"region": "eu-west-3", "bucket": "unused"}, "deadline_h": 1,
        "compute": {"regions": ["eu-west-3"], "families": ["c7g"], "markets": ["spot"]}}))
    env = dict(os.environ, RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0", AWS_ACCESS_KEY_ID="testing",
               AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="us-east-1",
               AWS_S3_ENDPOINT=f"127.0.0.1:{black_hole}", AWS_HTTPS="NO",
               AWS_VIRTUAL_HOSTING="FALSE", AWS_ENDPOINT_URL=f"http://127.0.0.1:{black_hole}")
    env.pop("AWS_PROFILE", None)
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, "-c", "from scheduler.cli.run import run; run()", str(campaign),
         "--dem", str(scene.out_dir / "dem.tif"), "--out", str(out), "--workers", "1",
         "--survey-timeout", "10", "-q"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=2 * RUN_LIMIT_S, check=False)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "2 written, 0 already done, 1 failed, of 3" in done.stdout
    assert "FAILED stuck: /vsis3/far-away/scene.tif: survey timed out after 10 s" in done.stdout
    assert (out / "ortho/good0.tif").is_file() and (out / "ortho/good1.tif").is_file()
