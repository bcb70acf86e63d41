"""``make demo`` must never break: run the demo end to end on a small scene."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from scheduler.cli.main import cli

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_demo_runs_end_to_end(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["demo", "--out", str(tmp_path), "--size", "300"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert "demo finished" in result.output
    assert (tmp_path / "scene" / "view_0.tif").exists()
    assert (tmp_path / "scene" / "view_1.tif").exists()
