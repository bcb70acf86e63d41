"""Render a Ray cluster launcher config for AWS from a plan and the Terraform outputs.

The plan (a :class:`planner.plan_document.PlanDocument`, read from
``plan.json`` by :func:`planner.plan_document.read_plan`) names a fleet:
instance types, markets and counts; a malformed plan is the reader's
:class:`~planner.errors.PlanError`. Each (type, market) pair becomes one entry of
``available_node_types``:

- ``node_config``: the instance type, spot via ``InstanceMarketOptions``, the
  private subnet of its zone, security group and worker instance profile from Terraform,
  the worker launch template (IMDSv2, encrypted root volume), and IMDSv2
  options repeated on the request so they hold even without the template;
- ``min_workers`` 0 and ``max_workers`` the plan's count: the runtime asks for
  the fleet with :func:`resource_request` (``ray.autoscaler.sdk.request_resources``)
  and the autoscaler lets idle nodes go;
- ``resources``: the vCPUs and a custom resource ``"TYPE:MARKET": 1`` that
  the runtime's actor pools use to place work on that kind of node.

Zones: the plan decides them (``zones`` in ``plan.json``, the simulator's
round-robin spread) and the config enforces them. Each node type names one
subnet: with one zone, the head and every worker are in the first private
subnet (Terraform's first zone, where its NAT gateway is), so no
intermediate crosses zones; a fleet spread over ``k`` zones becomes one node
type per (type, market, zone), ``TYPE-MARKET-zN`` in the N-th subnet with
its round-robin share as ``max_workers`` (:func:`zone_shares`), all with the
same ``"TYPE:MARKET"`` resource and each with its zone's
(``eochain-zone-N``, :func:`zone_resource`): the runtime asks for each zone's
share by both (:func:`resource_request`), so the autoscaler launches the
zones the plan priced even when the request shrinks, and the runtime can
tell a node's zone from its resources. Listing several subnets
instead would not spread: Ray's AWS launcher puts every node in the first
and tries the next only when a launch fails (ray-project/ray#19051), which
would leave a spread plan in one zone, and a one-zone plan partly elsewhere
after a capacity error, paying inter-zone traffic the plan did not count.
A node type pinned to its subnet waits for its zone's capacity instead, as
the simulator's pools do (and the spot fallback of
:mod:`scheduler.fleet.fallback` replaces a pool that keeps failing).

Fallbacks. The runtime may move a flapping spot pool's work to one of its
:func:`~scheduler.fleet.fallback.fallback_pools`, asking for as many nodes of
it as the pool had; a fallback pool may flap in turn and pass its work on.
:func:`fallback_nodes` follows those chains from every spot pool of the fleet
and renders each pool reached as a node type too (``min_workers`` 0: nothing
is launched unless the runtime asks), capped at the nodes of the fleet's spot
pools that can reach it; a pool that is also in the fleet gets the sum. So a
plan that falls back runs on the config as rendered. The cluster's
``max_workers`` stays the fleet's: a fallback replaces nodes, it adds none.

Live re-plans. ``eochain run --replan`` may ask for any pool of the plan's
``replan`` section (:func:`planner.replan.replan_limits`: the offers of the
region a stage fits, each capped by the campaign's instances per type and
vCPU quota). :func:`replan_nodes` renders each of them too (``min_workers``
0, ``max_workers`` its cap, with the fallbacks of its spot pools), a pool
already rendered keeping the larger cap, and the cluster's ``max_workers``
becomes the larger of the fleet's and the re-plans' (the quota's), so any
re-plan deploys on the config as rendered.

Every node type gets an AMI of its own architecture (the catalog's ``arch``
of its instance type, head included): ``--image-id ARCH=AMI`` first, then
the Terraform output ``ami_ids`` (Ubuntu 24.04 from the public SSM parameter,
see ``terraform/compute.tf``), else ``resolve:ssm:`` of that same public
parameter, which EC2 resolves at launch. Workers use the launch template of
their architecture (``worker_launch_template_ids``).

Setup installs the exact eochain build: a wheel of the checkout and its
``constraints.txt`` (:mod:`scheduler.cloud.bundle`), the only thing synced,
into a Python 3.12 venv with Ray at the client's version. Every worker also
starts the spot-notice watcher of :mod:`scheduler.fleet.drain`. The head
node only coordinates (``CPU: 0``). Ray's ports are pinned to the ones
``terraform/security_groups.tf`` opens within the cluster, and the
dashboard (job server) binds to 127.0.0.1 unless asked otherwise: reach it
through ``ray dashboard cluster.yaml`` (SSH through SSM Session Manager:
``auth.ssh_proxy_command``, as nodes have no public IP).

One Ray cluster runs in one region. A plan whose fleet spans several
regions is rendered one config per region (``--region R`` with that region's
Terraform outputs); the runtime runs a campaign on one cluster only, so such
a plan is for comparison: to run it, re-plan with ``compute.regions: [R]``.
Every value pasted into a shell command is shell-quoted, and counts are
checked to be integers in ``[0, MAX_INSTANCES_PER_TYPE]``.

Nothing here calls AWS: instance types are checked against the shipped price
catalog, so a plan naming a type the region lacks fails with "did you mean".
"""

