"""The file_sd files a run keeps for Prometheus: written whole, removed at the end, swept when stale."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from scheduler.observe.targets import (
    DEFAULT_TARGETS_DIR,
    registered_target,
    sweep_stale,
    targets_dir,
)

pytestmark = pytest.mark.unit


def test_a_run_is_listed_while_it_lives(tmp_path: Path) -> None:
    with registered_target("provence", "127.0.0.1", 9123, tmp_path / "targets") as path:
        assert path is not None and path.parent == tmp_path / "targets"
        doc = json.loads(path.read_text())
        assert doc == [{"targets": ["127.0.0.1:9123"], "labels": {
            "campaign": "provence", "driver_host": doc[0]["labels"]["driver_host"],
            "driver_pid": str(os.getpid())}}]
        assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary left
    assert not path.exists()


def test_the_folder_comes_from_the_environment() -> None:
    assert targets_dir({}) == DEFAULT_TARGETS_DIR
    assert targets_dir({"EOCHAIN_PROMETHEUS_TARGETS": "/srv/prom/targets"}) == Path(
        "/srv/prom/targets")
    assert targets_dir({"EOCHAIN_PROMETHEUS_TARGETS": ""}) is None


def test_an_unwritable_folder_names_the_variable(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with (pytest.raises(OSError, match="EOCHAIN_PROMETHEUS_TARGETS"),
          registered_target("c", "127.0.0.1", 1, blocker / "targets")):
        pass


def test_with_warn_an_unwritable_folder_leaves_the_run_unlisted(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    warnings: list[str] = []
    with registered_target("c", "127.0.0.1", 1, blocker / "targets", warn=warnings.append) as p:
        assert p is None
    assert len(warnings) == 1 and "EOCHAIN_PROMETHEUS_TARGETS" in warnings[0]


def test_only_old_files_of_dead_drivers_here_are_swept(tmp_path: Path) -> None:
    host = "eo-head"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    dead_pid = int(dead.stdout)  # that process has exited
    files = {
        "dead-old": tmp_path / f"eochain-{host}-{dead_pid}-9001.json",
        "dead-new": tmp_path / f"eochain-{host}-{dead_pid}-9002.json",
        "alive-old": tmp_path / f"eochain-{host}-{os.getpid()}-9003.json",
        "other-host": tmp_path / f"eochain-elsewhere-{dead_pid}-9004.json",
        "hand-written": tmp_path / "mine.json",
    }
    now = time.time()
    for name, path in files.items():
        path.write_text("[]")
        if name != "dead-new":
            os.utime(path, (now - 2 * 86400, now - 2 * 86400))
    removed = sweep_stale(tmp_path, host=host, now_s=now)
    assert removed == [files["dead-old"]]
    assert all(p.exists() for n, p in files.items() if n != "dead-old")
