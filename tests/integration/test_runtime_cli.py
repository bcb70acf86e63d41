"""``eochain run``: a campaign file in, COGs with STAC items and a summary out, resumable.

Runs the command as a user would (a subprocess with its own local Ray) on a
campaign of two synthetic views: a campaign naming a corrupt file is refused
when loaded, naming it; the good campaign writes both products and the rerun
finds them in the manifest and recomputes nothing. Unusable outputs, a
missing DEM and a dead ``--address`` are refused before any work; SIGTERM and
SIGINT stop the Ray processes the command started, whose log monitor and
dashboard agent poll as ``scheduler.ray_private.LOCAL_DAEMON_ENV`` says.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from scheduler.ray_private import LOCAL_DAEMON_ENV

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]


def _eochain_run(*args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0")
    return subprocess.run(
        [sys.executable, "-c", "from scheduler.cli.run import run; run()", *args],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False,
    )


def _campaign(tmp_path: Path, size: int = 200, tile_px: int = 128) -> tuple[Path, Path]:
    """A campaign of the two views of a synthetic scene: (campaign file, DEM)."""
    from ops.synthetic.scene import SceneSpec, generate_scene

    scene = generate_scene(SceneSpec(width=size, height=size, seed=3), tmp_path / "scene")
    lon0, lat0, lon1, lat1 = scene.footprint_lonlat
    entry = {"footprint": [lon0, lat0, lon1, lat1], "rows": size, "cols": size}
    campaign = {
        "name": "tiny",
        "inputs": {"scenes": [{"id": "left", "uri": "scene/view_0.tif", **entry},
                              {"id": "right", "uri": "scene/view_1.tif", **entry}]},
        "products": {"ortho": {"gsd_m": 0.5}},
        "tiling": {"tile_px": tile_px, "margin_px": 0},
        "data": {"region": "eu-west-3", "bucket": "unused"},
        "deadline_h": 1,
        "compute": {"regions": ["eu-west-3"], "families": ["c7g"], "markets": ["spot"]},
    }
    path = tmp_path / "campaign.yaml"
    path.write_text(yaml.safe_dump(json.loads(json.dumps(campaign))))  # no YAML anchors
    return path, scene.out_dir / "dem.tif"


def test_unusable_outputs_and_a_missing_dem_are_refused_before_ray_starts(tmp_path: Path) -> None:
    campaign, dem = _campaign(tmp_path)
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    done = _eochain_run(str(campaign), "--dem", str(dem), "--out", str(a_file), "-q")
    assert done.returncode == 1 and "existing file; expected a folder" in done.stderr
    assert "metrics:" not in done.stderr  # nothing started
    done = _eochain_run(str(campaign), "--dem", str(tmp_path / "no-dem.tif"), "--out",
                        str(tmp_path / "out"), "-q")
    assert done.returncode == 2 and "no-dem.tif does not exist" in done.stderr
    assert not (tmp_path / "out").exists()


def test_a_dead_ray_address_is_a_clear_error(tmp_path: Path) -> None:
    import socket

    campaign, dem = _campaign(tmp_path)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"127.0.0.1:{s.getsockname()[1]}"
    done = _eochain_run(str(campaign), "--dem", str(dem), "--out", str(tmp_path / "out"),
                        "--address", dead, "-q")
    assert done.returncode == 1 and f"Ray cluster at '{dead}': no answer within" in done.stderr
    assert "Traceback" not in done.stderr


def _descendants(pid: int) -> set[int]:
    """Every process below ``pid`` (from /proc; no psutil needed)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found: set[int] = set()
    frontier = {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def _environ(pid: int) -> dict[str, str]:
    """The environment ``pid`` started with ({} when it is gone)."""
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return {}
    return dict(item.split("=", 1) for item in raw.decode(errors="replace").split("\0")
                if "=" in item)


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_stopping_the_command_stops_the_ray_processes_it_started(
    tmp_path: Path, sig: signal.Signals,
) -> None:
    campaign, dem = _campaign(tmp_path, size=512, tile_px=64)
    env = dict(os.environ, RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0")
    proc = subprocess.Popen(
        [sys.executable, "-c", "from scheduler.cli.run import run; run()", str(campaign),
         "--dem", str(dem), "--out", str(tmp_path / "out"), "--workers", "1", "-q"],
        cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        for line in proc.stderr:  # "metrics: URL" comes once Ray is up
            if line.startswith("metrics:"):
                break
        ray_processes = _descendants(proc.pid)
        assert ray_processes, "eochain run started no process"
        # the local Ray's daemons poll less than Ray's defaults (the test's own environment
        # sets none of the variables): the log monitor's environment says so, and the
        # raylet's, which the dashboard agent inherits (the agent's own is not readable:
        # its process title, set by setproctitle, overwrites that memory)
        daemons = {p: _cmdline(p) for p in ray_processes}
        slowed = [p for p, cmd in daemons.items()
                  if "log_monitor.py" in cmd or "raylet/raylet " in cmd]
        assert len(slowed) == 2, daemons
        for pid in slowed:
            env = _environ(pid)
            assert {k: env.get(k) for k in LOCAL_DAEMON_ENV} == LOCAL_DAEMON_ENV, daemons[pid]
        proc.send_signal(sig)
        proc.communicate(timeout=120)
        deadline = time.monotonic() + 60
        while alive := sorted(p for p in ray_processes if _alive(p)):
            assert time.monotonic() < deadline, f"still running after 60 s: {alive}"
            time.sleep(0.5)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()  # not left to the collector (a ResourceWarning in a later test)


def test_run_campaign_refuses_a_corrupt_scene_then_runs_and_resumes(tmp_path: Path) -> None:
    campaign, dem = _campaign(tmp_path)
    doc = yaml.safe_load(campaign.read_text())
    (tmp_path / "corrupt.tif").write_bytes(b"II*\x00 not a real tiff")
    broken = dict(doc["inputs"]["scenes"][0], id="broken", uri="corrupt.tif")
    with_broken = tmp_path / "with-broken.yaml"
    with_broken.write_text(yaml.safe_dump(json.loads(json.dumps(  # no YAML anchors
        {**doc, "inputs": {"scenes": [*doc["inputs"]["scenes"], broken]}}))))
    out = tmp_path / "out"
    # no plan: the cost is the run's ledger all the same (local nodes at no price)
    common = ["--dem", str(dem), "--out", str(out), "--workers", "2", "-q"]

    refused = _eochain_run(str(with_broken), *common)
    assert refused.returncode == 1 and "corrupt.tif" in refused.stderr, refused.stderr
    assert "Traceback" not in refused.stderr and not (out / "ortho").exists()

    first = _eochain_run(str(campaign), *common)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "2 written, 0 already done, 0 failed, of 2" in first.stdout
    assert "cost so far: $" in first.stdout
    for name in ("left", "right"):
        assert (out / "ortho" / f"{name}.tif").is_file()
        item = json.loads((out / "ortho" / f"{name}.json").read_text())
        assert item["properties"]["proj:code"].startswith("EPSG:326")

    second = _eochain_run(str(campaign), *common)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "0 written, 2 already done, 0 failed, of 2" in second.stdout