from __future__ import annotations

import difflib
import math
import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from planner.catalog import PriceCatalog
from planner.plan_document import DEFAULT_SOURCE, PlanDocument, as_plan_document
from scheduler.cloud.bundle import REMOTE_DIR as REMOTE_BUNDLE
from scheduler.cloud.bundle import VENV, Bundle, setup_commands
from scheduler.cloud.errors import ClusterConfigError, TerraformOutputsError
from scheduler.cloud.terraform_outputs import (
    ARCHS,
    OPTIONAL_OUTPUTS,
    REQUIRED_OUTPUTS,
    TerraformOutputs,
    load_terraform_outputs,
    short,
    terraform_outputs_from_dict,
)
from scheduler.fleet.departures import ZONE_RESOURCE_PREFIX
from scheduler.fleet.fallback import fallback_pools

# The Terraform side is re-exported: callers read outputs and render from one module.
__all__ = ["ARCHS", "OPTIONAL_OUTPUTS", "REQUIRED_OUTPUTS", "ClusterOptions", "FleetNode",
           "TerraformOutputs", "fallback_nodes", "fleet_from_plan", "load_terraform_outputs", "plan_regions",
           "render_cluster_config", "render_fake_multinode_config", "replan_nodes",
           "resolve_image_ids", "resource_request", "ssm_proxy_command",
           "terraform_outputs_from_dict", "zone_resource", "zone_shares"]


#: Public SSM parameters of Canonical's Ubuntu 24.04 AMIs (Python 3.12), per architecture.
UBUNTU_AMI_PARAMETER = {
    "x86_64": "/aws/service/canonical/ubuntu/server/24.04/stable/current/amd64/hvm/ebs-gp3/ami-id",
    "arm64": "/aws/service/canonical/ubuntu/server/24.04/stable/current/arm64/hvm/ebs-gp3/ami-id",
}
MAX_INSTANCES_PER_TYPE = 1000
MAX_IDLE_TIMEOUT_MINUTES = 24 * 60
_AMI = re.compile(r"ami-[0-9a-f]{8,17}")
_HOST = re.compile(r"[0-9A-Za-z.:-]{1,64}")

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
class FleetNode:
    """One (instance type, market) entry of the plan's fleet."""

    instance_type: str
    market: str
    instances: int
    vcpus: int
    mem_gib: float
    arch: str = "x86_64"

    @property
    def resource(self) -> str:
        """The custom resource naming type and market, as the runtime's actor pools use it."""
        return f"{self.instance_type}:{self.market}"

    @property
    def node_type(self) -> str:
        return f"{self.instance_type}-{self.market}"


