"""Resume verifies what it skips: a changed RPC sidecar, a truncated product and a lost
STAC item are each found on rerun, and rebuilt (or rewritten) with nothing else redone.

The scene is a real Pléiades crop (Ventoux, RPC in an OSSIM ``.geom`` beside
the image), copied so its sidecar can be edited; runs are in-process
(``Driver(address="serial")``), at 2 m to keep them short.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from scheduler.products.driver import Driver
from scheduler.products.flow import FlowReport, SceneInput
from scheduler.products.manifest import Manifest
from scheduler.products.store import LocalStore

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture
def scene(shared_data: Path, tmp_path: Path) -> Path:
    ventoux = shared_data / "ventoux"
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("left_image.tif", "left_image.geom"):
        shutil.copy(ventoux / name, folder / name)
    return folder / "left_image.tif"


def _run(image: Path, shared_data: Path, out: Path) -> FlowReport:
    ventoux = shared_data / "ventoux"
    report = (Driver(address="serial").get_flow([SceneInput("left", str(image))])
              .ortho(dem=ventoux / "srtm", geoid=ventoux / "geoid/egm96_15.gtx", gsd_m=2.0,
                     tile_px=128)
              .write(out).run())
    assert report.ok, report.failures
    return report


def _shift_rows(geom: Path, rows: float) -> None:
    lines = []
    for line in geom.read_text().splitlines():
        key, sep, value = line.partition(":")
        if key.strip() == "line_off":
            line = f"{key}{sep}  {float(value) + rows!r}"
        lines.append(line)
    geom.write_text("\n".join(lines) + "\n")


def test_a_changed_rpc_sidecar_rebuilds_the_product(scene: Path, shared_data: Path,
                                                    tmp_path: Path) -> None:
    out = tmp_path / "out"
    first = _run(scene, shared_data, out)
    assert [r.object_key for r in first.written] == ["ortho/left.tif"]
    before = (out / "ortho/left.tif").read_bytes()
    _shift_rows(scene.with_suffix(".geom"), 3.0)
    second = _run(scene, shared_data, out)
    assert [r.object_key for r in second.written] == ["ortho/left.tif"] and not second.skipped
    assert (out / "ortho/left.tif").read_bytes() != before
    third = _run(scene, shared_data, out)
    assert third.skipped == ("ortho/left.tif",) and not third.written


def test_a_truncated_product_is_rebuilt_to_the_same_bytes(scene: Path, shared_data: Path,
                                                          tmp_path: Path) -> None:
    out = tmp_path / "out"
    _run(scene, shared_data, out)
    product = out / "ortho/left.tif"
    good = product.read_bytes()
    product.write_bytes(good[:1000])
    again = _run(scene, shared_data, out)
    assert [r.object_key for r in again.written] == ["ortho/left.tif"]
    assert len(again.rebuilt) == 1 and f"1000 bytes, recorded {len(good)}" in again.rebuilt[0]
    assert product.read_bytes() == good
    # same size, other bytes (a copy over it): the checksum is recomputed and fails
    product.write_bytes(good[::-1])
    fixed = _run(scene, shared_data, out)
    assert "SHA-256 differs" in fixed.rebuilt[0] and product.read_bytes() == good


def test_a_deleted_stac_item_is_rewritten_without_recomputing(scene: Path, shared_data: Path,
                                                               tmp_path: Path) -> None:
    out = tmp_path / "out"
    first = _run(scene, shared_data, out)
    item = out / "ortho/left.json"
    original = json.loads(item.read_text())
    item.unlink()
    again = _run(scene, shared_data, out)
    assert not again.written and again.skipped == ("ortho/left.tif",)
    assert len(again.items_rewritten) == 1 and "STAC item missing" in again.items_rewritten[0]
    rewritten = json.loads(item.read_text())
    for field in ("id", "geometry", "bbox", "assets"):
        assert rewritten[field] == original[field], field
    for prop in ("eochain:product_key", "eochain:sha256", "datetime", "proj:transform"):
        assert rewritten["properties"][prop] == original["properties"][prop], prop
    assert rewritten["properties"]["eochain:sha256"] == first.written[0].sha256
    verdict = Manifest(LocalStore(str(out))).verify(first.written[0].key)
    assert verdict.product_ok and verdict.item_ok


def test_a_destination_that_would_overwrite_an_input_is_refused(scene: Path,
                                                                 shared_data: Path) -> None:
    """Scenes kept as <dest>/ortho/<id>.tif: writing products there would destroy them."""
    from scheduler.runtime.errors import FlowError

    dest = scene.parent.parent / "campaign"
    (dest / "ortho").mkdir(parents=True)
    raw = dest / "ortho" / "left.tif"
    raw.write_bytes(scene.read_bytes())
    scene.with_suffix(".geom").rename(raw.with_suffix(".geom"))
    with pytest.raises(FlowError, match="would overwrite the input"):
        _run(raw, shared_data, dest)
    assert raw.read_bytes() == scene.read_bytes()
