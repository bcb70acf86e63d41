"""The S3 side of the runtime against moto's S3 server over real HTTP.

* :class:`S3Store` uploads straight to the key, leaves no temporary object,
  and aborts the incomplete upload a killed writer left once it is stale.
* A product over one part goes up in the store's parts, as many as the
  planner's request model prices.
* A flow writes its COGs, STAC items and manifest to ``s3://``; the bytes
  equal those of a local run, and the requests a product took are those the
  planner prices; a rerun recomputes nothing.
* Reading inputs from ``s3://``: an ortho tile reads only the window it
  declared. GDAL (``/vsis3/``) goes through a small counting proxy in front
  of the server, which sums the body bytes of every GET: per tile, the
  bytes fetched stay within 2x of the window's share of the file.
"""

from __future__ import annotations

import datetime as dt
import http.client
import os
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from planner.catalog import load_catalog
from planner.overheads import DagTraffic, publish_puts, store_requests
from scheduler.products.driver import Driver
from scheduler.products.flow import SceneInput
from scheduler.products.store import (
    S3_PART_BYTES,
    S3_TMP_DIR,
    STALE_TEMP_S,
    S3Store,
    open_store,
    stale_uploads,
)
from tests.cog_compare import assert_same_cog
from tests.conftest import aws_environment

pytestmark = [pytest.mark.integration, pytest.mark.slow]

BUCKET = "eochain-products"
#: S3's PUT-class requests (LIST too, but a product lists nothing); DELETE is free
PUT_CLASS = ("PutObject", "CreateMultipartUpload", "UploadPart", "CompleteMultipartUpload",
             "CopyObject", "UploadPartCopy")


@pytest.fixture(scope="module")
def s3_endpoint(moto_endpoint: str) -> Iterator[str]:
    """moto's S3 server on a free loopback port, with the AWS variables pointing at it."""
    with aws_environment(moto_endpoint):
        store = open_store(f"s3://{BUCKET}")
        assert isinstance(store, S3Store)
        store.client.create_bucket(Bucket=BUCKET)
        yield moto_endpoint


def _all_keys(store: S3Store) -> list[str]:
    pages = store.client.get_paginator("list_objects_v2").paginate(Bucket=store.bucket)
    return sorted(o["Key"] for page in pages for o in page.get("Contents", []))


def _uploads(store: S3Store) -> list[str]:
    return [u["Key"] for u in store.client.list_multipart_uploads(Bucket=BUCKET).get(
        "Uploads", [])]


def test_s3_store_publishes_whole_objects_and_sweeps_killed_uploads(
        s3_endpoint: str, tmp_path: Path) -> None:
    store = open_store(f"s3://{BUCKET}/unit")
    assert isinstance(store, S3Store)
    src = tmp_path / "a.bin"
    src.write_bytes(os.urandom(200_000))
    store.put_file("ortho/a.tif", src)
    store.put_bytes("ortho/a.json", b"{}")
    assert store.get_bytes("ortho/a.tif") == src.read_bytes()
    assert store.list_keys() == ["ortho/a.json", "ortho/a.tif"]
    assert store.exists("ortho/a.tif") and not store.exists("ortho/b.tif")
    assert not [k for k in _all_keys(store) if S3_TMP_DIR in k] and not _uploads(store)
    # move_file consumes its file
    store.move_file("ortho/m.tif", src)
    assert not src.exists() and store.exists("ortho/m.tif")
    # a writer killed mid-upload: an incomplete multipart upload, invisible, aborted by the
    # sweep once older than STALE_TEMP_S (moto dates every upload 2010-11-10: old)
    started = store.client.create_multipart_upload(Bucket=BUCKET, Key="unit/ortho/c.tif")
    store.client.upload_part(Bucket=BUCKET, Key="unit/ortho/c.tif", PartNumber=1,
                             UploadId=started["UploadId"], Body=b"x" * 1000)
    assert store.list_keys() == ["ortho/a.json", "ortho/a.tif", "ortho/m.tif"]
    assert _uploads(store) == ["unit/ortho/c.tif"]
    assert store.sweep_temps() == ["unit/ortho/c.tif"] and not _uploads(store)
    # a younger upload may be a live writer's: left alone
    now = dt.datetime.now(dt.UTC)
    young, old = {"Initiated": now}, {"Initiated": now - dt.timedelta(seconds=STALE_TEMP_S + 1)}
    assert stale_uploads([young, old], now - dt.timedelta(seconds=STALE_TEMP_S)) == [old]
    # check_writable's probe: a temporary object of the run, deleted; one a killed probe
    # left is swept at once when the run's own, else once its run is dead
    store.check_writable()
    other = f"unit/{S3_TMP_DIR}/other-run/probe"
    store.client.put_object(Bucket=BUCKET, Key=other, Body=b"")
    assert store.sweep_temps() == []
    assert store.sweep_temps(dead_runs=frozenset({"other-run"})) == [other]  # its driver died
    assert not [k for k in _all_keys(store) if S3_TMP_DIR in k]


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    from ops.synthetic.scene import SceneSpec, generate_scene

    return generate_scene(SceneSpec(width=1536, height=1536, seed=5),
                          tmp_path_factory.mktemp("scene"))