@dataclass(frozen=True, slots=True)
class ClusterOptions:
    """How to render: the node image and setup, the head, access and idle policy.

    ``image_ids`` maps an architecture (``x86_64``, ``arm64``) to the AMI that
    overrides the Terraform output and the public parameter for it.
    """

    bundle: Bundle
    head_instance_type: str = "m7i.xlarge"
    image_ids: Mapping[str, str] = field(default_factory=dict)
    ssh_user: str = "ubuntu"
    dashboard_host: str = "127.0.0.1"
    idle_timeout_minutes: float = 1.0    # the catalog's overheads.idle_timeout_s
    python: str = "python3.12"
    ssh_through_ssm: bool = True

    def __post_init__(self) -> None:
        for arch, ami in self.image_ids.items():
            if arch not in ARCHS:
                raise ClusterConfigError(
                    f"--image-id {arch}={ami}: architecture {arch!r}, expected one of {ARCHS}")
            if not _AMI.fullmatch(ami):
                raise ClusterConfigError(
                    f"--image-id {arch}={short(ami)}: expected an AMI id like ami-0123456789abcdef0")
        if not (isinstance(self.idle_timeout_minutes, (int, float))
                and math.isfinite(self.idle_timeout_minutes)
                and 0 < self.idle_timeout_minutes <= MAX_IDLE_TIMEOUT_MINUTES):
            raise ClusterConfigError(
                f"--idle-timeout-minutes {self.idle_timeout_minutes!r}: expected a number in "
                f"(0, {MAX_IDLE_TIMEOUT_MINUTES}]")
        if not _HOST.fullmatch(self.dashboard_host):
            raise ClusterConfigError(
                f"--dashboard-host {short(self.dashboard_host)}: expected an IP address or "
                "host name such as 127.0.0.1")
        if not re.fullmatch(r"[a-z_][a-z0-9_-]{0,31}", self.ssh_user):
            raise ClusterConfigError(
                f"--ssh-user {short(self.ssh_user)}: expected a Unix user name such as ubuntu")


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


def _check_instances(count: int, where: str) -> None:
    if count > MAX_INSTANCES_PER_TYPE:
        raise ClusterConfigError(
            f"{where}: instances {count}, expected 0 to {MAX_INSTANCES_PER_TYPE}")


def plan_regions(plan: PlanDocument | Mapping[str, Any],
                 source: str = DEFAULT_SOURCE) -> dict[str, int]:
    """Planned instances per region of the plan's fleet (entries without a region are skipped)."""
    doc = as_plan_document(plan, source)
    out: dict[str, int] = {}
    for i, entry in enumerate(doc.fleet):
        if entry.region is not None:
            _check_instances(entry.instances, f"{doc.origin}: fleet[{i}]")
            out[entry.region] = out.get(entry.region, 0) + entry.instances
    return out


def fleet_from_plan(plan: PlanDocument | Mapping[str, Any], region: str, catalog: PriceCatalog,
                    source: str = DEFAULT_SOURCE, *, other_regions: str = "refuse"
                    ) -> list[FleetNode]:
    """The plan's fleet in ``region``, merged per (type, market), checked against the catalog.

    An entry in another region is refused (``other_regions="refuse"``: the
    runtime runs on one cluster) or left to that region's cluster (``"skip"``,
    one cluster config per region). A malformed plan is a PlanError.
    """
    if other_regions not in ("refuse", "skip"):
        raise ValueError(f"other_regions={other_regions!r}, expected 'refuse' or 'skip'")
    doc = as_plan_document(plan, source)
    merged: dict[tuple[str, str], FleetNode] = {}
    for i, entry in enumerate(doc.fleet):
        where = f"{doc.origin}: fleet[{i}]"
        name, market, count = entry.instance_type, entry.market, entry.instances
        _check_instances(count, where)
        entry_region = region if entry.region is None else entry.region
        if entry_region != region:
            if other_regions == "skip":
                continue
            raise ClusterConfigError(
                f"{where}: region {entry_region!r} differs from the cluster's region {region!r}; "
                "one Ray cluster runs in one region: re-plan with `compute.regions: "
                f"[{region}]`, or render one config per region with `eochain cluster-config "
                "--region R`")
        check_instance_type(name, region, catalog, where)
        if count == 0:
            continue
        info = catalog.instance_types[name]
        key = (name, market)
        prev = merged.get(key)
        total = count + (prev.instances if prev else 0)
        if total > MAX_INSTANCES_PER_TYPE:
            raise ClusterConfigError(
                f"{where}: {total} instances of {name} ({market}) in all, expected at most "
                f"{MAX_INSTANCES_PER_TYPE}")
        merged[key] = FleetNode(name, market, total, info.vcpus, info.mem_gib, info.arch)
    if not merged:
        raise ClusterConfigError(
            f"{doc.origin}: the fleet has no instance in {region}, nothing to launch")
    return sorted(merged.values(), key=lambda n: (n.instance_type, n.market))


