"""The EC2 adapter against moto's server over real HTTP (never patched boto3).

The fixture starts ``moto_server`` from the virtualenv on a free 127.0.0.1
port, or uses ``$EOCHAIN_MOTO_ENDPOINT`` when a test command already runs one.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import boto3
import pytest

from scheduler.cloud.ec2 import Ec2InstanceProvider, check_offered
from scheduler.cloud.errors import CloudApiError, ClusterConfigError

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

    from scheduler.cli.cluster import cluster_config

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


def test_api_errors_name_the_call_and_hide_credentials(session: boto3.session.Session) -> None:
    """An unreachable endpoint: the error names the call and the region, never a credential."""
    import socket

    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    dead = Ec2InstanceProvider("eu-west-3", session=session,
                               endpoint_url=f"http://127.0.0.1:{port}")
    dead._ec2.meta.config.retries = {"max_attempts": 1}
    with pytest.raises(CloudApiError,
                       match="describe_instance_type_offerings in eu-west-3") as info:
        dead.offered_instance_types(["c7g.xlarge"])
    assert SECRET not in str(info.value)
