"""Every private Ray API eochain uses, in one place: what to check when Ray is upgraded.

Ray 2.x offers no public API for these; each wrapper names what it reaches
into. Nothing else in planner, ops or scheduler names ``ray._private``,
``ray._raylet``, ``ray.experimental``, ``ray.autoscaler._private`` or
``ray.core.generated`` (tests/unit/test_architecture.py keeps it so).
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


def internal_kv_put(key: str, value: bytes, *, overwrite: bool = True) -> None:
    """Put ``key`` in the cluster's internal KV (``ray.experimental.internal_kv``)."""
    kv: Any = importlib.import_module("ray.experimental.internal_kv")
    kv._internal_kv_put(key, value, overwrite=overwrite)


def internal_kv_get(key: str) -> bytes | None:
    """The value of ``key`` in the cluster's internal KV, or None."""
    kv: Any = importlib.import_module("ray.experimental.internal_kv")
    value = kv._internal_kv_get(key)
    return bytes(value) if value is not None else None


def drain_node(gcs_address: str, node_id: str, message: str, deadline_ms: int
               ) -> tuple[bool, str]:
    """Ask the GCS to drain ``node_id`` for a preemption by ``deadline_ms``: (accepted, rejection).

    ``ray._raylet.GcsClient.drain_node`` with ``DRAIN_NODE_REASON_PREEMPTION``.
    """
    raylet: Any = importlib.import_module("ray._raylet")
    autoscaler_pb2: Any = importlib.import_module("ray.core.generated.autoscaler_pb2")
    client = raylet.GcsClient(address=gcs_address)
    accepted, rejection = client.drain_node(
        node_id, autoscaler_pb2.DrainNodeReason.Value("DRAIN_NODE_REASON_PREEMPTION"),
        message, deadline_ms)
    return bool(accepted), str(rejection)


def draining_nodes_ms() -> dict[str, int]:
    """Nodes the GCS is draining: node id -> deadline (epoch ms, 0 when none); ``ray._private.state``."""
    state: Any = importlib.import_module("ray._private.state").state
    return {str(node): int(ms or 0) for node, ms in state.get_draining_nodes().items()}


def memory_summary(gcs_address: str, *, stats_only: bool = True) -> str:
    """Ray's object-store usage report (``ray._private.internal_api.memory_summary``)."""
    internal_api: Any = importlib.import_module("ray._private.internal_api")
    return str(internal_api.memory_summary(gcs_address, stats_only=stats_only))


def use_loopback() -> None:
    """Keep Ray on 127.0.0.1, for this process and the Ray processes it starts.

    Ray reads the variable once, when ``ray._private.ray_constants`` is
    imported; if something imported Ray earlier (another test module, a
    library), the constant it read is overridden too, so the result does
    not depend on import order.
    """
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    constants = sys.modules.get("ray._private.ray_constants")
    if constants is not None and os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] == "0":
        setattr(constants, "ENABLE_RAY_CLUSTER", False)  # noqa: B010 - a module constant


#: Ray's background polling, slowed in a local instance that one command starts for itself
#: (no dashboard, workers' logs not sent to the driver), where nothing reads what it polls:
#: the log monitor lists the logs folder every 0.5 s instead of at each 0.1 s poll, and the
#: dashboard agent collects every worker's stats (psutil, for the Ray dashboard and its
#: ``ray_node_*`` metrics; eochain's dashboards read none of them) every 30 s instead of 5.
#: ``python -m benchmarks.campaign_efficiency --repeat 3`` (2 cores, 8 scenes; Ray's defaults
#: set explicitly, then these), medians: Ray's daemons 1.78 -> 1.10 CPU-s during the
#: command, CPU share 0.914 [0.901-0.916] -> 0.919 [0.906-0.924]. A 2-core Ray left idle
#: for 30 s: the log monitor 0.18-0.20 -> 0.09 CPU-s.
LOCAL_DAEMON_ENV = {
    "RAY_LOG_MONITOR_MANY_FILES_THRESHOLD": "0",
    "REPORTER_UPDATE_INTERVAL_MS": "30000",
}


@contextmanager
def local_daemon_env() -> Iterator[None]:
    """Start a local Ray inside (``ray.init(address="local")``): its daemons, which read
    their environment when they start, poll as :data:`LOCAL_DAEMON_ENV` says, where this
    process's environment does not set the variables itself; restored on exit.

    Ray reads them as environment variables of its daemons' modules
    (``ray._private.log_monitor``, ``ray.dashboard.modules.reporter.reporter_consts``).
    """
    added = [k for k in LOCAL_DAEMON_ENV if k not in os.environ]
    for key in added:
        os.environ[key] = LOCAL_DAEMON_ENV[key]
    try:
        yield
    finally:
        for key in added:
            os.environ.pop(key, None)