def fallback_nodes(fleet: Sequence[FleetNode], region: str, catalog: PriceCatalog
                   ) -> list[FleetNode]:
    """The fallback pools the fleet's spot pools may move to, and theirs (module docstring).

    Each is a :class:`FleetNode` whose ``instances`` is the most the runtime
    may ask of it: the nodes of the fleet's spot pools whose fallback chains
    reach it. Pools of the fleet itself are not repeated unless reached.
    """
    sources: dict[tuple[str, str], set[tuple[str, str]]] = {}
    for node in fleet:
        if node.market != "spot":
            continue
        start = (node.instance_type, node.market)
        seen = {start}
        frontier = [start]
        while frontier:
            itype, market = frontier.pop()
            for pool in fallback_pools(itype, market, region, catalog):
                sources.setdefault(pool, set()).add(start)
                if pool not in seen and pool[1] == "spot":
                    seen.add(pool)
                    frontier.append(pool)
    count = {(n.instance_type, n.market): n.instances for n in fleet}
    out = []
    for (itype, market), starts in sorted(sources.items()):
        info = catalog.instance_types[itype]
        instances = min(MAX_INSTANCES_PER_TYPE, sum(count[s] for s in starts))
        out.append(FleetNode(itype, market, instances, info.vcpus, info.mem_gib, info.arch))
    return out


def replan_nodes(plan: PlanDocument | Mapping[str, Any], region: str, catalog: PriceCatalog,
                 source: str = DEFAULT_SOURCE) -> tuple[list[FleetNode], int]:
    """The pools of the plan's ``replan`` section (module docstring), checked against the
    catalog, each with its cap; and the most nodes a re-plan may hold in all. A plan without
    the section (older, or typed by hand): none, 0."""
    doc = as_plan_document(plan, source)
    if doc.replan is None:
        return [], 0
    out = []
    for i, pool in enumerate(doc.replan.pools):
        where = f"{doc.origin}: replan.pools[{i}]"
        check_instance_type(pool.instance_type, region, catalog, where)
        _check_instances(pool.max_instances, where)
        if pool.max_instances:
            info = catalog.instance_types[pool.instance_type]
            out.append(FleetNode(pool.instance_type, pool.market, pool.max_instances,
                                 info.vcpus, info.mem_gib, info.arch))
    return out, doc.replan.max_instances


def _widest(*groups: Sequence[FleetNode]) -> list[FleetNode]:
    """Per (type, market), the node with the largest cap among ``groups``."""
    merged: dict[tuple[str, str], FleetNode] = {}
    for node in (n for group in groups for n in group):
        key = (node.instance_type, node.market)
        if key not in merged or node.instances > merged[key].instances:
            merged[key] = node
    return sorted(merged.values(), key=lambda n: (n.instance_type, n.market))


