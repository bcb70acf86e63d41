"""``eochain plan`` refuses bad numbers, oversized work and an unusable --out before planning."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from scheduler.cli.main import cli

pytestmark = pytest.mark.unit

SMALL = {
    "name": "small",
    "inputs": {"survey": {"pairs": 2, "bbox": [4.6, 43.4, 6.6, 44.6], "scene_km": 8}},
    "products": {"ortho": {"gsd_m": 0.5}},
}


def _plan(tmp_path: Path, doc: dict[str, object], *args: str) -> tuple[int, str]:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(doc))
    result = CliRunner().invoke(cli, ["plan", str(path), "--out", str(tmp_path / "out"),
                                      "--runs", "0", *args])
    return result.exit_code, result.output


@pytest.mark.parametrize(("option", "value"), [("--deadline", "inf"), ("--deadline", "nan"),
                                               ("--deadline", "0"), ("--budget", "nan"),
                                               ("--budget", "-1"), ("--budget", "abc")])
def test_non_finite_or_out_of_range_numbers_are_usage_errors(tmp_path: Path, option: str,
                                                             value: str) -> None:
    code, output = _plan(tmp_path, SMALL, option, value)
    assert code == 2, output
    assert f"Invalid value for '{option}'" in output and "Traceback" not in output
    assert not (tmp_path / "out" / "plan.json").exists()


@pytest.mark.parametrize(("key", "value"), [("gsd_m", 1e-6), ("gsd_m", 0.001)])
def test_oversized_campaign_is_refused_with_its_estimate(tmp_path: Path, key: str,
                                                         value: float) -> None:
    doc = {**SMALL, "products": {"ortho": {key: value}}}
    code, output = _plan(tmp_path, doc)
    assert code == 1, output
    assert "campaign 'small' would make" in output and "--allow-large" in output
    assert not (tmp_path / "out" / "plan.json").exists()


def test_small_tiles_are_refused_in_the_file(tmp_path: Path) -> None:
    code, output = _plan(tmp_path, {**SMALL, "tiling": {"tile_px": 16}})
    assert code == 1 and "tiling.tile_px = 16, expected an integer >= 64" in output


def test_out_that_is_a_file_is_refused_before_planning(tmp_path: Path) -> None:
    (tmp_path / "taken").write_text("x")
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(SMALL))
    result = CliRunner().invoke(cli, ["plan", str(path), "--out", str(tmp_path / "taken")])
    assert result.exit_code == 2 and "is a file" in result.output
    under = CliRunner().invoke(cli, ["plan", str(path), "--out", str(tmp_path / "taken" / "o")])
    assert under.exit_code == 1
    assert "--out" in under.output and "cannot create the folder" in under.output


def test_defaults_are_stated(tmp_path: Path) -> None:
    code, output = _plan(tmp_path, SMALL)
    assert code == 0, output
    assert "defaults: deadline_h: 24 h" in output
    assert (tmp_path / "out" / "plan.json").exists()
