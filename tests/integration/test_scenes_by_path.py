"""Scenes named by path only: size, footprint, sensor and time read from the real files.

The two Gizeh Pléiades crops (``gizeh/img1.tif`` 801 x 800 and ``img2.tif``
801 x 795, OSSIM ``.geom`` RPCs of the full product, crop origin in the
geotransform) are listed by ``uri`` alone; ``eochain plan`` reads them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from planner.campaign import load_campaign
from planner.errors import CampaignError
from planner.scene_inputs import SceneFacts
from scheduler.cli.main import cli
from scheduler.cli.scene_survey import SceneSurvey, read_scene_facts

pytestmark = pytest.mark.integration


@pytest.fixture
def gizeh(shared_data: Path) -> Path:
    return shared_data / "gizeh"


def _campaign(tmp_path: Path, scenes: list[dict[str, object]], **more: object) -> Path:
    doc = {"name": "gizeh", "inputs": {"scenes": scenes, "pairs": [["img1", "img2"]]},
           "products": {"ortho": {"gsd_m": 0.5}, "dsm": {"gsd_m": 1.0}}, **more}
    path = tmp_path / "campaign.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def test_facts_of_a_real_crop(gizeh: Path) -> None:
    facts = read_scene_facts(str(gizeh / "img1.tif"))
    assert (facts.rows, facts.cols) == (801, 800)
    assert facts.sensor == "PHR1B" and facts.acquired.startswith("2013-02-08T08:36")
    lon0, lat0, lon1, lat1 = facts.footprint
    # the crop sees the Giza plateau: about 400 m across at 0.5 m
    assert 31.12 < lon0 < lon1 < 31.15 and 29.97 < lat0 < lat1 < 29.99
    geoid = gizeh.parent / "ventoux" / "geoid" / "egm96_15.gtx"
    with_dem = read_scene_facts(str(gizeh / "img1.tif"), dem=str(gizeh / "srtm_dir"),
                                geoid=str(geoid))
    # the DEM's height range is narrower than the RPC's: the footprint shrinks inside it
    assert with_dem.footprint[0] >= lon0 and with_dem.footprint[2] <= lon1
    assert "DEM" in with_dem.how


def test_plan_accepts_the_gizeh_pair_by_uri_only(gizeh: Path, tmp_path: Path) -> None:
    path = _campaign(tmp_path, [{"uri": str(gizeh / "img1.tif")},
                                {"uri": str(gizeh / "img2.tif")}])
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["plan", str(path), "--out", str(out), "--runs", "0",
                                      "--dem", str(gizeh / "srtm_dir"), "--geoid",
                                      str(gizeh.parent / "ventoux" / "geoid" / "egm96_15.gtx")])
    assert result.exit_code == 0, result.output
    doc = json.loads((out / "plan.json").read_text())
    tasks = {s["name"]: s["tasks"] for s in doc["stages"]}
    # two 400 m crops: one ortho tile each with its scene's plan and writer; one DSM tile
    # (stereo.plan + stereo, dsm + dsm.write): the run's tasks, surveyed with --dem
    assert tasks == {"stereo": 2, "dsm": 2, "ortho": 6}
    assert "the run's, on the products' surveyed grids" in result.output


def test_stated_values_are_checked_against_the_files(gizeh: Path, tmp_path: Path) -> None:
    paris = [2.25, 48.8, 2.42, 48.9]
    path = _campaign(tmp_path, [
        {"uri": str(gizeh / "img1.tif"), "footprint": paris, "rows": 40000, "cols": 40000},
        {"uri": str(gizeh / "img2.tif"), "rows": 801, "cols": 795}])
    result = CliRunner().invoke(cli, ["plan", str(path), "--out", str(tmp_path / "o")])
    assert result.exit_code == 1
    assert "inputs.scenes[0].rows = 40000 but" in result.output
    assert "has 801 rows" in result.output and "has 800 cols" in result.output
    assert "footprint = [2.25000, 48.80000, 2.42000, 48.90000] but the footprint" in result.output
    assert "inputs.scenes[1]" not in result.output
    assert "Traceback" not in result.output


def test_relative_uris_are_read_from_the_campaign_folder(gizeh: Path, tmp_path: Path) -> None:
    for name in ("img1", "img2"):
        for ext in (".tif", ".geom"):
            (tmp_path / f"{name}{ext}").symlink_to(gizeh / f"{name}{ext}")
    path = _campaign(tmp_path, [{"uri": "img1.tif"}, {"uri": "img2.tif", "id": "img2"}])
    c = load_campaign(path, reader=SceneSurvey())
    assert [(s.id, s.rows, s.cols, s.uri) for s in c.scenes] == [
        ("img1", 801, 800, "img1.tif"), ("img2", 801, 795, "img2.tif")]


def test_a_hanging_scene_times_out_and_the_others_are_read(gizeh: Path, tmp_path: Path) -> None:
    """A FIFO nobody writes to blocks its reader forever, as a black-holed store would."""
    fifo = tmp_path / "hang.tif"
    os.mkfifo(fifo)
    try:
        results = SceneSurvey(timeout_s=1.0)([str(fifo), str(gizeh / "img2.tif")])
        assert isinstance(results[0], str) and "timed out" in results[0]
        assert isinstance(results[1], SceneFacts) and results[1].cols == 795
        path = _campaign(tmp_path, [{"uri": str(fifo), "id": "img1"},
                                    {"uri": str(gizeh / "img2.tif")}])
        with pytest.raises(CampaignError, match=r"inputs.scenes\[0\] .*timed out"):
            load_campaign(path, reader=SceneSurvey(timeout_s=1.0))
    finally:
        # release the abandoned reader threads: open the FIFO for writing, then close it
        threading.Thread(target=lambda: open(fifo, "wb").close(), daemon=True).start()


def test_the_local_example_names_its_scenes_by_path(shared_data: Path) -> None:
    example = Path(__file__).resolve().parents[2] / "examples" / "local.yaml"
    if not (example.parent / "../../shared/data/gizeh/img1.tif").exists():
        pytest.skip("examples/local.yaml points at ../shared/data beside the repository; "
                    f"the data found is at {shared_data}")
    c = load_campaign(example, reader=SceneSurvey())
    assert [(s.id, s.rows, s.cols, s.sensor) for s in c.scenes] == [
        ("img1", 801, 800, "PHR1B"), ("img2", 801, 795, "PHR1B")]
    assert c.defaults_used == ("deadline_h", "data", "compute")


def _eochain(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0")
    return subprocess.run([sys.executable, "-m", "scheduler.cli.main", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=400, check=False)


def _dem_args(gizeh: Path) -> list[str]:
    return ["--dem", str(gizeh / "srtm_dir"), "--geoid",
            str(gizeh.parent / "ventoux" / "geoid" / "egm96_15.gtx")]


def test_run_refuses_a_contradicting_size_before_ray_starts(gizeh: Path, tmp_path: Path) -> None:
    path = _campaign(tmp_path, [{"uri": str(gizeh / "img1.tif"), "rows": 40000},
                                {"uri": str(gizeh / "img2.tif")}])
    done = _eochain("run", str(path), *_dem_args(gizeh), "--out", str(tmp_path / "out"), "-q",
                    cwd=tmp_path)
    assert done.returncode == 1, done.stderr
    assert "inputs.scenes[0].rows = 40000 but" in done.stderr and "has 801 rows" in done.stderr
    assert "metrics:" not in done.stderr and "Traceback" not in done.stderr


@pytest.mark.slow
def test_run_orthorectifies_scenes_named_by_path(gizeh: Path, tmp_path: Path) -> None:
    doc = {"name": "gizeh", "inputs": {"scenes": [{"uri": str(gizeh / "img1.tif")},
                                                  {"uri": str(gizeh / "img2.tif")}]},
           "products": {"ortho": {"gsd_m": 0.5}}}
    path = tmp_path / "campaign.yaml"
    path.write_text(yaml.safe_dump(doc))
    out = tmp_path / "out"
    done = _eochain("run", str(path), *_dem_args(gizeh), "--workers", "1", "--out", str(out),
                    "-q", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "products: 2 written, 0 already done, 0 failed, of 2" in done.stdout + done.stderr
    assert len(list(out.rglob("*.tif"))) == 2