def _launchable(fleet: Sequence[FleetNode], fallbacks: Sequence[FleetNode]) -> list[FleetNode]:
    """The fleet's nodes and its fallbacks', merged per (type, market): each node type's cap."""
    merged: dict[tuple[str, str], FleetNode] = {}
    for node in (*fleet, *fallbacks):
        key = (node.instance_type, node.market)
        prev = merged.get(key)
        total = min(MAX_INSTANCES_PER_TYPE, node.instances + (prev.instances if prev else 0))
        merged[key] = FleetNode(node.instance_type, node.market, total, node.vcpus,
                                node.mem_gib, node.arch)
    return sorted(merged.values(), key=lambda n: (n.instance_type, n.market))


def zone_shares(instances: int, zones: int) -> list[int]:
    """Instances per zone when ``instances`` are spread round-robin over ``zones``.

    The simulator (:mod:`planner.simulator`) spreads a fleet entry so; the
    cluster config caps each zone's node type at its share.
    """
    if zones < 1:
        raise ClusterConfigError(f"zones {zones!r}, expected a whole number >= 1")
    return [len(range(z, instances, zones)) for z in range(zones)]


def _zone_tag(zone: int, zones: int) -> dict[str, int]:
    """A spread plan's node type carries its zone's resource; a one-zone plan's none."""
    return {zone_resource(zone): 1} if zones > 1 else {}


def _zoned_node_types(fleet: Sequence[FleetNode], zones: int
                      ) -> list[tuple[str, FleetNode, int, int]]:
    """(node type name, node, max_workers, zone index) of each worker node type."""
    out = []
    for node in fleet:
        if zones == 1:
            out.append((node.node_type, node, node.instances, 0))
            continue
        for z, share in enumerate(zone_shares(node.instances, zones)):
            if share:
                out.append((f"{node.node_type}-z{z}", node, share, z))
    return out


def zone_resource(zone: int) -> str:
    """The custom resource of a spread plan's node types in the ``zone``-th subnet."""
    return f"{ZONE_RESOURCE_PREFIX}{zone}"


def resource_request(fleet: Sequence[FleetNode], zones: int = 1) -> list[dict[str, float]]:
    """Bundles for ``ray.autoscaler.sdk.request_resources(bundles=...)``: one per planned node.

    A bundle is one unit of the node's ``"TYPE:MARKET"`` resource, of which
    every node of that type carries exactly one: the request counts nodes,
    whatever their CPUs, so it fits the real types and the shrunk nodes of
    :func:`render_fake_multinode_config` alike. A plan spread over ``zones``
    asks for each zone's share (:func:`zone_shares`) with that zone's
    resource too (:func:`zone_resource`), so the autoscaler launches the
    zones the plan priced, also when the request shrinks.
    """
    if zones == 1:
        return [{n.resource: 1.0} for n in fleet for _ in range(n.instances)]
    return [{n.resource: 1.0, zone_resource(z): 1.0} for n in fleet
            for z, share in enumerate(zone_shares(n.instances, zones)) for _ in range(share)]


def _launcher_defaults() -> dict[str, Any]:
    """Fields Ray's launcher schema requires even when empty."""
    return {"file_mounts": {}, "cluster_synced_files": [], "file_mounts_sync_continuously": False,
            "rsync_exclude": [], "rsync_filter": [], "initialization_commands": [],
            "setup_commands": [], "head_setup_commands": [], "worker_setup_commands": []}


def _start_flags(dashboard_host: str) -> str:
    return " ".join(RAY_PORT_FLAGS + (shlex.quote(f"--dashboard-host={dashboard_host}"),))


def resolve_image_ids(archs: Sequence[str], tf: TerraformOutputs,
                      overrides: Mapping[str, str]) -> dict[str, str]:
    """The AMI of each architecture: ``overrides``, else Terraform's ``ami_ids``, else SSM."""
    out: dict[str, str] = {}
    for arch in sorted(set(archs)):
        if arch not in ARCHS:
            raise ClusterConfigError(
                f"architecture {arch!r} of the catalog has no AMI rule, expected one of {ARCHS}")
        out[arch] = (overrides.get(arch) or tf.ami_ids.get(arch)
                     or f"resolve:ssm:{UBUNTU_AMI_PARAMETER[arch]}")
    return out


