"""Two drivers on one output: each product is computed once, both runs succeed.

Two ``python`` processes run the same flow (four synthetic scenes, in-process
executor) on the same destination at the same time, a local folder and then
an ``s3://`` prefix on moto's S3 server. They coordinate through product
leases (:mod:`scheduler.products.lease`; S3 conditional writes). Every
product is written by exactly one of them; the other reports it as computed
by another run (or already done). Afterwards the output holds one manifest
record per product, no lease and no temporary.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from scheduler.products.lease import LEASE_DIR
from scheduler.products.manifest import MANIFEST_DIR
from scheduler.products.store import S3_TMP_DIR, S3Store, open_store

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
BUCKET = "eochain-two-drivers"
PRODUCTS = [f"ortho/{s}.tif" for s in ("a0", "a1", "b0", "b1")]

SCRIPT = """
import json, sys
from scheduler.products.flow import SceneInput
from scheduler.products.driver import Driver
scenes, dem, out = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3]
report = (Driver(address="serial", lease_poll_s=0.2)
          .get_flow([SceneInput(i, u) for i, u in scenes]).ortho(dem=dem, tile_px=64)
          .write(out).run())
print(json.dumps({"written": [r.object_key for r in report.written],
                  "by_other": list(report.by_other_run), "skipped": list(report.skipped),
                  "failures": [f.error for f in report.failures]}))
"""


@pytest.fixture(scope="module")
def scenes(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[list[str]], str]:
    from ops.synthetic.scene import SceneSpec, generate_scene

    root = tmp_path_factory.mktemp("scenes")
    a = generate_scene(SceneSpec(width=256, height=256, seed=1), root / "a")
    b = generate_scene(SceneSpec(width=256, height=256, seed=2), root / "b")
    inputs = [[f"{name}{k}", str(s.out_dir / f"view_{k}.tif")]
              for name, s in (("a", a), ("b", b)) for k in (0, 1)]
    return inputs, str(a.out_dir / "dem.tif")


def _two_drivers(scenes: tuple[list[list[str]], str], dest: str,
                 env: dict[str, str]) -> list[dict[str, Any]]:
    inputs, dem = scenes
    procs = [subprocess.Popen([sys.executable, "-c", SCRIPT, json.dumps(inputs), dem, dest],
                              cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(2)]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-3000:]
        results.append(json.loads(out.strip().splitlines()[-1]))
    return results


def _check_each_product_computed_once(results: list[dict[str, Any]]) -> None:
    for r in results:
        assert not r["failures"], r
        assert sorted(r["written"] + r["skipped"]) == PRODUCTS, r
    written = [k for r in results for k in r["written"]]
    assert sorted(written) == PRODUCTS, results  # each product by exactly one driver


def test_two_drivers_on_one_local_folder(scenes: tuple[list[list[str]], str],
                                         tmp_path: Path) -> None:
    out = tmp_path / "out"
    results = _two_drivers(scenes, str(out), dict(os.environ))
    _check_each_product_computed_once(results)
    store = open_store(str(out))
    assert len(store.list_keys(MANIFEST_DIR + "/")) == len(PRODUCTS)
    assert not store.list_keys(LEASE_DIR + "/")
    assert not [p for p in out.rglob("*") if p.name.startswith(".eochain-tmp-")]


def test_two_drivers_on_one_s3_prefix(scenes: tuple[list[list[str]], str],
                                      moto_endpoint: str) -> None:
    port = int(moto_endpoint.rsplit(":", 1)[1])
    env = dict(os.environ, AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing",
               AWS_DEFAULT_REGION="us-east-1", AWS_ENDPOINT_URL=moto_endpoint,
               AWS_HTTPS="NO", AWS_VIRTUAL_HOSTING="FALSE", AWS_S3_ENDPOINT=f"127.0.0.1:{port}")
    env.pop("AWS_PROFILE", None)
    store = S3Store(BUCKET, "campaign", endpoint_url=moto_endpoint, region="us-east-1")
    with pytest.MonkeyPatch.context() as mp:
        for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            mp.setenv(key, "testing")
        store.client.create_bucket(Bucket=BUCKET)
        results = _two_drivers(scenes, f"s3://{BUCKET}/campaign", env)
        _check_each_product_computed_once(results)
        assert len(store.list_keys(MANIFEST_DIR + "/")) == len(PRODUCTS)
        assert not store.list_keys(LEASE_DIR + "/")
        everything = store.client.list_objects_v2(Bucket=BUCKET).get("Contents", [])
        assert not [o["Key"] for o in everything if S3_TMP_DIR in o["Key"]]


def test_s3_conditional_writes_let_one_writer_win(moto_endpoint: str) -> None:
    """The primitive under the leases, on moto's S3: If-None-Match and If-Match."""
    store = S3Store(BUCKET + "-cas", "", endpoint_url=moto_endpoint, region="us-east-1")
    with pytest.MonkeyPatch.context() as mp:
        for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            mp.setenv(key, "testing")
        store.client.create_bucket(Bucket=store.bucket)
        v1 = store.put_if("k", b"first", None)
        assert v1 is not None and store.put_if("k", b"second", None) is None
        assert store.put_if("k", b"third", '"0123"') is None
        v3 = store.put_if("k", b"third", v1)
        assert v3 is not None and store.read_versioned("k") == (b"third", v3)
