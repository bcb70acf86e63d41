"""``eochain cluster-config``: plan.json + Terraform outputs -> Ray cluster launcher YAML."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from ray.autoscaler._private.util import validate_config

from planner.calibration import load_calibration
from planner.campaign import parse_campaign
from planner.catalog import load_catalog
from planner.errors import PlanError
from planner.replan import RunProgress, fleet_counts, replan
from scheduler.cli.cluster import cluster_config
from scheduler.cli.plan import plan as plan_command
from scheduler.cloud.bundle import Bundle
from scheduler.cloud.errors import ClusterConfigError, TerraformOutputsError
from scheduler.fleet.autoscaling import fleet_bundles
from scheduler.fleet.cluster_config import (
    REQUIRED_OUTPUTS,
    ClusterOptions,
    fallback_nodes,
    fleet_from_plan,
    render_cluster_config,
    render_fake_multinode_config,
    resource_request,
    terraform_outputs_from_dict,
    zone_resource,
    zone_shares,
)
from scheduler.fleet.fallback import choose_fallback, fallback_pools
from scheduler.fleet.replanning import LiveReplanner

pytestmark = pytest.mark.unit

REGION = "eu-west-3"
TF_VALUES: dict[str, Any] = {
    "region": REGION,
    "cluster_name": "eochain-test",
    "vpc_id": "vpc-0123",
    "private_subnet_ids": ["subnet-a", "subnet-b"],
    "security_group_id": "sg-0abc",
    "head_instance_profile_arn": "arn:aws:iam::123456789012:instance-profile/eochain-test-ray-head",
    "worker_instance_profile_arn":
        "arn:aws:iam::123456789012:instance-profile/eochain-test-ray-worker",
    "head_launch_template_id": "lt-head",
    "worker_launch_template_ids": {"arm64": "lt-worker-arm", "x86_64": "lt-worker-x86"},
    "bucket_name": "eochain-test-products-123456789012",
}


def _tf_json(values: dict[str, Any]) -> dict[str, Any]:
    """The shape of `terraform output -json`."""
    return {k: {"sensitive": False, "type": "string", "value": v} for k, v in values.items()}


def _plan(*fleet: tuple[str, str, int], region: str = REGION) -> dict[str, Any]:
    return {"format": "eochain-plan/1", "fleet": [
        {"instance_type": t, "region": region, "market": m, "instances": n} for t, m, n in fleet]}


def _write(tmp_path: Path, plan: dict[str, Any], tf: dict[str, Any]) -> tuple[Path, Path]:
    p, t = tmp_path / "plan.json", tmp_path / "tf.json"
    p.write_text(json.dumps(plan))
    t.write_text(json.dumps(tf))
    return p, t


def _wheel_args(tmp_path: Path) -> list[str]:
    """A stand-in wheel file (rendering copies it, never opens it) and a bundle folder."""
    wheel = tmp_path / "eochain-0.1.0-py3-none-any.whl"
    wheel.write_bytes(b"PK\x05\x06" + bytes(18))
    return ["--wheel", str(wheel), "--bundle-dir", str(tmp_path / "dist")]


BUNDLE = Bundle(Path("/tmp/eochain-dist-local"), "eochain-0.1.0-py3-none-any.whl")


def test_renders_one_node_type_per_type_and_market(tmp_path: Path) -> None:
    plan = _plan(("c7g.4xlarge", "spot", 6), ("c7g.4xlarge", "on-demand", 1),
                 ("r7g.2xlarge", "spot", 2), ("c7g.4xlarge", "spot", 1))
    p, t = _write(tmp_path, plan, _tf_json(TF_VALUES))
    out = tmp_path / "cluster.yaml"
    result = CliRunner().invoke(cluster_config, [str(p), "--terraform-outputs", str(t),
                                                 "-o", str(out), *_wheel_args(tmp_path)])
    assert result.exit_code == 0, result.output
    doc = yaml.safe_load(out.read_text())
    validate_config(doc)  # Ray's own cluster launcher schema
    assert doc["file_mounts"] == {"/tmp/eochain-dist": str(tmp_path / "dist")}
    assert sorted(p.name for p in (tmp_path / "dist").iterdir()) == [
        "constraints.txt", "eochain-0.1.0-py3-none-any.whl"]
    assert any("scheduler.fleet.drain" in c for c in doc["worker_start_ray_commands"])
    types = doc["available_node_types"]
    fallbacks = fallback_nodes(fleet_from_plan(plan, REGION, load_catalog()), REGION,
                               load_catalog())
    assert set(types) == {"ray.head.default", "c7g.4xlarge-spot", "c7g.4xlarge-on-demand",
                          "r7g.2xlarge-spot"} | {n.node_type for n in fallbacks}
    spares = len(set(types) - {"ray.head.default", "c7g.4xlarge-spot", "c7g.4xlarge-on-demand",
                               "r7g.2xlarge-spot"})
    assert f"{len(types) - 1} worker node types ({spares} for spot fallbacks" in result.output
    spot = types["c7g.4xlarge-spot"]
    assert spot["max_workers"] == 7 and spot["min_workers"] == 0  # merged 6 + 1
    assert spot["node_config"]["InstanceMarketOptions"]["MarketType"] == "spot"
    assert "InstanceMarketOptions" not in types["c7g.4xlarge-on-demand"]["node_config"]
    assert spot["resources"]["c7g.4xlarge:spot"] == 1 and spot["resources"]["CPU"] == 16
    assert doc["max_workers"] == 10
    # the idle timeout that plans are costed with (catalog overheads.idle_timeout_s)
    assert doc["idle_timeout_minutes"] == load_catalog().overheads.idle_timeout_s / 60 == 1.0
    # one zone: no zone resource to ask for
    assert not any(k.startswith("eochain-zone") for nt in types.values() for k in nt["resources"])
    for name, nt in types.items():
        cfg = nt["node_config"]
        # one zone (the plan's default): head and workers in the first subnet only; Ray's
        # launcher would put them there too, but spill into the next after a failed launch
        assert cfg["SubnetIds"] == ["subnet-a"], name
        assert cfg["SecurityGroupIds"] == ["sg-0abc"], name
        assert cfg["MetadataOptions"]["HttpTokens"] == "required", name
    head = types["ray.head.default"]
    assert head["resources"] == {"CPU": 0}
    assert head["node_config"]["IamInstanceProfile"]["Arn"].endswith("ray-head")
    assert head["node_config"]["LaunchTemplate"]["LaunchTemplateId"] == "lt-head"
    assert spot["node_config"]["IamInstanceProfile"]["Arn"].endswith("ray-worker")
    assert spot["node_config"]["LaunchTemplate"]["LaunchTemplateId"] == "lt-worker-arm"
    assert doc["provider"] == {"type": "aws", "region": REGION, "use_internal_ips": True,
                               "cache_stopped_nodes": False}
    start = " ".join(doc["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in start and "--port=6379" in start
    assert "--dashboard-host=127.0.0.1" in " ".join(doc["worker_start_ray_commands"])


def test_a_spread_plan_pins_each_zone_share_to_its_subnet(tmp_path: Path) -> None:
    """zones: 2 in plan.json: 5 spot nodes round-robin over two zones, 3 + 2, one type each."""
    plan = {**_plan(("c7g.4xlarge", "spot", 5), ("m7g.2xlarge", "on-demand", 1)), "zones": 2}
    p, t = _write(tmp_path, plan, _tf_json(TF_VALUES))
    out = tmp_path / "cluster.yaml"
    result = CliRunner().invoke(cluster_config, [str(p), "--terraform-outputs", str(t),
                                                 "-o", str(out), *_wheel_args(tmp_path)])
    assert result.exit_code == 0, result.output
    doc = yaml.safe_load(out.read_text())
    validate_config(doc)
    types = doc["available_node_types"]
    fleet = fleet_from_plan(plan, REGION, load_catalog())
    fallback_types = {n.node_type for n in fallback_nodes(fleet, REGION, load_catalog())}
    workers = {name: (nt["max_workers"], nt["node_config"]["SubnetIds"],
                      {k: v for k, v in nt["resources"].items() if ":" in k})
               for name, nt in types.items() if name != "ray.head.default"
               and name.rpartition("-z")[0] not in fallback_types}
    assert workers == {
        "c7g.4xlarge-spot-z0": (3, ["subnet-a"], {"c7g.4xlarge:spot": 1}),
        "c7g.4xlarge-spot-z1": (2, ["subnet-b"], {"c7g.4xlarge:spot": 1}),
        "m7g.2xlarge-on-demand-z0": (1, ["subnet-a"], {"m7g.2xlarge:on-demand": 1}),
    }
    assert types["ray.head.default"]["node_config"]["SubnetIds"] == ["subnet-a"]
    assert doc["max_workers"] == 6
    # each zone's node types carry its resource; the run asks for each zone's share by it
    assert {n: nt["resources"].get(zone_resource(1)) for n, nt in types.items()
            if n.startswith("c7g.4xlarge-spot")} == {"c7g.4xlarge-spot-z0": None,
                                                     "c7g.4xlarge-spot-z1": 1}
    bundles = resource_request(fleet, zones=2)
    assert sorted(map(sorted, (b.items() for b in bundles))) == sorted(
        [[("c7g.4xlarge:spot", 1.0), (zone_resource(0), 1.0)]] * 3
        + [[("c7g.4xlarge:spot", 1.0), (zone_resource(1), 1.0)]] * 2
        + [[(zone_resource(0), 1.0), ("m7g.2xlarge:on-demand", 1.0)]])
    assert fleet_bundles(plan) == bundles  # what the run asks for, from plan.json's zones
    # the local twin has the same node types and caps, given the same fallbacks
    twin = render_fake_multinode_config(fleet, "127.0.0.1:6379", zones=2, fallbacks=fallback_nodes(
        fleet, REGION, load_catalog()))["available_node_types"]
    assert {n: nt["max_workers"] for n, nt in twin.items()} == {
        n: nt["max_workers"] for n, nt in types.items() if n != "ray.head.default"} | {
        "ray.head.default": 0}
    assert twin["c7g.4xlarge-spot-z1"]["resources"][zone_resource(1)] == 1


def test_more_zones_than_subnets_is_refused(tmp_path: Path) -> None:
    plan = {**_plan(("c7g.4xlarge", "spot", 3)), "zones": 3}
    p, t = _write(tmp_path, plan, _tf_json(TF_VALUES))
    result = CliRunner().invoke(cluster_config, [str(p), "--terraform-outputs", str(t),
                                                 *_wheel_args(tmp_path)])
    assert result.exit_code != 0
    assert "3 zone(s)" in result.output and "2 private subnet(s)" in result.output
    bad = {**_plan(("c7g.4xlarge", "spot", 3)), "zones": 0}
    with pytest.raises(PlanError, match="zones 0, expected a whole number >= 1"):
        fleet_from_plan(bad, REGION, load_catalog())


@pytest.mark.parametrize(("instances", "zones", "shares"), [
    (5, 2, [3, 2]), (1, 3, [1, 0, 0]), (6, 3, [2, 2, 2]), (0, 2, [0, 0]), (4, 1, [4])])
def test_zone_shares_are_the_simulators_round_robin(instances: int, zones: int,
                                                      shares: list[int]) -> None:
    assert zone_shares(instances, zones) == shares


def test_resource_request_matches_fleet() -> None:
    catalog = load_catalog()
    fleet = fleet_from_plan(_plan(("c7g.xlarge", "spot", 3), ("m7g.2xlarge", "on-demand", 1)),
                            REGION, catalog)
    bundles = resource_request(fleet)
    assert len(bundles) == 4
    assert bundles.count({"c7g.xlarge:spot": 1.0}) == 3
    assert {"m7g.2xlarge:on-demand": 1.0} in bundles


def test_instance_type_missing_in_region_suggests(tmp_path: Path) -> None:
    catalog = load_catalog()
    with pytest.raises(ClusterConfigError, match=r"'c7a.xlarge' is not offered in eu-west-3"):
        fleet_from_plan(_plan(("c7a.xlarge", "spot", 1)), REGION, catalog)
    with pytest.raises(ClusterConfigError, match=r"did you mean 'c7g.4xlarge'"):
        fleet_from_plan(_plan(("c7g.4xlarg", "spot", 1)), REGION, catalog)
    tf = terraform_outputs_from_dict(_tf_json(TF_VALUES))
    fleet = fleet_from_plan(_plan(("c7g.xlarge", "spot", 1)), REGION, catalog)
    with pytest.raises(ClusterConfigError, match="--head-instance-type.*'m7i.large'"):
        render_cluster_config(fleet, tf, ClusterOptions(BUNDLE, head_instance_type="m7i.large"),
                              catalog)


def test_plan_in_another_region_is_refused() -> None:
    with pytest.raises(ClusterConfigError, match="region 'us-east-1' differs.*'eu-west-3'.*one "
                       "Ray cluster runs in one region"):
        fleet_from_plan(_plan(("c7g.xlarge", "spot", 1), region="us-east-1"), REGION,
                        load_catalog())


def test_bad_plan_documents() -> None:
    catalog = load_catalog()
    # a malformed plan is the plan reader's one error, naming the key
    with pytest.raises(PlanError, match="format 'v0'"):
        fleet_from_plan({"format": "v0", "fleet": []}, REGION, catalog)
    with pytest.raises(PlanError, match="market 'preemptible'"):
        fleet_from_plan(_plan(("c7g.xlarge", "preemptible", 1)), REGION, catalog)
    with pytest.raises(ClusterConfigError, match="no instance"):
        fleet_from_plan(_plan(("c7g.xlarge", "spot", 0)), REGION, catalog)


def test_missing_terraform_outputs_are_named(tmp_path: Path) -> None:
    values = {k: v for k, v in TF_VALUES.items()
              if k not in ("security_group_id", "worker_instance_profile_arn")}
    with pytest.raises(TerraformOutputsError,
                       match="lack security_group_id, worker_instance_profile_arn"):
        terraform_outputs_from_dict(_tf_json(values), "tf.json")
    p, t = _write(tmp_path, _plan(("c7g.xlarge", "spot", 1)), _tf_json(values))
    result = CliRunner().invoke(cluster_config, [str(p), "--terraform-outputs", str(t),
                                                 *_wheel_args(tmp_path)])
    assert result.exit_code == 1
    assert "security_group_id" in result.output and "terraform output -json" in result.output
    t.write_text("not json")
    result = CliRunner().invoke(cluster_config, [str(p), "--terraform-outputs", str(t),
                                                 *_wheel_args(tmp_path)])
    assert result.exit_code == 1 and "is not JSON" in result.output
    assert set(REQUIRED_OUTPUTS) <= set(TF_VALUES)


def test_plain_value_map_is_accepted() -> None:
    tf = terraform_outputs_from_dict(TF_VALUES)
    assert tf.private_subnet_ids == ("subnet-a", "subnet-b")


def test_real_plan_from_eochain_plan(tmp_path: Path) -> None:
    campaign = {
        "name": "small",
        "inputs": {"survey": {"pairs": 4, "bbox": [4.6, 43.4, 6.6, 44.6], "scene_km": 8}},
        "products": {"ortho": {"gsd_m": 0.5}, "dsm": {"gsd_m": 1.0}},
        "tiling": {"tile_px": 2048, "margin_px": 64},
        "data": {"region": REGION, "bucket": "raw"},
        "deadline_h": 6,
        "compute": {"regions": [REGION], "families": ["c7g", "m7g", "r7g"]},
        "quotas": {"on_demand_vcpus": 64, "spot_vcpus": 128, "max_instances_per_type": 4},
    }
    cfile = tmp_path / "campaign.yaml"
    cfile.write_text(yaml.safe_dump(campaign))
    result = CliRunner().invoke(plan_command, [str(cfile), "--out", str(tmp_path), "--runs", "0"])
    assert result.exit_code == 0, result.output
    plan = json.loads((tmp_path / "plan.json").read_text())
    t = tmp_path / "tf.json"
    t.write_text(json.dumps(_tf_json(TF_VALUES)))
    result = CliRunner().invoke(cluster_config, [str(tmp_path / "plan.json"),
                                                 "--terraform-outputs", str(t),
                                                 *_wheel_args(tmp_path)])
    assert result.exit_code == 0, result.output
    doc = yaml.safe_load(result.output)
    planned = sum(e["instances"] for e in plan["fleet"])
    assert 0 < planned <= doc["max_workers"] == plan["replan"]["max_instances"]
    keys = {f"{e['instance_type']}:{e['market']}" for e in plan["fleet"] if e["instances"]}
    resources = {k for nt in doc["available_node_types"].values() for k in nt["resources"]}
    assert keys <= resources
    # a live re-plan of the run (its tasks three times slower than calibrated, 98 % of the
    # time gone with all the work left) asks for pools the config renders, within their caps
    caps = {f"{t}:{m}": nt["max_workers"] for nt in doc["available_node_types"].values()
            for t, m in [k.rsplit(":", 1) for k in nt["resources"] if ":" in k]}
    live = LiveReplanner.from_plan(plan, parse_campaign(campaign, str(cfile)), load_catalog(),
                                   load_calibration())
    everything = {st.name: st.n_tasks for st in live.problem.stages}
    slow = replan(live.problem, RunProgress(
        0.98 * live.deadline_s, everything, {st: 3 * t for st, t in live.calibrated_task_s.items()},
        live.calibrated_task_s), live.deadline_s)
    asked = fleet_counts(slow.plan)
    assert asked and set(asked) != set(live.fleet)  # not the plan's fleet
    assert all(caps.get(f"{t}:{m}", 0) >= n for (t, m), n in asked.items()), (asked, caps)
    assert sum(asked.values()) <= doc["max_workers"]
    validate_config(doc)


def test_fake_multinode_twin_keeps_types_and_resources() -> None:
    catalog = load_catalog()
    fleet = fleet_from_plan(_plan(("c7g.xlarge", "spot", 2), ("m7g.xlarge", "on-demand", 1)),
                            REGION, catalog)
    doc = render_fake_multinode_config(fleet, "127.0.0.1:6379")
    validate_config(doc)
    assert doc["provider"]["type"] == "fake_multinode"
    assert doc["provider"]["gcs_address"] == "127.0.0.1:6379"
    spot = doc["available_node_types"]["c7g.xlarge-spot"]
    assert spot["max_workers"] == 2 and spot["resources"]["c7g.xlarge:spot"] == 1
    assert spot["resources"]["CPU"] == 1
    assert resource_request(fleet) == [{"c7g.xlarge:spot": 1.0}] * 2 + [
        {"m7g.xlarge:on-demand": 1.0}]  # nodes, whatever their CPUs
    with pytest.raises(ClusterConfigError, match="78 MiB"):
        render_fake_multinode_config(fleet, "127.0.0.1:6379", object_store_bytes=1 << 20)


def _render(plan: dict[str, Any], *, tf_values: dict[str, Any] | None = None,
            **options: Any) -> dict[str, Any]:
    catalog = load_catalog()
    tf = terraform_outputs_from_dict(tf_values or TF_VALUES)
    fleet = fleet_from_plan(plan, REGION, catalog)
    return render_cluster_config(fleet, tf, ClusterOptions(BUNDLE, **options), catalog,
                                 ray_version="2.60.0", zones=int(plan.get("zones", 1)))


def _images(doc: dict[str, Any]) -> dict[str, str]:
    return {k: v["node_config"]["ImageId"] for k, v in doc["available_node_types"].items()}


def test_every_node_type_gets_an_ami_of_its_architecture() -> None:
    plan = _plan(("c7g.xlarge", "spot", 2), ("m7i.xlarge", "on-demand", 1))
    ssm = "resolve:ssm:/aws/service/canonical/ubuntu/server/24.04/stable/current/{}/hvm/ebs-gp3/ami-id"
    plain = _images(_render(plan))
    # the rest are the spot c7g's fallbacks, and theirs: Graviton too
    arm_fallbacks = set(plain) - {"ray.head.default", "c7g.xlarge-spot", "m7i.xlarge-on-demand"}
    assert arm_fallbacks
    assert {k: v for k, v in plain.items() if k not in arm_fallbacks} == {
        "ray.head.default": ssm.format("amd64"), "c7g.xlarge-spot": ssm.format("arm64"),
        "m7i.xlarge-on-demand": ssm.format("amd64")}
    assert {plain[k] for k in arm_fallbacks} == {ssm.format("arm64")}  # Graviton, as c7g
    tf_amis = {**TF_VALUES, "ami_ids": {"arm64": "ami-0aaaaaaaaaaaaaaa1",
                                        "x86_64": "ami-0bbbbbbbbbbbbbbb2"}}
    doc = _render(plan, tf_values=tf_amis, image_ids={"arm64": "ami-0ccccccccccccccc3"},
                  head_instance_type="m7g.xlarge")
    assert _images(doc) == {"ray.head.default": "ami-0ccccccccccccccc3",
                            "c7g.xlarge-spot": "ami-0ccccccccccccccc3",
                            "m7i.xlarge-on-demand": "ami-0bbbbbbbbbbbbbbb2"} | {
        k: "ami-0ccccccccccccccc3" for k in plain if k not in (
            "ray.head.default", "c7g.xlarge-spot", "m7i.xlarge-on-demand")}
    templates = {k: v["node_config"]["LaunchTemplate"]["LaunchTemplateId"]
                 for k, v in doc["available_node_types"].items()}
    assert templates == {"ray.head.default": "lt-head", "c7g.xlarge-spot": "lt-worker-arm",
                         "m7i.xlarge-on-demand": "lt-worker-x86"} | {
        k: "lt-worker-arm" for k in plain if k not in (
            "ray.head.default", "c7g.xlarge-spot", "m7i.xlarge-on-demand")}
    with pytest.raises(ClusterConfigError, match="--image-id arm64='ami-nope'"):
        ClusterOptions(BUNDLE, image_ids={"arm64": "ami-nope"})
    no_arm = {**TF_VALUES, "worker_launch_template_ids": {"x86_64": "lt-x"}}
    with pytest.raises(TerraformOutputsError, match=r"no template for \['arm64'\]"):
        _render(plan, tf_values=no_arm)


def test_setup_installs_this_wheel_with_its_pins_and_the_clients_ray() -> None:
    doc = _render(_plan(("c7g.xlarge", "spot", 1)))
    assert doc["file_mounts"] == {"/tmp/eochain-dist": "/tmp/eochain-dist-local"}
    setup = "\n".join(doc["setup_commands"])
    assert ("pip install -q -c /tmp/eochain-dist/constraints.txt "
            "'/tmp/eochain-dist/eochain-0.1.0-py3-none-any.whl[runtime]' 'ray[default]==2.60.0'"
            in setup)
    assert "python3.12 -m venv $HOME/eochain-venv" in setup
    assert "--force-reinstall /tmp/eochain-dist/eochain-0.1.0-py3-none-any.whl" in setup
    workers = doc["worker_start_ray_commands"]
    assert any("$HOME/eochain-venv/bin/python -m scheduler.fleet.drain" in c for c in workers)
    assert all("$HOME/eochain-venv/bin/ray" in c for c in doc["head_start_ray_commands"])
    # every command is valid shell (bash parses it without running it)
    for command in (*doc["setup_commands"], *doc["head_start_ray_commands"], *workers):
        parsed = subprocess.run(["bash", "-n", "-c", command], capture_output=True, text=True,
                                check=False)
        assert parsed.returncode == 0, (command, parsed.stderr)
    proxy = doc["auth"]["ssh_proxy_command"]
    assert "aws ssm start-session" in proxy and "AWS-StartSSHSession" in proxy
    # ssh substitutes %h and %p, then runs the command with a shell
    expanded = proxy.replace("%h", "10.42.0.7").replace("%p", "22")
    assert subprocess.run(["bash", "-n", "-c", expanded], check=False).returncode == 0
    assert "ssh_proxy_command" not in _render(_plan(("c7g.xlarge", "spot", 1)),
                                              ssh_through_ssm=False)["auth"]


@pytest.mark.parametrize(("count", "error"), [
    (1.7, PlanError), (True, PlanError), (1e9, PlanError), (-1, PlanError), ("3", PlanError),
    (None, PlanError), (10**6, ClusterConfigError)])
def test_instance_counts_are_whole_and_bounded(count: object, error: type[Exception]) -> None:
    """Not a whole count: a bad plan; more than a cluster launches: a bad cluster."""
    plan = {"format": "eochain-plan/1", "fleet": [
        {"instance_type": "c7g.xlarge", "region": REGION, "market": "spot", "instances": count}]}
    with pytest.raises(error, match=r"fleet\[0\]: instances"):
        fleet_from_plan(plan, REGION, load_catalog())


def test_hostile_values_never_reach_a_shell(tmp_path: Path) -> None:
    p, t = _write(tmp_path, _plan(("c7g.xlarge", "spot", 1)),
                  _tf_json({**TF_VALUES, "cluster_name": "eochain; rm -rf /"}))
    result = CliRunner().invoke(cluster_config, [str(p), "--terraform-outputs", str(t),
                                                 *_wheel_args(tmp_path)])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "cluster_name = 'eochain; rm -rf /'" in result.output
    _, t = _write(tmp_path, _plan(("c7g.xlarge", "spot", 1)), _tf_json(TF_VALUES))
    for args, expected in ((["--dashboard-host", "0.0.0.0; rm -rf /"], "--dashboard-host"),
                           (["--ssh-user", "ubuntu$(id)"], "--ssh-user"),
                           (["--python", "python3; rm -rf /"], "--python"),
                           (["--image-id", "ami-0123456789abcdef0"], "expected ARCH=AMI"),
                           (["--idle-timeout-minutes", "nan"], "--idle-timeout-minutes")):
        result = CliRunner().invoke(cluster_config, [str(p), "--terraform-outputs", str(t),
                                                     *_wheel_args(tmp_path), *args])
        assert result.exit_code == 1, (args, result.output)
        assert expected in result.output and "Traceback" not in result.output, args


def test_output_into_a_missing_folder_is_a_clear_error(tmp_path: Path) -> None:
    p, t = _write(tmp_path, _plan(("c7g.xlarge", "spot", 1)), _tf_json(TF_VALUES))
    out = tmp_path / "missing" / "cluster.yaml"
    result = CliRunner().invoke(cluster_config, [str(p), "--terraform-outputs", str(t),
                                                 *_wheel_args(tmp_path), "-o", str(out)])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "does not exist" in result.output and str(out.parent) in result.output


def test_a_multi_region_plan_is_one_cluster_per_region(tmp_path: Path) -> None:
    plan = {"format": "eochain-plan/1", "fleet": [
        {"instance_type": "c7g.xlarge", "region": REGION, "market": "spot", "instances": 2},
        {"instance_type": "c7g.xlarge", "region": "us-east-1", "market": "spot", "instances": 3}]}
    p, t = _write(tmp_path, plan, _tf_json(TF_VALUES))
    args = [str(p), "--terraform-outputs", str(t), *_wheel_args(tmp_path)]
    result = CliRunner().invoke(cluster_config, args)
    assert result.exit_code == 1
    assert "eu-west-3 (2 instances), us-east-1 (3 instances)" in result.output
    assert "--region R" in result.output
    result = CliRunner().invoke(cluster_config, [*args, "--region", REGION])
    assert result.exit_code == 0, result.output
    doc = yaml.safe_load(result.output)
    assert doc["max_workers"] == 2 and doc["provider"]["region"] == REGION
    result = CliRunner().invoke(cluster_config, [*args, "--region", "us-east-1"])
    assert result.exit_code == 1 and "differs from the Terraform outputs' region" in result.output


def test_cluster_config_reads_the_plan_through_the_plan_reader(tmp_path: Path) -> None:
    """A bad plan.json: exit 1, the file and the key named, no traceback."""
    _, t = _write(tmp_path, _plan(("c7g.xlarge", "spot", 1)), _tf_json(TF_VALUES))
    p = tmp_path / "bad-plan.json"
    for text, expected in (
            ("[1, 2]", "a JSON list, expected an object"),
            (('{"format": "eochain-plan/1", "fleet": [{"instance_type": "c7g.xlarge", '
              '"market": "spot", "instances": 1, "price_usd_per_h": NaN}]}'),
             "fleet[0]: price_usd_per_h nan, expected a finite number"),
            ('{"format": "eochain-plan/2", "fleet": []}', "format 'eochain-plan/2'"),
            ('{"format": "eochain-plan/1"}', "fleet is missing")):
        p.write_text(text)
        result = CliRunner().invoke(cluster_config, [str(p), "--terraform-outputs", str(t),
                                                     *_wheel_args(tmp_path)])
        assert result.exit_code == 1 and "Traceback" not in result.output, result.output
        assert str(p) in result.output and expected in result.output, (text, result.output)


def test_every_fallback_the_runtime_may_choose_has_a_node_type() -> None:
    """A spot pool that keeps being interrupted moves to one of its fallback pools, and that
    pool to one of its own: each is a node type of the config as rendered (``min_workers``
    0, capped at the nodes it may replace), so a plan that falls back can be deployed."""
    catalog = load_catalog()
    plan = {**_plan(("c7g.xlarge", "spot", 3), ("m7g.2xlarge", "spot", 2),
                    ("m7i.xlarge", "on-demand", 1)), "zones": 2}
    doc = _render(plan)
    validate_config(doc)
    types = doc["available_node_types"]
    caps: dict[str, int] = {}
    for name, nt in types.items():
        for key in nt["resources"]:
            if ":" in key:
                caps[key] = caps.get(key, 0) + nt["max_workers"]
    planned = {"c7g.xlarge:spot": 3, "m7g.2xlarge:spot": 2}
    for start, nodes in planned.items():
        itype, _, market = start.partition(":")
        chain = [(itype, market)]
        # follow the choice the runtime makes, each pool flapping in turn, until on demand
        while chain[-1][1] == "spot":
            pool = chain[-1]
            decision = choose_fallback(*pool, REGION, catalog, 10.0, 1000.0, exclude=chain)
            assert decision.found, decision.reason
            chain.append((str(decision.to_type), str(decision.to_market)))
            key = f"{decision.to_type}:{decision.to_market}"
            assert caps.get(key, 0) >= nodes, (start, key, caps)
            for z in (0, 1):  # spread over the plan's zones like the fleet
                name = f"{decision.to_type}-{decision.to_market}-z{z}"
                assert types[name]["min_workers"] == 0
                assert types[name]["node_config"]["SubnetIds"] == [TF_VALUES[
                    "private_subnet_ids"][z]]
        assert len(chain) >= 2
    # fallbacks replace nodes: the cluster never holds more than the fleet
    assert doc["max_workers"] == 6
    # a fallback keeps the architecture, the vCPUs and the memory per vCPU of what it replaces
    for itype, market in fallback_pools("m7g.2xlarge", "spot", REGION, catalog):
        info = catalog.instance_types[itype]
        assert info.arch == "arm64" and info.vcpus >= 8 and info.mem_gib / info.vcpus >= 4
