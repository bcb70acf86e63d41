"""Render a Ray cluster launcher config for AWS from a plan and the Terraform outputs.

The plan (``plan.json``, format ``eochain-plan/1``) names a fleet: instance
types, markets and counts. Each (type, market) pair becomes one entry of
``available_node_types``:

- ``node_config``: the instance type, spot via ``InstanceMarketOptions``, the
  private subnets, security group and worker instance profile from Terraform,
  the worker launch template (IMDSv2, encrypted root volume), and IMDSv2
  options repeated on the request so they hold even without the template;
- ``min_workers`` 0 and ``max_workers`` the plan's count: the runtime asks for
  the fleet with :func:`resource_request` (``ray.autoscaler.sdk.request_resources``)
  and the autoscaler lets idle nodes go;
- ``resources``: the vCPUs and a custom resource ``"TYPE:MARKET": 1`` that
  the runtime's actor pools use to place work on that kind of node.

With ``--project-dir`` every worker also starts the spot-notice watcher of
:mod:`scheduler.cloud.drain`. The head node only coordinates (``CPU: 0``). Ray's ports are pinned to the
ones ``terraform/security_groups.tf`` opens within the cluster, and the
dashboard (job server) binds to 127.0.0.1 unless asked otherwise: reach it
through ``ray dashboard cluster.yaml`` (an SSH tunnel).

Nothing here calls AWS: instance types are checked against the shipped price
catalog, so a plan naming a type the region lacks fails with "did you mean".
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from planner.catalog import PriceCatalog
from scheduler.cloud.errors import ClusterConfigError, TerraformOutputsError

PLAN_FORMAT = "eochain-plan/1"
MARKETS = ("spot", "on-demand")

#: Terraform outputs (``terraform/outputs.tf``) the config is built from.
REQUIRED_OUTPUTS: tuple[str, ...] = (
    "region",
    "cluster_name",
    "private_subnet_ids",
    "security_group_id",
    "head_instance_profile_arn",
    "worker_instance_profile_arn",
    "head_launch_template_id",
    "worker_launch_template_id",
    "bucket_name",
)

#: Ray's ports, as opened within the cluster by ``terraform/security_groups.tf``.
RAY_PORT_FLAGS: tuple[str, ...] = (
    "--node-manager-port=6380",
    "--object-manager-port=6381",
    "--metrics-export-port=8080",
    "--min-worker-port=10002",
    "--max-worker-port=19999",
    "--dashboard-agent-listen-port=52365",
    "--dashboard-agent-grpc-port=52366",
    "--runtime-env-agent-port=52367",
)
HEAD_PORT_FLAGS: tuple[str, ...] = (
    "--port=6379",
    "--dashboard-port=8265",
    "--ray-client-server-port=10001",
)
IMDSV2 = {"HttpTokens": "required", "HttpPutResponseHopLimit": 1, "HttpEndpoint": "enabled"}


@dataclass(frozen=True, slots=True)
class TerraformOutputs:
    """The values of ``terraform output -json`` that the cluster config uses."""

    region: str
    cluster_name: str
    private_subnet_ids: tuple[str, ...]
    security_group_id: str
    head_instance_profile_arn: str
    worker_instance_profile_arn: str
    head_launch_template_id: str
    worker_launch_template_id: str
    bucket_name: str

    def __post_init__(self) -> None:
        if not self.private_subnet_ids:
            raise TerraformOutputsError(
                "Terraform output 'private_subnet_ids' is empty, expected at least one subnet id")


@dataclass(frozen=True, slots=True)
class FleetNode:
    """One (instance type, market) entry of the plan's fleet."""

    instance_type: str
    market: str
    instances: int
    vcpus: int
    mem_gib: float

    @property
    def resource(self) -> str:
        """The custom resource naming type and market, as the runtime's actor pools use it."""
        return f"{self.instance_type}:{self.market}"

    @property
    def node_type(self) -> str:
        return f"{self.instance_type}-{self.market}"


