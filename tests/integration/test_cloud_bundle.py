"""The bundle cluster nodes install: a real wheel built from this checkout, with its pins."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from scheduler.cloud.bundle import build_bundle
from scheduler.cloud.errors import ClusterConfigError

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def test_wheel_of_the_checkout_holds_the_packages_and_data(tmp_path: Path) -> None:
    bundle = build_bundle(REPO, tmp_path / "dist")
    assert sorted(p.name for p in bundle.folder.iterdir()) == sorted(
        ["constraints.txt", bundle.wheel_name])
    assert (bundle.folder / "constraints.txt").read_text() == (
        REPO / "constraints.txt").read_text()
    with zipfile.ZipFile(bundle.folder / bundle.wheel_name) as wheel:
        names = set(wheel.namelist())
    for needed in ("scheduler/fleet/drain.py", "scheduler/cli/main.py", "planner/data/aws_catalog.json",
                   "ops/__init__.py"):
        assert needed in names, needed
    assert not any(n.startswith(("tests/", ".venv/")) or "__pycache__" in n for n in names)
    assert max(len(n) for n in names) < 200 and len(names) < 400


def test_a_folder_that_is_no_checkout_is_named(tmp_path: Path) -> None:
    with pytest.raises(ClusterConfigError, match="lacks planner, ops, scheduler, pyproject.toml"):
        build_bundle(tmp_path, tmp_path / "dist")
