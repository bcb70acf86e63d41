"""Local object store, manifest and product keys: atomic publication, per-run temporaries,
conditional writes, resume verification."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from dataclasses import replace
from pathlib import Path
from typing import BinaryIO, Self

import pytest

from planner.geometry.grid import GeoBox
from scheduler.products.errors import ManifestError, StoreError
from scheduler.products.manifest import Manifest, ProductRecord, product_key, rpc_identity
from scheduler.products.stac import make_item, stac_key
from scheduler.products.store import STALE_TEMP_S, TMP_PREFIX, LocalStore, ObjectStore, open_store

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
    # a writer killed between write and rename leaves only a hidden temporary file; an old
    # one of another run is a dead writer's and is swept, a fresh one may be live and stays
    leftover = tmp_path / "out" / "ortho" / f"{TMP_PREFIX}dead.0-a.tif"
    leftover.write_bytes(b"partial")
    old = time.time() - STALE_TEMP_S - 60
    os.utime(leftover, (old, old))
    live = tmp_path / "out" / "ortho" / f"{TMP_PREFIX}other.0-b.tif"
    live.write_bytes(b"being written")
    assert store.list_keys() == ["ortho/a.json", "ortho/a.tif"]
    assert store.sweep_temps() == [f"ortho/{TMP_PREFIX}dead.0-a.tif"]
    assert not leftover.exists() and live.exists()


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
    rec = ProductRecord("k1", "ortho/a.tif", store.uri("ortho/a.tif"), "ortho", "a",
                        hashlib.sha256(b"a").hexdigest(), 1)
    manifest.record(rec)
    manifest.record(ProductRecord("k2", "ortho/b.tif", "", "ortho", "b", "00", 1))
    assert manifest.verify("k1").product_ok
    assert manifest.verify("k2").reason == f"{store.uri('ortho/b.tif')}: recorded but missing"
    assert manifest.get("k3") is None
    # the first verification hashed the object (no version recorded) and kept its version
    stat = store.stat("ortho/a.tif")
    assert stat is not None and manifest.get("k1") == replace(rec, version=stat.version)


def test_manifest_verification_finds_truncated_and_rewritten_products(tmp_path: Path) -> None:
    store = LocalStore(str(tmp_path))
    manifest = Manifest(store)
    data = b"product bytes" * 100
    store.put_bytes("ortho/a.tif", data)
    stat = store.stat("ortho/a.tif")
    assert stat is not None
    digest = hashlib.sha256(data).hexdigest()
    rec = ProductRecord("k1", "ortho/a.tif", "", "ortho", "a", digest, len(data), "ortho/a.json",
                        stat.version)
    manifest.record(rec)
    store.put_bytes("ortho/a.json", json.dumps({"properties": {"eochain:sha256": digest}}).encode())
    verdict = manifest.verify("k1")
    assert verdict.product_ok and verdict.item_ok
    store.delete("ortho/a.json")
    verdict = manifest.verify("k1")
    assert verdict.product_ok and not verdict.item_ok and "STAC item missing" in verdict.reason
    (tmp_path / "ortho/a.tif").write_bytes(data[:1000])
    verdict = manifest.verify("k1")
    assert not verdict.product_ok and "1000 bytes, recorded 1300" in verdict.reason
    # same size, other bytes: the version changed, so the checksum is recomputed
    (tmp_path / "ortho/a.tif").write_bytes(data[::-1])
    verdict = manifest.verify("k1")
    assert not verdict.product_ok and "SHA-256 differs" in verdict.reason
    (tmp_path / "_manifest/k1.json").write_bytes(b"not json")
    verdict = manifest.verify("k1")
    assert not verdict.product_ok and "not a product record" in verdict.reason


def test_product_key_changes_with_params_inputs_rpc_and_dem_tiles(tmp_path: Path) -> None:
    image = tmp_path / "a.tif"
    image.write_bytes(b"1")
    dem = tmp_path / "dem"
    dem.mkdir()
    (dem / "N43E001.hgt").write_bytes(b"h")
    k = product_key("ortho", {"gsd_m": 0.5}, [str(image), str(dem)], ["rpc|1"])
    assert k == product_key("ortho", {"gsd_m": 0.5}, [str(image), str(dem)], ["rpc|1"])
    assert k != product_key("ortho", {"gsd_m": 1.0}, [str(image), str(dem)], ["rpc|1"])
    assert k != product_key("ortho", {"gsd_m": 0.5}, [str(image), str(dem)], ["rpc|2"])
    (dem / "N44E001.hgt").write_bytes(b"h")
    k2 = product_key("ortho", {"gsd_m": 0.5}, [str(image), str(dem)], ["rpc|1"])
    assert k2 != k
    image.write_bytes(b"22")
    assert k2 != product_key("ortho", {"gsd_m": 0.5}, [str(image), str(dem)], ["rpc|1"])
    with pytest.raises(ManifestError, match="cannot identify the input"):
        product_key("ortho", {}, [str(tmp_path / "missing.tif")])
    with pytest.raises(ManifestError, match="not JSON values"):
        product_key("ortho", {"gsd_m": float("nan")}, [str(image)])


def test_rpc_identity_ignores_where_the_model_was_read() -> None:
    from ops.sensor.rpc import RpcModel

    ones = tuple([1.0] + [0.0] * 19)
    rpc = RpcModel(0, 0, 43, 1, 100, 10, 10, 0.1, 0.1, 50, ones, ones, ones, ones)
    moved = dataclasses.replace(rpc, source="elsewhere.geom")
    assert rpc_identity(rpc) == rpc_identity(moved)
    assert rpc_identity(rpc) != rpc_identity(dataclasses.replace(rpc, line_off=1.0))


def test_temporaries_are_named_per_run_and_swept_only_by_their_run(tmp_path: Path) -> None:
    """Two runs on one folder: a run's sweep never removes the other's live temporary."""
    a = LocalStore(str(tmp_path), run_id="run-a")
    b = LocalStore(str(tmp_path), run_id="run-b")
    (tmp_path / "ortho").mkdir()
    live_b = tmp_path / "ortho" / f"{TMP_PREFIX}run-b.x-s1.tif"
    live_b.write_bytes(b"b is writing")
    dead_a = tmp_path / "ortho" / f"{TMP_PREFIX}run-a.y-s2.tif"
    dead_a.write_bytes(b"a's lost node")
    a.put_bytes("ortho/s3.tif", b"3")
    assert a.sweep_temps() == [f"ortho/{TMP_PREFIX}run-a.y-s2.tif"]
    assert live_b.exists()
    # run b publishes while a sweeps: its temporary survives, its publication succeeds
    written: list[str] = []

    def slow(f: BinaryIO) -> None:
        f.write(b"half")
        assert a.sweep_temps() == []
        f.write(b" and the rest")
        written.append("ok")

    b._publish("ortho/s4.tif", slow)
    assert written == ["ok"] and b.get_bytes("ortho/s4.tif") == b"half and the rest"
    assert sorted(b.sweep_temps()) == [f"ortho/{TMP_PREFIX}run-b.x-s1.tif"]


def test_output_folder_writability_is_checked(tmp_path: Path) -> None:
    LocalStore(str(tmp_path / "new" / "out")).check_writable()
    assert (tmp_path / "new" / "out").is_dir() and not list((tmp_path / "new" / "out").iterdir())
    afile = tmp_path / "file"
    afile.write_bytes(b"")
    with pytest.raises(StoreError, match="existing file; expected a folder"):
        LocalStore(str(afile)).check_writable()
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        if os.access(ro, os.W_OK):
            print("running as root: a read-only folder is writable, that case is not checked")
        else:
            with pytest.raises(StoreError, match="not writable"):
                LocalStore(str(ro)).check_writable()
    finally:
        ro.chmod(0o700)


def test_conditional_writes_let_one_of_two_writers_win(tmp_path: Path) -> None:
    store = LocalStore(str(tmp_path))
    v1 = store.put_if("_leases/k.json", b"first", None)
    assert v1 is not None and store.put_if("_leases/k.json", b"second", None) is None
    assert store.put_if("_leases/k.json", b"third", "stale-version") is None
    v3 = store.put_if("_leases/k.json", b"third", v1)
    assert v3 is not None and store.read_versioned("_leases/k.json") == (b"third", v3)
    assert store.list_keys() == ["_leases/k.json"]  # the lock file is not a key


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


def test_scratch_cogs_of_lost_workers_are_swept_once_stale(tmp_path: Path) -> None:
    from scheduler.products.kernels import sweep_stale_scratch

    dead, live, mine = (tmp_path / f"eochain-worker-{n}" for n in ("dead", "live", "mine"))
    for folder in (dead, live, mine):
        folder.mkdir()
    (dead / "run-1.a.tif").write_bytes(b"half a COG")
    old = time.time() - STALE_TEMP_S - 60
    os.utime(dead / "run-1.a.tif", (old, old))
    (live / "run-2.b.tif").write_bytes(b"being assembled")
    assert sweep_stale_scratch(mine) == [dead / "run-1.a.tif"]
    assert (live / "run-2.b.tif").exists() and not (dead / "run-1.a.tif").exists()


def test_a_workers_cog_write_encodes_on_its_own_cpus(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """An actor's write task encodes on the actor's CPUs (its context's threads), a file
    written outside an actor on every core of the process."""
    import numpy as np

    from ops.raster.raster_io import CogWriter
    from planner.geometry.grid import Window
    from scheduler.products import kernels
    from scheduler.runtime.actors import TaskContext

    pools: list[int] = []

    class Counted(CogWriter):
        def __enter__(self) -> Self:
            pools.append(self.workers)
            return super().__enter__()

    monkeypatch.setattr(kernels, "CogWriter", Counted)
    geobox = GeoBox("EPSG:32631", (0.5, 0.0, 500000.0, 0.0, -0.5, 4800000.0), 64, 64)
    task = kernels.WriteCogTask(LocalStore(str(tmp_path / "out")), "p.tif", "key", "ortho",
                                "s0", geobox, (Window(0, 0, 64, 64),), 1, "uint16", 0)
    tile = np.ones((1, 64, 64), np.uint16)
    (tmp_path / "scratch").mkdir()
    record = task(TaskContext(scratch_dir=str(tmp_path / "scratch"), threads=1), tile)
    task.write_file(tmp_path / "alone.tif", [tile])
    assert pools == [1, len(os.sched_getaffinity(0))]
    assert record.nbytes == (tmp_path / "out" / "p.tif").stat().st_size