@dataclass(frozen=True, slots=True)
class ClusterOptions:
    head_instance_type: str = "m7i.xlarge"
    image_id: str | None = None
    ssh_user: str = "ubuntu"
    dashboard_host: str = "127.0.0.1"
    idle_timeout_minutes: float = 5.0
    project_dir: str | None = None


def load_terraform_outputs(path: str | Path) -> TerraformOutputs:
    """Read ``terraform output -json`` (``{"name": {"value": ...}}``) or a plain name->value map."""
    try:
        doc = json.loads(Path(path).read_text())
    except OSError as exc:
        raise TerraformOutputsError(f"Terraform outputs file {str(path)!r} cannot be read: {exc}"
                                    ) from exc
    except ValueError as exc:
        raise TerraformOutputsError(
            f"Terraform outputs file {str(path)!r} is not JSON ({exc}); expected the output of "
            "`terraform output -json`") from exc
    return terraform_outputs_from_dict(doc, str(path))


def terraform_outputs_from_dict(doc: Any, source: str = "<dict>") -> TerraformOutputs:
    if not isinstance(doc, Mapping):
        raise TerraformOutputsError(
            f"Terraform outputs {source!r}: expected a JSON object, got {type(doc).__name__}")
    values = {k: (v["value"] if isinstance(v, Mapping) and "value" in v else v)
              for k, v in doc.items()}
    missing = [k for k in REQUIRED_OUTPUTS if values.get(k) in (None, "", [])]
    if missing:
        raise TerraformOutputsError(
            f"Terraform outputs {source!r} lack {', '.join(missing)}; expected every output of "
            "terraform/outputs.tf (run `terraform output -json > FILE` after `terraform apply`)")
    subnets = values["private_subnet_ids"]
    if isinstance(subnets, str) or not isinstance(subnets, Sequence):
        raise TerraformOutputsError(
            f"Terraform outputs {source!r}: private_subnet_ids = {subnets!r}, expected a list")
    scalars = {k: values[k] for k in REQUIRED_OUTPUTS if k != "private_subnet_ids"}
    for key, value in scalars.items():
        if not isinstance(value, str):
            raise TerraformOutputsError(
                f"Terraform outputs {source!r}: {key} = {value!r}, expected a string")
    return TerraformOutputs(private_subnet_ids=tuple(str(s) for s in subnets), **scalars)


def _did_you_mean(name: str, choices: Sequence[str]) -> str:
    close = difflib.get_close_matches(name, list(choices), n=3, cutoff=0.6)
    return f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""


def check_instance_type(name: str, region: str, catalog: PriceCatalog, where: str) -> None:
    """Raise unless the catalog offers ``name`` in ``region``."""
    if region not in catalog.prices:
        raise ClusterConfigError(
            f"{where}: region {region!r} is not in the price catalog (regions: "
            f"{', '.join(sorted(catalog.prices))}){_did_you_mean(region, list(catalog.prices))}")
    offered = catalog.prices[region]
    if name not in offered:
        raise ClusterConfigError(
            f"{where}: instance type {name!r} is not offered in {region}"
            f"{_did_you_mean(name, sorted(offered))}")


