"""A spot notice from the project's metadata server drains a node of a real local Ray cluster.

Two worker nodes carry the same spot custom resource. Node A's watcher polls
its own IMDSv2 server; the test issues the two-minute notice, and the
:class:`RayNodeDrainer` callback asks Ray's GCS to drain node A (reason
preemption, deadline of the notice). From then on every task lands on node B
and node A leaves the cluster; the runtime's ``on_drained`` hook is called
with the notice.
"""

from __future__ import annotations

import importlib
import os
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from scheduler.cloud.drain import RayNodeDrainer
from scheduler.cloud.imds import ImdsClient, InterruptionNotice, InterruptionWatcher
from scheduler.cloud.imds_server import MetadataServer

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MIB = 1024 * 1024


@pytest.fixture(scope="module")
def cluster() -> Iterator[tuple[Any, Any, Any]]:
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    ray: Any = importlib.import_module("ray")
    Cluster: Any = importlib.import_module("ray.cluster_utils").Cluster

    c = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 0, "node_ip_address": "127.0.0.1", "object_store_memory": 80 * MIB,
        "include_dashboard": False})
    nodes = [c.add_node(num_cpus=1, node_ip_address="127.0.0.1", object_store_memory=80 * MIB,
                        resources={"c7g.xlarge:spot": 1}) for _ in range(2)]
    ray.init(address=c.address, log_to_driver=False)
    try:
        yield c, nodes[0], nodes[1]
    finally:
        ray.shutdown()
        c.shutdown()


def _where(n: int) -> set[str]:
    ray: Any = importlib.import_module("ray")

    def node_of_task() -> str:
        time.sleep(0.02)
        return str(ray.get_runtime_context().get_node_id())

    task = ray.remote(num_cpus=1, resources={"c7g.xlarge:spot": 1})(node_of_task)
    return set(ray.get([task.remote() for _ in range(n)]))


def test_notice_drains_the_node(cluster: tuple[Any, Any, Any]) -> None:
    ray: Any = importlib.import_module("ray")

    c, a, b = cluster
    assert _where(20) <= {a.node_id, b.node_id}
    hooked = threading.Event()
    seen: list[InterruptionNotice] = []

    def on_drained(notice: InterruptionNotice) -> None:
        seen.append(notice)
        hooked.set()

    drainer = RayNodeDrainer(c.address, a.node_id, on_drained)
    with MetadataServer(instance_id="i-node-a") as imds, \
            InterruptionWatcher(ImdsClient(imds.url), drainer, poll_s=0.05) as watcher:
        imds.issue_interruption(notice_s=120)
        assert hooked.wait(30), f"no drain; watcher errors: {watcher.last_error}"
    assert len(drainer.drained) == 1 and seen[0].action == "terminate"
    assert _where(20) == {b.node_id}  # nothing new goes to the drained node
    deadline = time.monotonic() + 60
    while any(n["NodeID"] == a.node_id and n["Alive"] for n in ray.nodes()):
        assert time.monotonic() < deadline, "drained node did not leave the cluster"
        time.sleep(0.2)

