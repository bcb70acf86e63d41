"""``eochain cluster-config`` output launched by Ray's own AWS node provider on moto's EC2 server.

The network, roles, images and launch templates are made on the server as
terraform/ makes them (a private subnet in each of two zones, one security group, head and worker
instance profiles, one worker launch template per architecture with the
Ubuntu root device ``/dev/sda1``); the plan mixes arm64 (c7g) spot workers
and x86_64 (m7i) on-demand workers under an x86_64 head, spread over the two
zones: each node must land in the subnet of the zone the plan gave it, the
spot fallback's node too (the runtime's choice when the spot c7g keeps
being interrupted: its node type is in the config as rendered), and the node
of a pool only a live re-plan may ask for (the plan's ``replan`` section). The rendered YAML
goes through Ray's ``bootstrap_aws`` (what ``ray up`` runs) and
``AWSNodeProvider.create_node`` over HTTP, and the launched instances are
read back with ``describe_instances``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml
from click.testing import CliRunner

from planner.catalog import load_catalog
from scheduler.cli.cluster import cluster_config
from scheduler.fleet.cluster_config import ARCHS
from scheduler.fleet.fallback import choose_fallback

pytestmark = pytest.mark.integration

REGION = "eu-west-3"
CLUSTER = "eochain-moto"


def _image(ec2: Any, arch: str) -> str:
    images = ec2.describe_images(Owners=["amazon"], Filters=[
        {"Name": "architecture", "Values": [arch]}])["Images"]
    ids = sorted(i["ImageId"] for i in images if len(i["ImageId"]) in (12, 21))
    assert ids, f"moto has no {arch} image"
    return str(ids[0])


def _terraform_like(ec2: Any, iam: Any) -> dict[str, Any]:
    """What `terraform apply` leaves, as `terraform output -json` shows it."""
    vpc = ec2.create_vpc(CidrBlock="10.42.0.0/16")["Vpc"]["VpcId"]
    subnets = [ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.42.{16 * k}.0/20",
                                 AvailabilityZone=f"{REGION}{zone}")["Subnet"]["SubnetId"]
               for k, zone in enumerate("ab")]
    sg = ec2.create_security_group(GroupName=f"{CLUSTER}-nodes", Description="nodes",
                                   VpcId=vpc)["GroupId"]
    profiles = {}
    for role in ("head", "worker"):
        name = f"{CLUSTER}-ray-{role}"
        iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps({
            "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole",
                                                   "Principal": {"Service": "ec2.amazonaws.com"}}]}))
        profile = iam.create_instance_profile(InstanceProfileName=name)["InstanceProfile"]
        iam.add_role_to_instance_profile(InstanceProfileName=name, RoleName=name)
        profiles[role] = profile["Arn"]
    amis = {arch: _image(ec2, arch) for arch in ARCHS}

    def template(name: str, ami: str, node: str) -> str:
        return str(ec2.create_launch_template(LaunchTemplateName=name, LaunchTemplateData={
            "ImageId": ami, "SecurityGroupIds": [sg],
            "BlockDeviceMappings": [{"DeviceName": "/dev/sda1", "Ebs": {
                "VolumeSize": 100, "VolumeType": "gp3", "Encrypted": True}}],
            "TagSpecifications": [{"ResourceType": "instance", "Tags": [
                {"Key": "ray-cluster-name", "Value": CLUSTER}, {"Key": "eochain:node",
                                                               "Value": node}]}],
        })["LaunchTemplate"]["LaunchTemplateId"])

    outputs = {
        "region": REGION, "cluster_name": CLUSTER, "vpc_id": vpc, "private_subnet_ids": subnets,
        "security_group_id": sg, "head_instance_profile_arn": profiles["head"],
        "worker_instance_profile_arn": profiles["worker"],
        "head_launch_template_id": template(f"{CLUSTER}-head", amis["x86_64"], "head"),
        "worker_launch_template_ids": {
            arch: template(f"{CLUSTER}-worker-{arch}", amis[arch], "worker") for arch in ARCHS},
        "bucket_name": f"{CLUSTER}-products", "ami_ids": amis,
    }
    return {k: {"sensitive": False, "value": v} for k, v in outputs.items()}


def test_rendered_config_launches_head_and_workers(moto_endpoint: str, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from ray.autoscaler._private.aws.config import bootstrap_aws
    from ray.autoscaler._private.aws.node_provider import AWSNodeProvider
    from ray.autoscaler.tags import TAG_RAY_NODE_KIND, TAG_RAY_NODE_NAME, TAG_RAY_USER_NODE_TYPE

    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAEOCHAINTEST00000")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "moto-test-secret")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("HOME", str(tmp_path))  # Ray writes the cluster's SSH key under ~/.ssh
    ec2 = boto3.client("ec2", region_name=REGION)
    tf = _terraform_like(ec2, boto3.client("iam", region_name=REGION))
    (tmp_path / "tf.json").write_text(json.dumps(tf))
    (tmp_path / "plan.json").write_text(json.dumps({"format": "eochain-plan/1", "zones": 2, "fleet": [
        {"instance_type": "c7g.xlarge", "region": REGION, "market": "spot", "instances": 2},
        {"instance_type": "m7i.xlarge", "region": REGION, "market": "on-demand", "instances": 1},
    ], "replan": {"pools": [{"instance_type": "r7g.2xlarge", "market": "on-demand",
                             "max_instances": 2}], "max_instances": 3}}))
    wheel = tmp_path / "eochain-0.1.0-py3-none-any.whl"
    wheel.write_bytes(b"PK\x05\x06" + bytes(18))  # an empty zip: launching does not open it
    result = CliRunner().invoke(cluster_config, [
        str(tmp_path / "plan.json"), "--terraform-outputs", str(tmp_path / "tf.json"),
        "--wheel", str(wheel), "-o", str(tmp_path / "cluster.yaml")])
    assert result.exit_code == 0, result.output
    config = bootstrap_aws(yaml.safe_load((tmp_path / "cluster.yaml").read_text()))

    provider = AWSNodeProvider(config["provider"], config["cluster_name"])
    # the spot c7g keeps being interrupted: the node the runtime then asks for instead
    fallback = choose_fallback("c7g.xlarge", "spot", REGION, load_catalog(), 1.0, 100.0)
    assert fallback.found, fallback.reason
    counts = {"ray.head.default": 1, "c7g.xlarge-spot-z0": 1, "c7g.xlarge-spot-z1": 1,
              "m7i.xlarge-on-demand-z0": 1, f"{fallback.to_type}-{fallback.to_market}-z1": 1,
              "r7g.2xlarge-on-demand-z1": 1}
    for node_type, count in counts.items():
        kind = "head" if node_type == "ray.head.default" else "worker"
        # one node per call: Ray asks MinCount=1, MaxCount=count and moto launches MinCount
        for _ in range(count):
            provider.create_node(config["available_node_types"][node_type]["node_config"],
                                 {TAG_RAY_NODE_KIND: kind, TAG_RAY_USER_NODE_TYPE: node_type,
                                  TAG_RAY_NODE_NAME: f"ray-{CLUSTER}-{kind}"}, 1)

    values = {k: v["value"] for k, v in tf.items()}
    arch_of = {name: t.arch for name, t in load_catalog().instance_types.items()}
    reservations = ec2.describe_instances(Filters=[
        {"Name": "tag:ray-cluster-name", "Values": [CLUSTER]}])["Reservations"]
    instances = [i for r in reservations for i in r["Instances"]]
    launched: dict[str, int] = {}
    for inst in instances:
        tags = {t["Key"]: t["Value"] for t in inst.get("Tags", [])}
        node_type = tags[TAG_RAY_USER_NODE_TYPE]
        launched[node_type] = launched.get(node_type, 0) + 1
        arch = arch_of[inst["InstanceType"]]
        image = ec2.describe_images(ImageIds=[inst["ImageId"]])["Images"][0]
        assert inst["ImageId"] == values["ami_ids"][arch], node_type
        assert image["Architecture"] == arch, (node_type, inst["InstanceType"])
        zone = 1 if node_type.endswith("-z1") else 0  # the head is in the first zone
        assert inst["SubnetId"] == values["private_subnet_ids"][zone], node_type
        assert inst["Placement"]["AvailabilityZone"] == f"{REGION}{'ab'[zone]}", node_type
        assert [g["GroupId"] for g in inst["SecurityGroups"]] == [values["security_group_id"]]
        role = "head" if node_type == "ray.head.default" else "worker"
        assert inst["IamInstanceProfile"]["Arn"] == values[f"{role}_instance_profile_arn"]
        assert tags["ray-cluster-name"] == CLUSTER and tags[TAG_RAY_NODE_KIND] == role
        assert inst["MetadataOptions"]["HttpTokens"] == "required", node_type
        assert (inst.get("InstanceLifecycle") == "spot") == ("-spot" in node_type), node_type
    assert launched == counts
    assert {arch_of[i["InstanceType"]] for i in instances} == {"x86_64", "arm64"}
