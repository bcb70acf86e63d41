"""Local object store, manifest and product keys: atomic publication, resumability."""

from __future__ import annotations

from pathlib import Path

import pytest

from planner.grid import GeoBox
from scheduler.runtime.errors import StoreError
from scheduler.runtime.manifest import Manifest, ProductRecord, product_key
from scheduler.runtime.stac import make_item, stac_key
from scheduler.runtime.store import TMP_PREFIX, LocalStore, ObjectStore, open_store

pytestmark = pytest.mark.unit


def test_local_store_publishes_whole_files_and_sweeps_leftovers(tmp_path: Path) -> None:
    store = open_store(str(tmp_path / "out"))
    assert isinstance(store, LocalStore) and isinstance(store, ObjectStore)
    src = tmp_path / "src.bin"
    src.write_bytes(b"x" * 10_000)
    store.put_file("ortho/a.tif", src)
    store.put_bytes("ortho/a.json", b"{}")
    assert store.get_bytes("ortho/a.tif") == src.read_bytes()
    assert store.list_keys("ortho/") == ["ortho/a.json", "ortho/a.tif"]
    # a writer killed between write and rename leaves only a hidden temporary file
    leftover = tmp_path / "out" / "ortho" / f"{TMP_PREFIX}dead-a.tif"
    leftover.write_bytes(b"partial")
    assert store.list_keys() == ["ortho/a.json", "ortho/a.tif"]
    assert store.sweep_temps() == [f"ortho/{TMP_PREFIX}dead-a.tif"]
    assert not leftover.exists()


def test_store_rejects_keys_escaping_the_root(tmp_path: Path) -> None:
    store = LocalStore(str(tmp_path))
    for bad in ("../x", "/etc/passwd", "a//b", ""):
        with pytest.raises(StoreError, match="relative path"):
            store.put_bytes(bad, b"")
    with pytest.raises(StoreError, match="unsupported scheme"):
        open_store("gs://bucket/x")


def test_manifest_lists_only_products_whose_object_exists(tmp_path: Path) -> None:
    store = LocalStore(str(tmp_path))
    manifest = Manifest(store)
    store.put_bytes("ortho/a.tif", b"a")
    rec = ProductRecord("k1", "ortho/a.tif", store.uri("ortho/a.tif"), "ortho", "a", "00", 1)
    manifest.record(rec)
    manifest.record(ProductRecord("k2", "ortho/b.tif", "", "ortho", "b", "00", 1))
    assert manifest.done_keys() == {"k1"}
    assert manifest.get("k1") == rec and manifest.get("k3") is None


def test_product_key_changes_with_params_and_inputs(tmp_path: Path) -> None:
    image = tmp_path / "a.tif"
    image.write_bytes(b"1")
    k = product_key("ortho", {"gsd_m": 0.5}, [str(image)])
    assert k == product_key("ortho", {"gsd_m": 0.5}, [str(image)])
    assert k != product_key("ortho", {"gsd_m": 1.0}, [str(image)])
    image.write_bytes(b"22")
    assert k != product_key("ortho", {"gsd_m": 0.5}, [str(image)])


def test_stac_item_has_projection_and_raster_fields() -> None:
    geobox = GeoBox.from_bounds("EPSG:32631", 374000, 4828500, 374100, 4828600, 0.5)
    item = make_item("a", "a.tif", geobox, dtype="float32", nodata=float("nan"))
    props = item["properties"]
    assert props["proj:code"] == "EPSG:32631"
    assert props["proj:shape"] == [200, 200]
    band = item["assets"]["data"]["raster:bands"][0]
    assert band == {"data_type": "float32", "nodata": "nan", "spatial_resolution": 0.5}
    assert any("projection" in e for e in item["stac_extensions"])
    lon0, lat0, lon1, lat1 = item["bbox"]
    assert 1.4 < lon0 < lon1 < 1.5 and 43.5 < lat0 < lat1 < 43.7
    assert stac_key("ortho/a.tif") == "ortho/a.json"