def ssm_proxy_command(region: str) -> str:
    """SSH's ProxyCommand through SSM Session Manager to the node whose private IP is ``%h``."""
    r = shlex.quote(region)
    find = (f"aws ec2 describe-instances --region {r} --filters Name=private-ip-address,Values=%h "
            "Name=instance-state-name,Values=running "
            "--query 'Reservations[0].Instances[0].InstanceId' --output text")
    return (f"sh -c \"aws ssm start-session --region {r} --target $({find}) "
            "--document-name AWS-StartSSHSession --parameters portNumber=%p\"")


def render_cluster_config(fleet: Sequence[FleetNode], tf: TerraformOutputs,
                          options: ClusterOptions, catalog: PriceCatalog,
                          ray_version: str | None = None, *, zones: int = 1,
                          replan: Sequence[FleetNode] = (), replan_max_instances: int = 0
                          ) -> dict[str, Any]:
    """The Ray cluster launcher config (a dict ready for YAML); see the module docstring.

    ``ray_version`` is the Ray the nodes install, by default the client's;
    ``zones`` is the plan's (``PlanDocument.zones``); ``replan`` and
    ``replan_max_instances`` what live re-plans may ask for (:func:`replan_nodes`).
    """
    check_instance_type(options.head_instance_type, tf.region, catalog, "--head-instance-type")
    subnets = list(tf.private_subnet_ids)
    if not 1 <= zones <= len(subnets):
        raise ClusterConfigError(
            f"the plan spreads its fleet over {zones} zone(s), the Terraform outputs have "
            f"{len(subnets)} private subnet(s) ({', '.join(subnets)}); expected 1 to "
            f"{len(subnets)}: apply terraform/ with at least {zones} availability_zone_suffixes, "
            "or re-plan")
    if ray_version is None:
        import ray

        ray_version = ray.__version__
    head_arch = catalog.instance_types[options.head_instance_type].arch
    nodes = _widest(_launchable(fleet, fallback_nodes(fleet, tf.region, catalog)),
                    _launchable(replan, fallback_nodes(replan, tf.region, catalog)))
    images = resolve_image_ids([head_arch, *(n.arch for n in nodes)], tf, options.image_ids)
    missing = sorted({n.arch for n in nodes} - set(tf.worker_launch_template_ids))
    if missing:
        raise TerraformOutputsError(
            f"Terraform output worker_launch_template_ids has no template for {missing} "
            f"(has {sorted(tf.worker_launch_template_ids)}); apply the current terraform/")
    common: dict[str, Any] = {
        "SecurityGroupIds": [tf.security_group_id],
        "MetadataOptions": dict(IMDSV2),
    }
    head_config = {
        "InstanceType": options.head_instance_type,
        "ImageId": images[head_arch],
        "IamInstanceProfile": {"Arn": tf.head_instance_profile_arn},
        "LaunchTemplate": {"LaunchTemplateId": tf.head_launch_template_id, "Version": "$Latest"},
        "SubnetIds": subnets[:1],
        **common,
    }
    node_types: dict[str, Any] = {
        "ray.head.default": {"node_config": head_config, "resources": {"CPU": 0}},
    }
    for name, node, max_workers, zone in _zoned_node_types(nodes, zones):
        config: dict[str, Any] = {
            "InstanceType": node.instance_type,
            "ImageId": images[node.arch],
            "IamInstanceProfile": {"Arn": tf.worker_instance_profile_arn},
            "LaunchTemplate": {"LaunchTemplateId": tf.worker_launch_template_ids[node.arch],
                               "Version": "$Latest"},
            "SubnetIds": [subnets[zone]],
            **common,
        }
        if node.market == "spot":
            config["InstanceMarketOptions"] = {
                "MarketType": "spot",
                "SpotOptions": {"SpotInstanceType": "one-time",
                                "InstanceInterruptionBehavior": "terminate"},
            }
        node_types[name] = {
            "min_workers": 0,
            "max_workers": max_workers,
            "node_config": config,
            # ~70% of memory for Ray's heap, as Ray itself reserves by default
            "resources": {"CPU": node.vcpus, "memory": int(node.mem_gib * 0.7 * 2**30),
                          node.resource: 1, **_zone_tag(zone, zones)},
        }
    flags = _start_flags(options.dashboard_host)
    ray_exe = f"{VENV}/bin/ray"
    auth: dict[str, Any] = {"ssh_user": options.ssh_user}
    if options.ssh_through_ssm:
        auth["ssh_proxy_command"] = ssm_proxy_command(tf.region)
    doc: dict[str, Any] = {
        "cluster_name": tf.cluster_name,
        # a fallback replaces nodes, never adds any; a live re-plan may hold up to its limits
        "max_workers": max(sum(n.instances for n in fleet), replan_max_instances),
        "upscaling_speed": 1.0,
        "idle_timeout_minutes": options.idle_timeout_minutes,
        "provider": {"type": "aws", "region": tf.region, "use_internal_ips": True,
                     "cache_stopped_nodes": False},
        "auth": auth,
        "available_node_types": node_types,
        "head_node_type": "ray.head.default",
        **_launcher_defaults(),
        # only the wheel and its pins travel: never the checkout (a .venv is GBs)
        "file_mounts": {REMOTE_BUNDLE: str(options.bundle.folder.resolve())},
        "setup_commands": setup_commands(options.bundle, ray_version, options.python),
        "head_start_ray_commands": [
            f"{ray_exe} stop",
            f"ulimit -n 65536; {ray_exe} start --head " + " ".join(HEAD_PORT_FLAGS) + " "
            + flags + " --autoscaling-config=~/ray_bootstrap_config.yaml",
        ],
        "worker_start_ray_commands": [
            f"{ray_exe} stop",
            f"ulimit -n 65536; {ray_exe} start --address=$RAY_HEAD_IP:6379 " + flags,
            # the spot-notice watcher that drains this node in Ray (scheduler/fleet/drain.py)
            (f"nohup {VENV}/bin/python -m scheduler.fleet.drain --address $RAY_HEAD_IP:6379 "
            "> /tmp/eochain-drain.log 2>&1 &"),
        ],
    }
    return doc


