"""The names metrics are labelled with, in a module light enough for every actor.

An actor records its tasks (:mod:`scheduler.observe.actor_metrics`) with the
operation of each (:func:`op_name`), its node's instance type
(:func:`node_type_of`) and the campaign its driver published
(:func:`published_campaign_name`), in the driver's duration buckets
(:data:`DURATION_BUCKETS_S`). These live here, apart from
:mod:`scheduler.observe.metrics` (prometheus_client, the plan document, the
cost report): importing those in each actor took ~50 ms of its start-up,
before its first task (``python -X importtime``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping

from scheduler.observe.errors import MetricsError

#: Task duration buckets: 10 ms to ~1 h, roughly x2.5 apart.
DURATION_BUCKETS_S = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 60.0,
                      150.0, 300.0, 600.0, 1800.0, 3600.0, math.inf)

#: (instance type, market) of a node whose resources name none (a local cluster).
DEFAULT_NODE_TYPE = ("local", "on-demand")

#: Ray's internal KV key under which a driver publishes its campaign's name, per job.
CAMPAIGN_KEY = "eochain:campaign:{job_id}"


def op_name(fn: object) -> str:
    """The operation a task function performs: ``OrthoTileTask()`` -> ``ortho_tile``.

    A product writer (a ``Write...`` task whose ``op`` names its product) is
    ``PRODUCT_write``: ``ortho_write``, ``dsm_write``.
    """
    name = getattr(fn, "__name__", None) or type(fn).__name__
    name = re.sub(r"Task$", "", name)
    product = getattr(fn, "op", None)
    if name.startswith("Write") and isinstance(product, str) and product:
        return f"{product}_write"
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name).lower() or "task"


def node_type(resource: str) -> tuple[str, str]:
    """``"c7g.large:spot"`` (a node's custom Ray resource) -> ``("c7g.large", "spot")``."""
    instance_type, sep, market = resource.rpartition(":")
    if not sep or not instance_type or market not in ("spot", "on-demand"):
        raise MetricsError(
            f"node resource {resource!r}: expected 'INSTANCE_TYPE:MARKET' with market "
            "'spot' or 'on-demand'")
    return instance_type, market


def node_type_of(resources: Mapping[str, float] | set[str] | frozenset[str]
                 ) -> tuple[str, str]:
    """A node's (instance type, market) from its Ray resources, or ``DEFAULT_NODE_TYPE``."""
    for name in sorted(resources):
        if ":" in name and not name.startswith("node:"):
            try:
                return node_type(name)
            except MetricsError:
                continue
    return DEFAULT_NODE_TYPE


def published_campaign_name() -> str:
    """The campaign name the driver of this Ray job published, or "" when none."""
    import ray

    from scheduler.ray_private import internal_kv_get

    try:
        job_id = ray.get_runtime_context().get_job_id()
        value = internal_kv_get(CAMPAIGN_KEY.format(job_id=job_id))
    except Exception:  # noqa: BLE001 - the label is optional: metrics go on without it
        return ""
    return value.decode(errors="replace") if value else ""
