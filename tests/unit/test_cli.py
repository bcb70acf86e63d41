"""The ``eochain`` console script answers --help and --version."""

from __future__ import annotations

import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
from click.testing import CliRunner

from scheduler.cli.main import COMMANDS, INTERNAL_EXIT, cli

pytestmark = pytest.mark.unit


def test_help_lists_every_command() -> None:
    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0, result.output
    for name in COMMANDS:
        assert name in result.output


def test_version_is_the_distribution_version() -> None:
    result = CliRunner().invoke(cli, ["--version"])
    assert result.exit_code == 0
    assert metadata.version("eochain") in result.output


def test_console_script_is_installed() -> None:
    script = Path(sys.executable).with_name("eochain")
    result = subprocess.run([str(script), "--version"], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("eochain, version ")


def test_unknown_command_is_an_error() -> None:
    result = CliRunner().invoke(cli, ["orthoo"])
    assert result.exit_code != 0
    assert "No such command" in result.output


def test_console_script_reports_a_user_error_without_traceback(tmp_path: Path) -> None:
    campaign = tmp_path / "c.yaml"
    campaign.write_bytes("name: t\n".encode("utf-16"))
    script = Path(sys.executable).with_name("eochain")
    result = subprocess.run([str(script), "plan", str(campaign), "--out", str(tmp_path / "o")],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 1
    assert "is UTF-16 (little-endian) text, expected UTF-8" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_console_script_internal_error_goes_to_a_log(tmp_path: Path) -> None:
    """An exception no user input explains: the message says where the traceback went."""
    env = {**os.environ, "EOCHAIN_LOG_DIR": str(tmp_path / "logs")}
    code = ("import sys; from scheduler.cli.main import cli, COMMANDS; "
            "COMMANDS['boom'] = 'scheduler.cli.main:_user_error_types'; "
            "sys.argv = ['eochain', 'boom']; cli(prog_name='eochain')")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env=env, check=False)
    assert result.returncode == INTERNAL_EXIT, result.stderr
    assert "internal error (TypeError" in result.stderr and "report it" in result.stderr
    assert "Traceback" not in result.stderr
    logs = list((tmp_path / "logs").glob("eochain-*.log"))
    assert len(logs) == 1 and str(logs[0]) in result.stderr
    assert "Traceback" in logs[0].read_text()
