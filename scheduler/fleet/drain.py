"""Drain a Ray node on its spot interruption notice.

On every worker, a small daemon (``python -m scheduler.fleet.drain --address
HEAD:6379``, started by the worker start commands that ``eochain
cluster-config`` renders) watches the instance metadata service with
:class:`~scheduler.cloud.imds.InterruptionWatcher`. On a notice it asks Ray's
GCS to drain its own node with reason *preemption* and the notice's deadline:
Ray schedules nothing new there, running tasks may finish, and the node
leaves the cluster gracefully. An optional ``on_drained`` callback is the
runtime's hook to hand back what cannot finish in time
(:func:`~scheduler.cloud.imds.plan_drain`). The runtime's dispatcher learns
of the drain from the GCS itself (:func:`draining_nodes`, read with every
re-read of the cluster), so no hook is needed for it.

Ray's drain call (``GcsClient.drain_node``, also behind the hidden
``ray drain-node`` command) is a developer API; it is wrapped once, in :mod:`scheduler.ray_private`.
"""

from __future__ import annotations

import argparse
import importlib
import math
import socket
import time
from collections.abc import Callable
from typing import Any

from scheduler import ray_private
from scheduler.cloud.errors import CloudError
from scheduler.cloud.imds import (
    DEFAULT_ENDPOINT,
    ImdsClient,
    InterruptionNotice,
    InterruptionWatcher,
)


def drain_ray_node(gcs_address: str, node_id: str, notice: InterruptionNotice,
                   reason_message: str | None = None) -> None:
    """Ask the GCS at ``gcs_address`` to drain ``node_id`` before ``notice.time``."""
    deadline_ms = int(notice.time.timestamp() * 1000)
    message = reason_message or f"spot {notice.action} at {notice.time.isoformat()}"
    try:
        accepted, rejection = ray_private.drain_node(gcs_address, node_id, message,
                                                     deadline_ms)
    except Exception as exc:  # Ray raises RpcError/RuntimeError variants
        raise CloudError(f"draining Ray node {node_id} via {gcs_address} failed: {exc}") from exc
    if not accepted:
        raise CloudError(f"Ray refused to drain node {node_id} via {gcs_address}: {rejection}")


def draining_nodes() -> dict[str, float]:
    """Nodes of the connected cluster that Ray is draining: node id -> deadline (epoch s).

    The GCS keeps every node a drain request was accepted for (the
    :class:`RayNodeDrainer` of its watcher) with the request's deadline; a
    node without a deadline gets ``inf``.
    """
    return {node: (ms / 1000.0 if ms else math.inf)
            for node, ms in ray_private.draining_nodes_ms().items()}


class RayNodeDrainer:
    """An ``on_notice`` callback: drain the node in Ray, then call the runtime's hook."""

    def __init__(self, gcs_address: str, node_id: str,
                 on_drained: Callable[[InterruptionNotice], None] | None = None) -> None:
        self.gcs_address = gcs_address
        self.node_id = node_id
        self.on_drained = on_drained
        self.drained: list[InterruptionNotice] = []

    def __call__(self, notice: InterruptionNotice) -> None:
        drain_ray_node(self.gcs_address, self.node_id, notice)
        self.drained.append(notice)
        if self.on_drained is not None:
            self.on_drained(notice)


def local_node_id(gcs_address: str, ip: str | None = None, timeout_s: float = 120.0) -> str:
    """The Ray node id of the raylet at ``ip`` (this host by default), once it has joined."""
    ray: Any = importlib.import_module("ray")
    ip = ip or socket.gethostbyname(socket.gethostname())
    ray.init(address=gcs_address, log_to_driver=False)
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for node in ray.nodes():
                if node["Alive"] and node["NodeManagerAddress"] == ip:
                    return str(node["NodeID"])
            time.sleep(1.0)
    finally:
        ray.shutdown()
    raise CloudError(f"no live Ray node at {ip} in the cluster at {gcs_address} after "
                     f"{timeout_s:.0f} s")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Drain this Ray node on a spot notice.")
    parser.add_argument("--address", required=True, help="GCS address, HEAD_IP:6379")
    parser.add_argument("--imds", default=DEFAULT_ENDPOINT, help="metadata service URL")
    parser.add_argument("--poll-s", type=float, default=5.0)
    args = parser.parse_args(argv)
    node_id = local_node_id(args.address)
    drainer = RayNodeDrainer(args.address, node_id)
    watcher = InterruptionWatcher(ImdsClient(args.imds), drainer, poll_s=args.poll_s)
    print(f"watching {args.imds} for node {node_id}", flush=True)
    watcher.start()
    while not drainer.drained:
        time.sleep(1.0)
    notice = drainer.drained[0]
    print(f"drained for spot {notice.action} at {notice.time.isoformat()}", flush=True)
    watcher.stop()


if __name__ == "__main__":
    main()
