"""The ``eochain`` console script answers --help and --version."""

from __future__ import annotations

import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
from click.testing import CliRunner

from scheduler.cli import COMMANDS, cli

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