def fleet_from_plan(plan: Mapping[str, Any], region: str, catalog: PriceCatalog,
                    source: str = "plan.json") -> list[FleetNode]:
    """The plan's fleet, merged per (type, market), checked against region and catalog."""
    if plan.get("format") != PLAN_FORMAT:
        raise ClusterConfigError(
            f"{source}: format {plan.get('format')!r}, expected {PLAN_FORMAT!r} "
            "(write it with `eochain plan campaign.yaml`)")
    fleet = plan.get("fleet")
    if not isinstance(fleet, list) or not fleet:
        raise ClusterConfigError(f"{source}: 'fleet' is {fleet!r}, expected a non-empty list")
    merged: dict[tuple[str, str], FleetNode] = {}
    for i, entry in enumerate(fleet):
        where = f"{source}: fleet[{i}]"
        try:
            name = str(entry["instance_type"])
            market = str(entry["market"])
            count = int(entry["instances"])
            entry_region = str(entry.get("region", region))
        except (KeyError, TypeError, ValueError) as exc:
            raise ClusterConfigError(
                f"{where} = {entry!r}: expected instance_type, market and instances ({exc})"
            ) from exc
        if market not in MARKETS:
            raise ClusterConfigError(f"{where}: market {market!r}, expected one of {MARKETS}")
        if count < 0:
            raise ClusterConfigError(f"{where}: instances {count}, expected >= 0")
        if entry_region != region:
            raise ClusterConfigError(
                f"{where}: region {entry_region!r} differs from the Terraform region {region!r}; "
                "apply terraform/ in the plan's region or re-plan for this one")
        check_instance_type(name, region, catalog, where)
        if count == 0:
            continue
        info = catalog.instance_types[name]
        key = (name, market)
        prev = merged.get(key)
        merged[key] = FleetNode(name, market, count + (prev.instances if prev else 0),
                                info.vcpus, info.mem_gib)
    if not merged:
        raise ClusterConfigError(f"{source}: the fleet has no instance, nothing to launch")
    return sorted(merged.values(), key=lambda n: (n.instance_type, n.market))


def resource_request(fleet: Sequence[FleetNode],
                     cpus_per_node: float | None = None) -> list[dict[str, float]]:
    """Bundles for ``ray.autoscaler.sdk.request_resources(bundles=...)``: one per planned node.

    ``cpus_per_node`` replaces each type's vCPUs (the shrunk nodes of
    :func:`render_fake_multinode_config`).
    """
    return [{"CPU": float(n.vcpus if cpus_per_node is None else cpus_per_node), n.resource: 1.0}
            for n in fleet for _ in range(n.instances)]


def _launcher_defaults() -> dict[str, Any]:
    """Fields Ray's launcher schema requires even when empty."""
    return {"file_mounts": {}, "cluster_synced_files": [], "file_mounts_sync_continuously": False,
            "rsync_exclude": [], "rsync_filter": [], "initialization_commands": [],
            "setup_commands": [], "head_setup_commands": [], "worker_setup_commands": []}


def _start_flags(dashboard_host: str) -> str:
    return " ".join(RAY_PORT_FLAGS + (f"--dashboard-host={dashboard_host}",))