def render_fake_multinode_config(fleet: Sequence[FleetNode], gcs_address: str, *,
                                 cpus_per_node: int = 1,
                                 object_store_bytes: int = 80 * 1024 * 1024,
                                 idle_timeout_minutes: float = 0.1,
                                 zones: int = 1,
                                 fallbacks: Sequence[FleetNode] = ()) -> dict[str, Any]:
    """The local twin of :func:`render_cluster_config` on Ray's ``fake_multinode`` provider.

    Same node type names (per zone too), custom resources and ``max_workers``
    (with ``fallbacks``, e.g. :func:`fallback_nodes`), with every node shrunk
    to ``cpus_per_node`` so the plan's fleet can scale up and down on one
    machine (``RAY_FAKE_CLUSTER=1 ray start --head --autoscaling-config=...``).
    """
    if cpus_per_node < 1 or object_store_bytes < 78 * 1024 * 1024:
        raise ClusterConfigError(
            f"fake node cpus={cpus_per_node}, object_store_bytes={object_store_bytes}: expected "
            ">= 1 CPU and >= 78 MiB of object store (Ray's minimum)")
    types: dict[str, Any] = {
        "ray.head.default": {"resources": {"CPU": 0}, "node_config": {}, "max_workers": 0},
    }
    nodes = _launchable(fleet, fallbacks)
    for name, node, max_workers, zone in _zoned_node_types(nodes, zones):
        types[name] = {
            "resources": {"CPU": cpus_per_node, node.resource: 1,
                          "object_store_memory": object_store_bytes, **_zone_tag(zone, zones)},
            "node_config": {},
            "min_workers": 0,
            "max_workers": max_workers,
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
