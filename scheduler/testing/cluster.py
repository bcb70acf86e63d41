"""Local Ray clusters for the runtime, tests and benchmarks, on the loopback address.

Ray resolves "127.0.0.1" to the machine's routable address unless told it
runs a single-host cluster; on hosts whose routable address is not
reachable (containers, sandboxes) clients then fail to reach the GCS. Setting
``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` before Ray is imported keeps every
address on 127.0.0.1. Ray 2.60's token authentication stays off for these
local clusters (``RAY_AUTH_MODE`` is left as the caller set it, identical for
the cluster and its clients since they share this environment).

:class:`LocalCluster` wraps ``ray.cluster_utils.Cluster``: a head with no
CPUs (it only coordinates, like a cloud head node) and worker nodes whose
custom resources name instance type and market (``{"c7g.large:spot": 1}``),
so nodes can be removed at will to simulate spot interruptions.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

from scheduler.ray_private import use_loopback

LOOPBACK = "127.0.0.1"


@dataclass(frozen=True, slots=True)
class NodeSpec:
    """A worker node: CPUs, object store bytes, custom resources (type and market)."""

    num_cpus: int = 1
    object_store_bytes: int = 80 * 1024 * 1024
    resources: Mapping[str, float] = field(default_factory=dict)


class LocalCluster:
    """A multi-node Ray cluster on this machine; ``with LocalCluster(...) as c:`` connects."""

    def __init__(
        self,
        nodes: list[NodeSpec],
        head_object_store_bytes: int = 100 * 1024 * 1024,
        connect: bool = True,
    ) -> None:
        use_loopback()
        self.specs = nodes
        self.head_object_store_bytes = head_object_store_bytes
        self.connect = connect
        self.cluster: Any = None
        self.nodes: list[Any] = []

    def __enter__(self) -> Self:
        import ray
        from ray.cluster_utils import Cluster

        self.cluster = Cluster(
            initialize_head=True,
            head_node_args={
                "num_cpus": 0,
                "node_ip_address": LOOPBACK,
                "object_store_memory": self.head_object_store_bytes,
                "include_dashboard": False,
                # notice a killed node within ~5 s instead of the default ~30 s, with
                # enough slack that a busy (shared, 2-core) machine does not look dead
                "_system_config": {
                    "health_check_initial_delay_ms": 1000,
                    "health_check_period_ms": 1000,
                    "health_check_timeout_ms": 2000,
                    "health_check_failure_threshold": 5,
                },
            },
        )
        for spec in self.specs:
            self.add_node(spec)
        if self.connect:
            if ray.is_initialized():
                ray.shutdown()  # a connection left by earlier code in this process
            ray.init(address=self.cluster.address, log_to_driver=False)
        return self

    @property
    def address(self) -> str:
        return str(self.cluster.address)

    def add_node(self, spec: NodeSpec) -> Any:
        node = self.cluster.add_node(
            num_cpus=spec.num_cpus,
            node_ip_address=LOOPBACK,
            object_store_memory=spec.object_store_bytes,
            resources=dict(spec.resources),
        )
        self.nodes.append(node)
        return node

    def remove_node(self, node: Any) -> None:
        """Kill a worker node abruptly, as a spot interruption would."""
        self.cluster.remove_node(node, allow_graceful=False)
        self.nodes.remove(node)

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        import ray

        if self.connect:
            ray.shutdown()
        self.cluster.shutdown()
