"""A spot notice from the project's metadata server drains a node of a real local Ray cluster.

Two worker nodes carry the same spot custom resource. Node A's watcher polls
its own IMDSv2 server; the test issues the two-minute notice, and the
:class:`RayNodeDrainer` callback asks Ray's GCS to drain node A (reason
preemption, deadline of the notice). From then on every task lands on node B
and node A leaves the cluster; the runtime's ``on_drained`` hook is called
with the notice.

The cluster and its driver run in a subprocess with its own, consistent Ray
settings (``RAY_AUTH_MODE``), so this test process never connects to Ray.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]

SCRIPT = r"""
import json, threading, time
import ray
from ray.cluster_utils import Cluster
from scheduler.fleet.drain import RayNodeDrainer
from scheduler.cloud.imds import ImdsClient, InterruptionWatcher
from scheduler.testing.imds_server import MetadataServer

MIB = 1024 * 1024
c = Cluster(initialize_head=True, head_node_args={
    "num_cpus": 0, "node_ip_address": "127.0.0.1", "object_store_memory": 80 * MIB,
    "include_dashboard": False})
out = {}
try:
    a, b = [c.add_node(num_cpus=1, node_ip_address="127.0.0.1", object_store_memory=80 * MIB,
                       resources={"c7g.xlarge:spot": 1}) for _ in range(2)]
    ray.init(address=c.address, log_to_driver=False)

    @ray.remote(num_cpus=1, resources={"c7g.xlarge:spot": 1})
    def node_of_task():
        time.sleep(0.02)
        return ray.get_runtime_context().get_node_id()

    def where(n):
        return sorted(set(ray.get([node_of_task.remote() for _ in range(n)])))

    out["nodes"] = {"a": a.node_id, "b": b.node_id}
    out["before"] = where(20)
    hooked = threading.Event()
    seen = []
    drainer = RayNodeDrainer(c.address, a.node_id, lambda n: (seen.append(n), hooked.set()))
    with MetadataServer(instance_id="i-node-a") as imds, \
            InterruptionWatcher(ImdsClient(imds.url), drainer, poll_s=0.05) as watcher:
        imds.issue_interruption(notice_s=120)
        out["hooked"] = hooked.wait(60)
        out["watcher_errors"] = watcher.errors
    out["notices"] = [n.action for n in seen]
    out["after"] = where(20)
    deadline = time.monotonic() + 60
    while any(n["NodeID"] == a.node_id and n["Alive"] for n in ray.nodes()):
        if time.monotonic() > deadline:
            break
        time.sleep(0.2)
    out["a_alive"] = any(n["NodeID"] == a.node_id and n["Alive"] for n in ray.nodes())
finally:
    ray.shutdown()
    c.shutdown()
print("RESULT " + json.dumps(out), flush=True)
"""


def test_notice_drains_the_node(tmp_path: Path) -> None:
    env = dict(os.environ, RAY_AUTH_MODE="disabled", RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0",
               PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, "-c", SCRIPT], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300, check=False)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stdout[-2000:] + proc.stderr[-4000:]
    out = json.loads(lines[-1].removeprefix("RESULT "))
    a, b = out["nodes"]["a"], out["nodes"]["b"]
    assert set(out["before"]) <= {a, b}
    assert out["hooked"] and out["notices"] == ["terminate"] and out["watcher_errors"] == 0
    assert out["after"] == [b]  # nothing new goes to the drained node
    assert out["a_alive"] is False  # and it left the cluster
