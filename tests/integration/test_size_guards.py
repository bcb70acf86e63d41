"""One-product commands refuse an absurd output grid before any compute, naming the estimate."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from scheduler.cli.main import cli

pytestmark = pytest.mark.integration


@pytest.fixture
def gizeh_args(shared_data: Path) -> list[str]:
    g = shared_data / "gizeh"
    return ["--dem", str(g / "srtm_dir"), "--geoid",
            str(shared_data / "ventoux" / "geoid" / "egm96_15.gtx")]


def test_ortho_at_a_millimetre_is_refused(shared_data: Path, gizeh_args: list[str],
                                          tmp_path: Path) -> None:
    out = tmp_path / "o.tif"
    result = CliRunner().invoke(cli, ["ortho", str(shared_data / "gizeh" / "img1.tif"),
                                      *gizeh_args, "--gsd", "0.001", "-o", str(out), "-q"])
    assert result.exit_code == 1, result.output
    assert "would make" in result.output and "TiB of output (limit 100 GiB)" in result.output
    assert "--allow-large" in result.output and not out.exists()


def test_dsm_at_a_millimetre_is_refused(shared_data: Path, gizeh_args: list[str],
                                        tmp_path: Path) -> None:
    g = shared_data / "gizeh"
    out = tmp_path / "d.tif"
    result = CliRunner().invoke(cli, ["dsm", str(g / "img1.tif"), str(g / "img2.tif"),
                                      *gizeh_args, "--gsd", "0.001", "-o", str(out), "-q"])
    assert result.exit_code == 1, result.output
    assert "DSM of img1.tif + img2.tif would make" in result.output and not out.exists()


@pytest.mark.parametrize("value", ["nan", "inf", "0", "-0.5"])
def test_non_finite_gsd_is_a_usage_error(shared_data: Path, gizeh_args: list[str],
                                         tmp_path: Path, value: str) -> None:
    result = CliRunner().invoke(cli, ["ortho", str(shared_data / "gizeh" / "img1.tif"),
                                      *gizeh_args, "--gsd", value, "-o", str(tmp_path / "o.tif")])
    assert result.exit_code == 2 and "Invalid value for '--gsd'" in result.output