def test_flow_writes_products_to_s3_like_a_local_run(s3_endpoint: str, scene,  # type: ignore[no-untyped-def]
                                                     tmp_path: Path) -> None:
    import rasterio

    inputs = [SceneInput("v0", str(scene.out_dir / "view_0.tif"))]
    dem = str(scene.out_dir / "dem.tif")

    def flow(dest: str):  # type: ignore[no-untyped-def]
        return Driver(address="serial").get_flow(inputs).ortho(dem=dem, tile_px=512).write(dest)

    local = flow(str(tmp_path / "local")).run()
    store = open_store(f"s3://{BUCKET}/campaign")
    assert isinstance(store, S3Store)
    calls: list[tuple[str, str]] = []

    def count(event_name: str, params: dict[str, object], **kwargs: object) -> None:
        calls.append((event_name.rsplit(".", 1)[1], str(params.get("Key", ""))))

    # the serial run's store shares this process's client
    store.client.meta.events.register("before-parameter-build.s3", count)
    try:
        remote = flow(f"s3://{BUCKET}/campaign").run()
    finally:
        store.client.meta.events.unregister("before-parameter-build.s3", count)
    assert local.ok and remote.ok
    # the product's requests (its COG, STAC item, manifest record and lease; not the
    # campaign's listings, probe, heartbeat and collection) are those the planner prices
    (record,) = store.list_keys("_manifest/")
    product_key = record.rsplit("/", 1)[1].removesuffix(".json")
    mine = [op for op, key in calls
            if product_key in key or key.endswith(("/ortho/v0.tif", "/ortho/v0.json"))]
    nbytes = len(store.get_bytes("ortho/v0.tif"))
    priced = store_requests(load_catalog().overheads,
                            DagTraffic(0.0, nbytes, tasks=1, output_tasks=1,
                                       published_bytes=(nbytes,)))
    assert sum(op in PUT_CLASS for op in mine) == priced.puts, mine
    assert sum(op in ("GetObject", "HeadObject") for op in mine) == priced.product_gets, mine
    keys = store.list_keys()
    assert "ortho/v0.tif" in keys and "ortho/v0.json" in keys
    assert len([k for k in keys if k.startswith("_manifest/")]) == 1
    assert not [k for k in _all_keys(store) if S3_TMP_DIR in k]
    assert_same_cog(store.get_bytes("ortho/v0.tif"), tmp_path / "local/ortho/v0.tif")
    with rasterio.open(store.gdal_path("ortho/v0.tif")) as src:
        assert src.crs.to_string().startswith("EPSG:326") and src.count == 1
    again = flow(f"s3://{BUCKET}/campaign").run()
    assert again.skipped == ("ortho/v0.tif",) and not again.written


