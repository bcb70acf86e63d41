"""EC2 and S3 adapters against moto's server over real HTTP (never patched boto3).

The fixture starts ``moto_server`` from the virtualenv on a free 127.0.0.1
port, or uses ``$EOCHAIN_MOTO_ENDPOINT`` when a test command already runs one.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
import time
from pathlib import Path

import boto3
import pytest

from scheduler.cloud.ec2 import Ec2InstanceProvider, check_offered
from scheduler.cloud.errors import CloudApiError, ClusterConfigError
from scheduler.cloud.s3 import LocalObjectStore, ObjectStore, S3ObjectStore

pytestmark = pytest.mark.integration

MOTO = Path(sys.executable).with_name("moto_server")
REGION = "eu-west-3"
SECRET = "eochain-test-secret-must-not-leak"  # a dummy credential for the local server only


@pytest.fixture
def session() -> boto3.session.Session:
    return boto3.session.Session(aws_access_key_id="AKIAEOCHAINTEST00000",
                                 aws_secret_access_key=SECRET, region_name=REGION)


@pytest.fixture
def ec2(moto_endpoint: str, session: boto3.session.Session) -> Ec2InstanceProvider:
    return Ec2InstanceProvider(REGION, session=session, endpoint_url=moto_endpoint)


def _image_id(session: boto3.session.Session, endpoint: str) -> str:
    images = session.client("ec2", endpoint_url=endpoint).describe_images(Owners=["amazon"])
    return str(images["Images"][0]["ImageId"])


def test_offered_instance_types(ec2: Ec2InstanceProvider) -> None:
    offered = ec2.offered_instance_types(["c7g.xlarge", "m7i.2xlarge", "c7g.xlargee"])
    assert offered == {"c7g.xlarge", "m7i.2xlarge"}
    check_offered(ec2, ["c7g.xlarge"], REGION)
    with pytest.raises(ClusterConfigError,
                       match=r"not offered in eu-west-3: 'c7g.xlargee' \(did you mean 'c7g.xlarge'"):
        check_offered(ec2, ["c7g.xlarge", "c7g.xlargee"], REGION)


def test_cluster_config_checks_offerings_against_ec2(moto_endpoint: str,
                                                     tmp_path: Path) -> None:
    from click.testing import CliRunner

    from scheduler.cmd_cluster import cluster_config

    outputs = {k: {"value": v} for k, v in {
        "region": REGION, "cluster_name": "eochain-test", "private_subnet_ids": ["subnet-a"],
        "security_group_id": "sg-1", "head_instance_profile_arn": "arn:head",
        "worker_instance_profile_arn": "arn:worker", "head_launch_template_id": "lt-h",
        "worker_launch_template_ids": {"arm64": "lt-w"}, "bucket_name": "b"}.items()}
    (tmp_path / "tf.json").write_text(json.dumps(outputs))
    (tmp_path / "plan.json").write_text(json.dumps({"format": "eochain-plan/1", "fleet": [
        {"instance_type": "c7g.xlarge", "region": REGION, "market": "spot", "instances": 2}]}))
    env = {"AWS_ENDPOINT_URL": moto_endpoint, "AWS_ACCESS_KEY_ID": "AKIAEOCHAINTEST00000",
           "AWS_SECRET_ACCESS_KEY": SECRET}
    wheel = tmp_path / "eochain-0.1.0-py3-none-any.whl"
    wheel.write_bytes(b"PK\x05\x06" + bytes(18))  # rendering copies the wheel, never opens it
    args = [str(tmp_path / "plan.json"), "--terraform-outputs", str(tmp_path / "tf.json"),
            "--check-offerings", "--wheel", str(wheel), "--bundle-dir", str(tmp_path / "dist")]
    result = CliRunner(env=env).invoke(cluster_config, args)
    assert result.exit_code == 0, result.output
    assert "c7g.xlarge-spot" in result.output and SECRET not in result.output


def test_spot_price_history(ec2: Ec2InstanceProvider) -> None:
    since = dt.datetime.now(dt.UTC) - dt.timedelta(days=1)
    prices = ec2.spot_price_history(["c7g.xlarge"], since)
    assert prices and {p.instance_type for p in prices} == {"c7g.xlarge"}
    assert all(p.price_usd_per_h > 0 and p.availability_zone.startswith(REGION) for p in prices)


def test_spot_requests_and_status(ec2: Ec2InstanceProvider, session: boto3.session.Session,
                                  moto_endpoint: str) -> None:
    image = _image_id(session, moto_endpoint)
    ids = ec2.request_spot_instances("c7g.xlarge", 2, image_id=image,
                                     tags={"ray-cluster-name": "eochain-test"})
    assert len(ids) == 2
    requests = ec2.spot_requests(ids)
    assert {r.request_id for r in requests} == set(ids)
    assert all(r.state in ("open", "active") and not r.interrupted for r in requests)
    with pytest.raises(ClusterConfigError, match="count 0"):
        ec2.request_spot_instances("c7g.xlarge", 0, image_id=image)


def test_cluster_instances_are_found_by_tag_and_terminated(
        ec2: Ec2InstanceProvider, session: boto3.session.Session, moto_endpoint: str) -> None:
    image = _image_id(session, moto_endpoint)
    mine = ec2.run_instances("c7g.xlarge", 2, image_id=image, cluster_name="eochain-a",
                             spot=True)
    other = ec2.run_instances("c7g.xlarge", 1, image_id=image, cluster_name="eochain-b")
    found = {i.instance_id: i for i in ec2.cluster_instances("eochain-a")}
    assert set(found) == set(mine) and not set(other) & set(found)
    assert all(i.tags["ray-cluster-name"] == "eochain-a" for i in found.values())
    assert all(i.market == "spot" for i in found.values())
    ec2.terminate(mine)
    states = {i.state for i in ec2.cluster_instances("eochain-a")}
    assert states <= {"shutting-down", "terminated"}


def test_api_errors_name_the_call_and_hide_credentials(ec2: Ec2InstanceProvider) -> None:
    with pytest.raises(CloudApiError, match="terminate_instances.*i-0000000000000dead") as info:
        ec2.terminate(["i-0000000000000dead"])
    assert SECRET not in str(info.value)


def _secure_bucket(session: boto3.session.Session, endpoint: str, name: str, *,
                   tls_only: bool = True) -> None:
    s3 = session.client("s3", endpoint_url=endpoint)
    s3.create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": REGION})
    s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
    s3.put_bucket_encryption(Bucket=name, ServerSideEncryptionConfiguration={"Rules": [
        {"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "aws:kms"}}]})
    s3.put_public_access_block(Bucket=name, PublicAccessBlockConfiguration={
        "BlockPublicAcls": True, "IgnorePublicAcls": True, "BlockPublicPolicy": True,
        "RestrictPublicBuckets": True})
    if not tls_only:
        return
    s3.put_bucket_policy(Bucket=name, Policy=json.dumps({"Version": "2012-10-17", "Statement": [{
        "Sid": "DenyInsecureTransport", "Effect": "Deny", "Principal": "*", "Action": "s3:*",
        "Resource": [f"arn:aws:s3:::{name}", f"arn:aws:s3:::{name}/*"],
        "Condition": {"Bool": {"aws:SecureTransport": "false"}}}]}))


def test_bucket_security_preflight(session: boto3.session.Session, moto_endpoint: str) -> None:
    _secure_bucket(session, moto_endpoint, "eochain-secure")
    good = S3ObjectStore("eochain-secure", session=session, endpoint_url=moto_endpoint,
                         region=REGION).bucket_security()
    assert good.problems == [] and good.encryption == "aws:kms"
    # the server enforces the policy: this test talks plain HTTP to it
    with pytest.raises(CloudApiError, match="Forbidden"):
        S3ObjectStore("eochain-secure", session=session, endpoint_url=moto_endpoint,
                      region=REGION).put_bytes("x", b"x")
    session.client("s3", endpoint_url=moto_endpoint).create_bucket(
        Bucket="eochain-bare", CreateBucketConfiguration={"LocationConstraint": REGION})
    bare = S3ObjectStore("eochain-bare", session=session, endpoint_url=moto_endpoint,
                         region=REGION).bucket_security()
    assert not bare.versioned and not bare.public_access_blocked and not bare.tls_only
    assert "versioning is not enabled" in bare.problems


@pytest.fixture(params=["s3", "local"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ObjectStore:
    if request.param == "local":
        return LocalObjectStore(tmp_path / "store")
    session = request.getfixturevalue("session")
    endpoint = request.getfixturevalue("moto_endpoint")
    name = f"eochain-store-{time.monotonic_ns()}"
    _secure_bucket(session, endpoint, name, tls_only=False)  # the test server speaks HTTP
    return S3ObjectStore(name, "run1/", session=session, endpoint_url=endpoint, region=REGION)


def test_object_store_round_trip(store: ObjectStore) -> None:
    data = bytes(range(256)) * 4
    store.put_bytes("tiles/a.tif", data)
    store.put_bytes("tiles/b.tif", b"b")
    store.put_bytes("other/c.json", b"{}")
    assert store.get_bytes("tiles/a.tif") == data
    assert store.get_bytes("tiles/a.tif", 10, 20) == data[10:20]
    assert store.get_bytes("tiles/a.tif", 1000) == data[1000:]
    assert sorted(store.list_keys("tiles/")) == ["tiles/a.tif", "tiles/b.tif"]
    assert store.exists("tiles/b.tif")
    store.delete("tiles/b.tif")
    assert not store.exists("tiles/b.tif")
    with pytest.raises(CloudApiError, match="tiles/missing.tif"):
        store.get_bytes("tiles/missing.tif")


def test_local_store_refuses_keys_outside_its_root(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path / "store")
    with pytest.raises(CloudApiError, match="escapes the store root"):
        store.put_bytes("../outside.tif", b"x")
    assert not (tmp_path / "outside.tif").exists()
