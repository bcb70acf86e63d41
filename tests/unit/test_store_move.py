"""LocalStore.move_file: a finished file is renamed onto its key, not copied, on one filesystem."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

from scheduler.products.store import TMP_PREFIX, LocalStore

pytestmark = pytest.mark.unit


def test_a_file_on_the_stores_filesystem_is_renamed_onto_its_key(tmp_path: Path) -> None:
    store = LocalStore(str(tmp_path / "out"))
    scratch = tmp_path / "scratch.tif"
    scratch.write_bytes(b"cog" * 1000)
    inode = scratch.stat().st_ino
    store.move_file("ortho/a.tif", scratch)
    assert not scratch.exists()
    published = tmp_path / "out" / "ortho" / "a.tif"
    assert published.stat().st_ino == inode  # the same file: no byte copied
    assert store.get_bytes("ortho/a.tif") == b"cog" * 1000
    assert not list((tmp_path / "out").rglob(f"{TMP_PREFIX}*"))


def test_a_file_on_another_filesystem_is_copied_whole_then_removed(tmp_path: Path) -> None:
    other = Path("/dev/shm")
    if not other.is_dir() or os.stat(other).st_dev == os.stat(tmp_path).st_dev:
        pytest.skip(f"no second filesystem here: /dev/shm and {tmp_path} share a device")
    store = LocalStore(str(tmp_path / "out"))
    with tempfile.NamedTemporaryFile(dir=other, suffix=".tif", delete=False) as f:
        f.write(b"cog" * 1000)
    scratch = Path(f.name)
    store.move_file("ortho/a.tif", scratch)
    assert not scratch.exists()
    assert store.get_bytes("ortho/a.tif") == b"cog" * 1000
    assert not list((tmp_path / "out").rglob(f"{TMP_PREFIX}*"))