class _Counter:
    def __init__(self) -> None:
        self.get_bytes = 0
        self.lock = threading.Lock()


def _proxy(target_port: int, counter: _Counter) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def _forward(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else None
            conn = http.client.HTTPConnection("127.0.0.1", target_port, timeout=30)
            headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
            headers["Host"] = f"127.0.0.1:{target_port}"
            conn.request(self.command, self.path, body=body, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
            if self.command == "GET":
                with counter.lock:
                    counter.get_bytes += len(data)
            self.send_response(resp.status)
            for k, v in resp.getheaders():
                if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                    self.send_header(k, v)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)
            conn.close()

        do_GET = do_HEAD = do_PUT = do_POST = _forward

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def test_s3_input_tiles_fetch_about_their_declared_window(s3_endpoint: str, scene,  # type: ignore[no-untyped-def]
                                                          tmp_path: Path) -> None:
    import rasterio
    import rasterio.shutil

    from ops.raster.raster_io import raster_info
    from ops.sensor.rpc_io import find_rpc
    from scheduler.products.kernels import OrthoPlanTask, OrthoTileTask
    from scheduler.products.product import OrthoStep, plan_ortho_product
    from scheduler.runtime.actors import TaskContext

    # the raw image as a tiled GeoTIFF with small blocks, uploaded to S3
    tiled = tmp_path / "view_0.tif"
    rasterio.shutil.copy(scene.out_dir / "view_0.tif", tiled, driver="GTiff", TILED="YES",
                         BLOCKXSIZE=64, BLOCKYSIZE=64)
    assert find_rpc(tiled) is not None
    store = open_store(f"s3://{BUCKET}")
    assert isinstance(store, S3Store)
    store.client.upload_file(str(tiled), BUCKET, "raw/view_0.tif")
    file_bytes = tiled.stat().st_size
    height, width = raster_info(tiled).shape

    product = plan_ortho_product(SceneInput("v0", str(tiled)),
                          OrthoStep(str(scene.out_dir / "dem.tif"), tile_px=512),
                          open_store(str(tmp_path / "out")))
    plan_task = product.tasks[0].fn
    assert isinstance(plan_task, OrthoPlanTask)
    plan = plan_task(TaskContext())
    counter = _Counter()
    server = _proxy(int(s3_endpoint.rsplit(":", 1)[1]), counter)
    from ops.ortho.orthorectify import declare_tile_input

    ratios = []
    try:
        env = {"AWS_S3_ENDPOINT": f"127.0.0.1:{server.server_address[1]}",
               "CPL_VSIL_CURL_NON_CACHED": f"/vsis3/{BUCKET}/raw",
               "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR", "VSI_CACHE": "FALSE"}
        # environment variables, not rasterio.Env: GDAL reads both, and an Env's options can
        # outlive it in GDAL's global config when Envs nest (the reads below open their own)
        with pytest.MonkeyPatch.context() as mp:
            for key, value in env.items():
                mp.setenv(key, value)
            for task in product.tasks[1:-1]:
                tile = task.fn
                assert isinstance(tile, OrthoTileTask)
                declared = declare_tile_input(plan, tile.window)
                if declared is None or declared.size < 384 * 384:
                    continue  # edge tiles: a sliver of a block
                before = counter.get_bytes
                OrthoTileTask(f"/vsis3/{BUCKET}/raw/view_0.tif", tile.window)(
                    TaskContext(), plan)
                share = declared.size / (height * width) * file_bytes
                ratios.append((counter.get_bytes - before) / share)
    finally:
        server.shutdown()
        server.server_close()
    assert len(ratios) >= 4
    assert max(ratios) <= 2.0, f"bytes fetched / window share per tile: {ratios}"
    # the same image as an s3:// scene of a flow: read through /vsis3/, same product bytes
    dem = str(scene.out_dir / "dem.tif")
    remote = Driver(address="serial").get_flow(
        [SceneInput("v0", f"s3://{BUCKET}/raw/view_0.tif")]
    ).ortho(dem=dem, tile_px=512).write(tmp_path / "from_s3").run()
    local = Driver(address="serial").get_flow([SceneInput("v0", str(tiled))]).ortho(
        dem=dem, tile_px=512).write(tmp_path / "from_disk").run()
    assert remote.ok and local.ok, remote.failures
    import numpy as np

    with rasterio.open(tmp_path / "from_s3/ortho/v0.tif") as a, \
            rasterio.open(tmp_path / "from_disk/ortho/v0.tif") as b:
        # same pixels and grid; only the provenance tags naming each run's input differ
        assert np.array_equal(a.read(), b.read(), equal_nan=True)
        assert str(a.profile) == str(b.profile)  # as text: a NaN nodata equals itself
        differ = {k for k in a.tags() | b.tags() if a.tags().get(k) != b.tags().get(k)}
        assert differ == {"EOCHAIN_INPUTS", "EOCHAIN_RPC"}


def test_ray_workers_publish_to_s3(s3_endpoint: str, scene, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Actors on a local Ray (its workers inherit the S3 settings) write products to s3://."""
    import ray

    from scheduler.ray_private import use_loopback

    use_loopback()
    if ray.is_initialized():
        ray.shutdown()
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
             object_store_memory=100 * 2**20)
    try:
        inputs = [SceneInput("v1", str(scene.out_dir / "view_1.tif"))]
        report = (Driver().get_flow(inputs).ortho(dem=scene.out_dir / "dem.tif", tile_px=512)
                  .write(f"s3://{BUCKET}/on-ray").run())
    finally:
        ray.shutdown()
    assert report.ok, report.failures
    store = open_store(f"s3://{BUCKET}/on-ray")
    assert isinstance(store, S3Store)
    assert {"ortho/v1.tif", "ortho/v1.json"} <= set(store.list_keys())
    assert not [k for k in _all_keys(store) if S3_TMP_DIR in k]
    serial = (Driver(address="serial").get_flow(inputs)
              .ortho(dem=scene.out_dir / "dem.tif", tile_px=512).write(tmp_path).run())
    assert serial.ok
    assert_same_cog(store.get_bytes("ortho/v1.tif"), tmp_path / "ortho/v1.tif")


def test_s3_store_parts_are_what_the_planner_prices(s3_endpoint: str, tmp_path: Path) -> None:
    """A product one byte over a part goes up in two parts, straight to its key, and the
    planner's request model, with the shipped catalog, counts the PUTs that took."""
    store = open_store(f"s3://{BUCKET}/parts")
    assert isinstance(store, S3Store)
    src = tmp_path / "big.tif"
    nbytes = S3_PART_BYTES + 1
    with open(src, "wb") as f:
        f.truncate(nbytes)
    calls: list[str] = []

    def count(event_name: str, **kwargs: object) -> None:
        calls.append(event_name.rsplit(".", 1)[1])

    store.client.meta.events.register("before-parameter-build.s3", count)
    try:
        store.put_file("dsm/big.tif", src)
    finally:
        store.client.meta.events.unregister("before-parameter-build.s3", count)
    head = store.client.head_object(Bucket=BUCKET, Key="parts/dsm/big.tif")
    assert head["ContentLength"] == nbytes
    parts = int(head["ETag"].strip('"').rsplit("-", 1)[1])  # a multipart object's ETag: md5-N
    assert parts == 2
    # one upload: create, the parts, complete; no copy
    assert publish_puts(nbytes, load_catalog().overheads.multipart_part_bytes) == parts + 2
    assert sorted(calls) == ["CompleteMultipartUpload", "CreateMultipartUpload", "UploadPart",
                             "UploadPart"]