def render_cluster_config(fleet: Sequence[FleetNode], tf: TerraformOutputs,
                          options: ClusterOptions, catalog: PriceCatalog) -> dict[str, Any]:
    """The Ray cluster launcher config (a dict ready for YAML); see the module docstring."""
    check_instance_type(options.head_instance_type, tf.region, catalog, "--head-instance-type")
    if not options.idle_timeout_minutes > 0:
        raise ClusterConfigError(
            f"idle_timeout_minutes {options.idle_timeout_minutes!r}, expected > 0")
    common: dict[str, Any] = {
        "SubnetIds": list(tf.private_subnet_ids),
        "SecurityGroupIds": [tf.security_group_id],
        "MetadataOptions": dict(IMDSV2),
    }
    if options.image_id:
        common["ImageId"] = options.image_id
    head_config = {
        "InstanceType": options.head_instance_type,
        "IamInstanceProfile": {"Arn": tf.head_instance_profile_arn},
        "LaunchTemplate": {"LaunchTemplateId": tf.head_launch_template_id, "Version": "$Latest"},
        **common,
    }
    node_types: dict[str, Any] = {
        "ray.head.default": {"node_config": head_config, "resources": {"CPU": 0}},
    }
    for node in fleet:
        config: dict[str, Any] = {
            "InstanceType": node.instance_type,
            "IamInstanceProfile": {"Arn": tf.worker_instance_profile_arn},
            "LaunchTemplate": {"LaunchTemplateId": tf.worker_launch_template_id,
                               "Version": "$Latest"},
            **common,
        }
        if node.market == "spot":
            config["InstanceMarketOptions"] = {
                "MarketType": "spot",
                "SpotOptions": {"SpotInstanceType": "one-time",
                                "InstanceInterruptionBehavior": "terminate"},
            }
        node_types[node.node_type] = {
            "min_workers": 0,
            "max_workers": node.instances,
            "node_config": config,
            # ~70% of memory for Ray's heap, as Ray itself reserves by default
            "resources": {"CPU": node.vcpus, "memory": int(node.mem_gib * 0.7 * 2**30),
                          node.resource: 1},
        }
    flags = _start_flags(options.dashboard_host)
    doc: dict[str, Any] = {
        "cluster_name": tf.cluster_name,
        "max_workers": sum(n.instances for n in fleet),
        "upscaling_speed": 1.0,
        "idle_timeout_minutes": options.idle_timeout_minutes,
        "provider": {"type": "aws", "region": tf.region, "use_internal_ips": True,
                     "cache_stopped_nodes": False},
        "auth": {"ssh_user": options.ssh_user},
        "available_node_types": node_types,
        "head_node_type": "ray.head.default",
        **_launcher_defaults(),
        "head_start_ray_commands": [
            "ray stop",
            "ulimit -n 65536; ray start --head " + " ".join(HEAD_PORT_FLAGS) + " " + flags
            + " --autoscaling-config=~/ray_bootstrap_config.yaml",
        ],
        "worker_start_ray_commands": [
            "ray stop",
            "ulimit -n 65536; ray start --address=$RAY_HEAD_IP:6379 " + flags,
        ],
    }
    if options.project_dir:
        doc["file_mounts"] = {"~/eochain": options.project_dir}
        doc["setup_commands"] = [
            "cd ~/eochain && python3 -m pip install -q -c constraints.txt -e '.[runtime]'"]
        # the spot-notice watcher that drains this node in Ray (scheduler/cloud/drain.py)
        doc["worker_start_ray_commands"].append(
            "nohup python3 -m scheduler.cloud.drain --address $RAY_HEAD_IP:6379 "
            "> /tmp/eochain-drain.log 2>&1 &")
    return doc



def render_fake_multinode_config(fleet: Sequence[FleetNode], gcs_address: str, *,
                                 cpus_per_node: int = 1,
                                 object_store_bytes: int = 80 * 1024 * 1024,
                                 idle_timeout_minutes: float = 0.1) -> dict[str, Any]:
    """The local twin of :func:`render_cluster_config` on Ray's ``fake_multinode`` provider.

    Same node type names, same custom resources and ``max_workers``, with
    every node shrunk to ``cpus_per_node`` so the plan's fleet can scale up
    and down on one machine (``RAY_FAKE_CLUSTER=1 ray start --head
    --autoscaling-config=...``).
    """
    if cpus_per_node < 1 or object_store_bytes < 78 * 1024 * 1024:
        raise ClusterConfigError(
            f"fake node cpus={cpus_per_node}, object_store_bytes={object_store_bytes}: expected "
            ">= 1 CPU and >= 78 MiB of object store (Ray's minimum)")
    types: dict[str, Any] = {
        "ray.head.default": {"resources": {"CPU": 0}, "node_config": {}, "max_workers": 0},
    }
    for node in fleet:
        types[node.node_type] = {
            "resources": {"CPU": cpus_per_node, node.resource: 1,
                          "object_store_memory": object_store_bytes},
            "node_config": {},
            "min_workers": 0,
            "max_workers": node.instances,
        }
    return {
        "cluster_name": "eochain-local",
        "max_workers": sum(n.instances for n in fleet),
        "upscaling_speed": 1.0,
        "idle_timeout_minutes": idle_timeout_minutes,
        "provider": {"type": "fake_multinode", "gcs_address": gcs_address,
                     "use_node_id_as_ip": True, "disable_node_updaters": True,
                     "disable_launch_config_check": True},
        "auth": {"ssh_user": "ubuntu"},
        "available_node_types": types,
        "head_node_type": "ray.head.default",
        **_launcher_defaults(),
        "head_start_ray_commands": [],
        "worker_start_ray_commands": [],
    }
