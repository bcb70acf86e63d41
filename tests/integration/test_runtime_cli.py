"""``eochain run``: a campaign file in, COGs with STAC items and a summary out, resumable.

Runs the command as a user would (a subprocess with its own local Ray) on a
campaign of two synthetic views and one corrupt file: the corrupt scene is
reported by name with the reason and the exit status is 1; the rerun finds
both good products in the manifest and recomputes nothing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]


def _eochain_run(*args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0")
    return subprocess.run(
        [sys.executable, "-c", "from scheduler.cmd_run import run; run()", *args],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False,
    )


def test_run_campaign_reports_failures_and_resumes(tmp_path: Path) -> None:
    from ops.synthetic import SceneSpec, generate_scene

    scene = generate_scene(SceneSpec(width=200, height=200, seed=3), tmp_path / "scene")
    corrupt = tmp_path / "corrupt.tif"
    corrupt.write_bytes(b"II*\x00 not a real tiff")
    lon0, lat0, lon1, lat1 = scene.footprint_lonlat
    entry = {"footprint": [lon0, lat0, lon1, lat1], "rows": 200, "cols": 200}
    campaign = {
        "name": "tiny",
        "inputs": {"scenes": [
            {"id": "left", "uri": "scene/view_0.tif", **entry},
            {"id": "right", "uri": "scene/view_1.tif", **entry},
            {"id": "broken", "uri": "corrupt.tif", **entry},
        ]},
        "products": {"ortho": {"gsd_m": 0.5}},
        "tiling": {"tile_px": 128, "margin_px": 0},
        "data": {"region": "eu-west-3", "bucket": "unused"},
        "deadline_h": 1,
        "compute": {"regions": ["eu-west-3"], "families": ["c7g"], "markets": ["spot"]},
    }
    path = tmp_path / "campaign.yaml"
    path.write_text(yaml.safe_dump(campaign))
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"fleet": [{"instances": 2, "price_usd_per_h": 0.05}]}))
    out = tmp_path / "out"
    args = [str(path), "--plan", str(plan), "--dem", str(scene.out_dir / "dem.tif"),
            "--out", str(out), "--workers", "2", "-q"]

    first = _eochain_run(*args)
    assert first.returncode == 1, first.stdout + first.stderr
    assert "2 written, 0 already done, 1 failed, of 3" in first.stdout
    assert "FAILED broken:" in first.stdout and "corrupt.tif" in first.stdout
    assert "cost so far: $" in first.stdout
    for name in ("left", "right"):
        assert (out / "ortho" / f"{name}.tif").is_file()
        item = json.loads((out / "ortho" / f"{name}.json").read_text())
        assert item["properties"]["proj:code"].startswith("EPSG:326")

    second = _eochain_run(*args)
    assert second.returncode == 1, second.stdout + second.stderr
    assert "0 written, 2 already done, 1 failed, of 3" in second.stdout
