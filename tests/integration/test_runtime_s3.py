"""The S3 side of the runtime against moto's S3 server over real HTTP.

* :class:`S3Store` publishes through a temporary key and a server-side copy,
  leaves no temporary object, and sweeps the ones a killed writer left.
* A product over one part goes up and is copied in the store's parts, as many
  as the planner's request model prices.
* A flow writes its COGs, STAC items and manifest to ``s3://``; the bytes
  equal those of a local run; a rerun recomputes nothing.
* Reading inputs from ``s3://``: an ortho tile reads only the window it
  declared. GDAL (``/vsis3/``) goes through a small counting proxy in front
  of the server, which sums the body bytes of every GET: per tile, the
  bytes fetched stay within 2x of the window's share of the file.
"""

from __future__ import annotations

import http.client
import os
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from planner.catalog import load_catalog
from planner.overheads import publish_puts
from scheduler.products.driver import Driver
from scheduler.products.flow import SceneInput
from scheduler.products.store import S3_PART_BYTES, S3_TMP_DIR, S3Store, open_store
from tests.conftest import aws_environment

pytestmark = [pytest.mark.integration, pytest.mark.slow]

BUCKET = "eochain-products"


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


def test_s3_store_commits_atomically_and_sweeps(s3_endpoint: str, tmp_path: Path) -> None:
    store = open_store(f"s3://{BUCKET}/unit")
    assert isinstance(store, S3Store)
    src = tmp_path / "a.bin"
    src.write_bytes(os.urandom(200_000))
    store.put_file("ortho/a.tif", src)
    store.put_bytes("ortho/a.json", b"{}")
    assert store.get_bytes("ortho/a.tif") == src.read_bytes()
    assert store.list_keys() == ["ortho/a.json", "ortho/a.tif"]
    assert store.exists("ortho/a.tif") and not store.exists("ortho/b.tif")
    assert not [k for k in _all_keys(store) if S3_TMP_DIR in k]
    # a writer killed after its upload, before the copy: only a temporary object remains; this
    # run's own is swept at once, another run's only once older than STALE_TEMP_S (it may be
    # publishing right now)
    own = f"unit/{S3_TMP_DIR}/{store.run_id}/x/ortho/c.tif"
    other = f"unit/{S3_TMP_DIR}/other-run/y/ortho/b.tif"
    for key in (own, other):
        store.client.put_object(Bucket=BUCKET, Key=key, Body=b"x")
    assert store.list_keys() == ["ortho/a.json", "ortho/a.tif"]
    assert store.sweep_temps() == [own]
    assert [k for k in _all_keys(store) if S3_TMP_DIR in k] == [other]
    assert store.sweep_temps(dead_runs=frozenset({"other-run"})) == [other]  # its driver died
    assert not [k for k in _all_keys(store) if S3_TMP_DIR in k]
    store.check_writable()
    assert not [k for k in _all_keys(store) if S3_TMP_DIR in k]


def test_s3_temporaries_of_a_live_run_survive_another_runs_sweep(s3_endpoint: str) -> None:
    a = open_store(f"s3://{BUCKET}/shared")
    b = open_store(f"s3://{BUCKET}/shared")
    assert isinstance(a, S3Store) and isinstance(b, S3Store) and a.run_id != b.run_id
    swept: list[list[str]] = []
    real_copy = b.client.copy

    def copy_after_a_sweeps(*args: object, **kwargs: object) -> object:
        swept.append(a.sweep_temps())  # run a ends while b's object waits for its copy
        return real_copy(*args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(b.client, "copy", copy_after_a_sweeps)
        b.put_bytes("ortho/s.tif", b"b's product")
    assert swept == [[]] and b.get_bytes("ortho/s.tif") == b"b's product"


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
    remote = flow(f"s3://{BUCKET}/campaign").run()
    assert local.ok and remote.ok
    store = open_store(f"s3://{BUCKET}/campaign")
    assert isinstance(store, S3Store)
    keys = store.list_keys()
    assert "ortho/v0.tif" in keys and "ortho/v0.json" in keys
    assert len([k for k in keys if k.startswith("_manifest/")]) == 1
    assert not [k for k in _all_keys(store) if S3_TMP_DIR in k]
    assert store.get_bytes("ortho/v0.tif") == (tmp_path / "local/ortho/v0.tif").read_bytes()
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
    assert store.get_bytes("ortho/v1.tif") == (tmp_path / "ortho/v1.tif").read_bytes()


def test_s3_store_parts_are_what_the_planner_prices(s3_endpoint: str, tmp_path: Path) -> None:
    """A product one byte over a part goes up (and is copied) in two parts, and the planner's
    request model, with the shipped catalog, counts the PUTs that took."""
    store = open_store(f"s3://{BUCKET}/parts")
    assert isinstance(store, S3Store)
    src = tmp_path / "big.tif"
    nbytes = S3_PART_BYTES + 1
    with open(src, "wb") as f:
        f.truncate(nbytes)
    store.put_file("dsm/big.tif", src)
    head = store.client.head_object(Bucket=BUCKET, Key="parts/dsm/big.tif")
    assert head["ContentLength"] == nbytes
    parts = int(head["ETag"].strip('"').rsplit("-", 1)[1])  # a multipart object's ETag: md5-N
    assert parts == 2
    overheads = load_catalog().overheads
    # one upload: create, the parts, complete; the copy the same (transfers_per_publish)
    assert publish_puts(nbytes, overheads.multipart_part_bytes) == parts + 2
    assert overheads.transfers_per_publish == 2
