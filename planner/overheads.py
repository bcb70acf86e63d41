"""What a campaign costs beyond its workers' compute: the cluster around them.

Counted per simulated run (:mod:`planner.simulator`) from what the run did::

    head      = price(head type, on demand) * makespan
    network   = (NAT gateway + interface endpoints * their zones) * makespan
                + NAT per-GB * setup GB * instances launched
    volumes   = EBS per GiB-month / 730 * GiB per node * (worker node-hours + makespan)
                (worker node-hours include each node's idle timeout before termination)
    requests  = S3 GET * tasks run (inputs) + S3 PUT * output tasks
    storage   = S3 per GB-month / 730 * bytes kept * makespan / 2
    inter_az  = inter-AZ per GB * bytes that tasks read from a node in another zone

The bytes crossing zones are what the run moved: the simulator adds an
edge's bytes each time a task starts on a node in another zone than the node
holding that input (a redone task reads its inputs again). They are 0 for a
single-zone cluster (the default: every node, head included, is pinned to one
subnet by ``eochain cluster-config``). An interface endpoint is billed per
zone it has an interface in (terraform/ puts the SSM endpoints in every
private subnet: ``interface_endpoint_zones``), and the head node has a volume
too. S3 traffic goes through the free gateway endpoint, so only the nodes'
setup downloads cross the NAT.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from planner.errors import CatalogError

HOURS_PER_MONTH = 730.0


@dataclass(frozen=True, slots=True)
class Overheads:
    head_node_type: str = "m7i.xlarge"
    ebs_gib_per_node: float = 100.0
    ebs_usd_per_gib_month: float = 0.08
    nat_gateway_usd_per_h: float = 0.045
    nat_usd_per_gb: float = 0.045
    setup_gb_through_nat_per_node: float = 1.0
    interface_endpoints: float = 3.0
    interface_endpoint_zones: float = 3.0
    interface_endpoint_usd_per_h: float = 0.01
    s3_put_usd_per_1000: float = 0.005
    s3_get_usd_per_1000: float = 0.0004
    s3_storage_usd_per_gb_month: float = 0.023
    inter_az_usd_per_gb: float = 0.02
    #: Seconds an idle worker is kept before the autoscaler terminates it: eochain's
    #: clusters (``eochain cluster-config --idle-timeout-minutes``, default from here).
    #: The runtime shrinks its request as each stage's work runs out, so only nodes it
    #: let go sit idle; Ray's own default is 5 minutes.
    idle_timeout_s: float = 60.0

    @property
    def ebs_usd_per_node_h(self) -> float:
        return self.ebs_usd_per_gib_month * self.ebs_gib_per_node / HOURS_PER_MONTH

    @property
    def cluster_usd_per_h(self) -> float:
        """What runs for the whole campaign whatever the fleet: NAT and endpoints."""
        return (self.nat_gateway_usd_per_h + self.interface_endpoints
                * self.interface_endpoint_zones * self.interface_endpoint_usd_per_h)


@dataclass(frozen=True, slots=True)
class OverheadCost:
    head_usd: float
    network_usd: float
    volumes_usd: float
    requests_usd: float
    storage_usd: float
    inter_az_usd: float

    def as_dict(self) -> dict[str, float]:
        return {"head": self.head_usd, "network": self.network_usd,
                "volumes": self.volumes_usd, "requests": self.requests_usd,
                "storage": self.storage_usd, "inter_az": self.inter_az_usd}


@dataclass(frozen=True, slots=True)
class DagTraffic:
    """What the DAG moves and stores, summed once from its declarations."""

    edge_bytes: float          # bytes read by tasks from other tasks' outputs
    output_bytes: float        # bytes written by tasks nothing downstream reads (products)
    tasks: int
    output_tasks: int


def overhead_cost(o: Overheads, traffic: DagTraffic, *, makespan_s: float, node_s: float,
                  instances: int, head_usd_per_h: float, inter_az_bytes: float = 0.0,
                  tasks_run: int | None = None) -> OverheadCost:
    """The items of the module docstring for one run."""
    if inter_az_bytes < 0:
        raise CatalogError(f"inter_az_bytes = {inter_az_bytes}, expected >= 0")
    hours = makespan_s / 3600
    runs = traffic.tasks if tasks_run is None else tasks_run
    return OverheadCost(
        head_usd=head_usd_per_h * hours,
        network_usd=o.cluster_usd_per_h * hours
        + o.nat_usd_per_gb * o.setup_gb_through_nat_per_node * instances,
        volumes_usd=o.ebs_usd_per_node_h * (node_s / 3600 + hours),
        requests_usd=o.s3_get_usd_per_1000 * runs / 1000
        + o.s3_put_usd_per_1000 * traffic.output_tasks / 1000,
        storage_usd=o.s3_storage_usd_per_gb_month / HOURS_PER_MONTH
        * traffic.output_bytes / 1e9 * hours / 2,
        inter_az_usd=o.inter_az_usd_per_gb * inter_az_bytes / 1e9,
    )


def overheads_from_dict(doc: Mapping[str, Any] | None, source: str) -> Overheads:
    if doc is None:
        return Overheads()
    values: dict[str, Any] = {}
    for name in Overheads.__dataclass_fields__:
        if name not in doc:
            continue
        v = doc[name]
        if name == "head_node_type":
            values[name] = str(v)
            continue
        if (not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v)
                or v < 0):
            raise CatalogError(f"{source}: overheads.{name} = {v!r}, "
                               "expected a non-negative number")
        values[name] = float(v)
    return Overheads(**values)
