"""Prometheus metrics of a running campaign, and the exporter that serves them on 127.0.0.1.

The runtime owns one :class:`CampaignMetrics` per campaign and calls it at
these points (all cheap, thread-safe, no I/O):

===========================  ==============================================================
runtime event                call
===========================  ==============================================================
plan loaded                  ``set_plan(PlanTargets.from_plan(plan_document))``
graph built                  ``tasks_planned(op, n)`` per operation (``op_name(task.fn)``)
node joins / leaves          ``node_added(node_id, instance_type, market, price_usd_per_h)``,
                             ``node_removed(node_id)``
node left, with its cause     ``node_departed(instance_type, cause)`` (the dispatcher's,
                             :mod:`scheduler.fleet.departures`)
spot node interrupted        ``interrupted(instance_type)`` (a departure of that cause)
planned fleet known          ``declare_fleet(pairs)``: spot series at zero
spot capacity gone           ``fallback(instance_type, "spot", "on-demand")``
task submitted               ``task_started(op, instance_type)``
``TaskStatus`` read          ``task_finished(op, instance_type, status.runtime_s, ok=...)``
Ray error (system failure)   ``task_lost(op, instance_type)`` (counts a retry)
input failed, task skipped   ``tasks_skipped(op, n)`` (counted failed)
lost result recomputed       ``recomputed(op, n)``
product committed            ``product_written(product, area_m2)``
inputs read across zones     ``cross_zone(nbytes)`` (the input bytes a task reads from
                             nodes of another zone, as the dispatcher counts them)
progress callback            ``observe_progress(progress)`` (bytes in flight; task
                             counts too while no per-task event is reported)
run ended                    ``finish()``: billing stops; the ledger is final
===========================  ==============================================================

Cost model. Cost accrues per node, billed per second: price x time alive.
``tick()`` (called by every event; the exporter also calls it on each
scrape) advances the ledger to now, or to the end of the run once
``finish()`` was called. :meth:`CampaignMetrics.ledger` is the run's one
account of its cost (node-seconds x price, a :class:`~scheduler.observe.cost_report.RunLedger`):
``accrued_usd``, the progress bar, the end-of-run summary and the cost report
read it; ``eochain_cost_accrued_usd`` counts the same node-seconds as they
pass. Input bytes a task reads from a node of another zone (``cross_zone``)
are billed at the catalog's inter-AZ rate (``inter_az_usd_per_gb``) on top:
the ledger's ``transfer_usd``, in ``accrued_usd`` and the report's total. The projection extrapolates the campaign's own throughput::

    rate      = tasks done / elapsed                     (tasks per second so far)
    eta_s     = tasks remaining / rate                   (planned makespan - elapsed
                                                          while nothing is done yet)
    projected = accrued + fleet burn rate (USD/s of the nodes alive now) x eta_s

Every series carries a ``campaign`` label so that one Prometheus serves many
campaigns; task series carry ``op`` and ``instance_type``, node series
``instance_type`` and ``market``. Names follow the Prometheus conventions
(base units, ``_total`` for counters, ``_seconds``/``_bytes`` suffixes;
``promtool check metrics`` is clean, a test checks it).

:class:`MetricsExporter` serves a registry over HTTP, bound to 127.0.0.1
unless told otherwise; port 0 picks a free port. Adapters that feed these
calls from outside the runtime (a Ray node watcher, instrumented in-process
tasks) are in :mod:`scheduler.observe.metrics_hooks`.
"""

from __future__ import annotations

import math
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Protocol, Self

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import ThreadingWSGIServer, generate_latest, make_wsgi_app
from prometheus_client.registry import Collector

from planner.overheads import Overheads
from planner.plan_document import PlanDocument, as_plan_document
from scheduler.fleet.departures import DepartureCause
from scheduler.observe.cost_report import NodeUsage, RunLedger, StageUsage, stage_of
from scheduler.observe.errors import MetricsError
from scheduler.observe.labels import DURATION_BUCKETS_S, node_type, op_name

__all__ = ["LOOPBACK", "CampaignMetrics", "MetricsExporter", "PlanTargets",
           "Projection", "node_type", "op_name", "project"]

LOOPBACK = "127.0.0.1"

#: Peak task memory buckets: 16 MiB to 64 GiB, x2 apart.
MEMORY_BUCKETS_BYTES = tuple(float(16 * 2**20 * 2**k) for k in range(13)) + (math.inf,)

TASK_STATES = ("pending", "running", "done", "failed")


@dataclass(frozen=True, slots=True)
class PlanTargets:
    """What the plan promised: cost, makespan and deadline (seconds after the start)."""

    planned_cost_usd: float
    planned_makespan_s: float
    deadline_s: float

    def __post_init__(self) -> None:
        for name in ("planned_cost_usd", "planned_makespan_s", "deadline_s"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise MetricsError(f"PlanTargets.{name} = {value}, expected a finite value >= 0")

    @classmethod
    def from_plan(cls, plan: PlanDocument | Mapping[str, Any]) -> PlanTargets:
        """From the plan's ``total_cost_usd``, ``makespan_s`` and ``deadline_s``.

        A plan without them is a :class:`~planner.errors.PlanError` naming the key.
        """
        doc = as_plan_document(plan)
        return cls(doc.require("total_cost_usd"), doc.require("makespan_s"),
                   doc.require("deadline_s"))


@dataclass(frozen=True, slots=True)
class Projection:
    """Estimated time to completion and final cost."""

    eta_s: float
    projected_cost_usd: float


def project(*, accrued_usd: float, burn_usd_per_s: float, tasks_done: int, tasks_total: int,
            elapsed_s: float, planned_makespan_s: float | None) -> Projection:
    """Extrapolate the campaign's throughput so far (see the module docstring)."""
    remaining = max(tasks_total - tasks_done, 0)
    if remaining == 0:
        eta = 0.0
    elif tasks_done > 0 and elapsed_s > 0:
        eta = remaining * elapsed_s / tasks_done
    elif planned_makespan_s is not None:
        eta = max(planned_makespan_s - elapsed_s, 0.0)
    else:
        eta = math.nan
    projected = accrued_usd + burn_usd_per_s * eta if math.isfinite(eta) else math.nan
    return Projection(eta, projected)


class ProgressLike(Protocol):
    """The runtime's progress snapshot (``scheduler.runtime.dispatch.Progress``)."""

    @property
    def bytes_in_flight(self) -> int: ...

    @property
    def tasks_done(self) -> int: ...

    @property
    def tasks_total(self) -> int: ...


@dataclass(slots=True)
class _Node:
    instance_type: str
    market: str
    price_usd_per_h: float
    started_s: float
    billed_to_s: float
    ended_s: float | None = None


@dataclass(frozen=True, slots=True)
class _TaskSeries:
    """The children of the task families for one (op, instance type): label lookups once."""

    ok: Any
    failed: Any
    lost: Any
    duration: Any
    memory: Any
    pixels: Any


@dataclass(slots=True)
class _Stage:
    tasks: int = 0
    busy_s: float = 0.0
    first_start_s: float = math.inf
    last_end_s: float = 0.0


class CampaignMetrics:
    """The metric families of one campaign and the ledger behind cost and projections."""

    def __init__(self, campaign: str, *, registry: CollectorRegistry | None = None,
                 clock: Callable[[], float] = time.time,
                 inter_az_usd_per_gb: float = Overheads().inter_az_usd_per_gb) -> None:
        if not campaign:
            raise MetricsError("campaign name is empty; expected the campaign's name")
        if not inter_az_usd_per_gb >= 0:
            raise MetricsError(f"inter_az_usd_per_gb = {inter_az_usd_per_gb}, expected >= 0 "
                               "(the catalog's overheads.inter_az_usd_per_gb)")
        self.campaign = campaign
        self.inter_az_usd_per_gb = inter_az_usd_per_gb
        self._cross_zone_bytes = 0
        self.registry = registry if registry is not None else CollectorRegistry()
        self._clock = clock
        self._lock = threading.RLock()
        self.start_s = clock()
        self._end_s: float | None = None
        self._plan: PlanTargets | None = None
        self._nodes: dict[str, _Node] = {}
        self._stages: dict[tuple[str, str], _Stage] = {}
        self._states: dict[str, dict[str, int]] = {}
        self._accrued: dict[tuple[str, str], float] = {}
        self._progress: tuple[int, int] | None = None
        self._series: dict[tuple[str, str], _TaskSeries] = {}
        self._state_gauges: dict[tuple[str, str], Any] = {}
        # registered first, so every collection (scrape, get_sample_value) bills up to now
        self.registry.register(_TickingCollector(self))
        self._define(self.registry)
        self._start_time.labels(campaign).set(self.start_s)
        self._tiles_remaining.labels(campaign).set(0)
        self._tiles_planned.labels(campaign).set(0)
        self._in_flight.labels(campaign).set(0)
        self._burn.labels(campaign).set(0)
        self._cross_zone.labels(campaign).inc(0)

    def _define(self, reg: CollectorRegistry) -> None:
        c, ci, cio = ["campaign"], ["campaign", "instance_type"], ["campaign", "op"]
        cit = ["campaign", "op", "instance_type"]
        cim = ["campaign", "instance_type", "market"]
        self._tasks = Gauge("eochain_tasks", "Tasks by operation and state "
                            "(pending, running, done, failed).", ["campaign", "op", "state"],
                            registry=reg)
        self._runs = Counter("eochain_task_runs", "Task runs that ended, by outcome "
                             "(ok, failed: the kernel raised, lost: node or worker gone).",
                             cit + ["outcome"], registry=reg)
        self._duration = Histogram("eochain_task_duration_seconds", "Run time of a task's "
                                   "kernel.", cit, buckets=DURATION_BUCKETS_S, registry=reg)
        self._memory = Histogram("eochain_task_peak_memory_bytes", "Peak resident memory of "
                                 "the worker while it ran a task.", cit,
                                 buckets=MEMORY_BUCKETS_BYTES, registry=reg)
        self._pixels = Counter("eochain_pixels_processed", "Output pixels written by tasks.",
                               cit, registry=reg)
        self._tiles_remaining = Gauge("eochain_tiles_remaining", "Tasks not done yet "
                                      "(pending or running).", c, registry=reg)
        self._tiles_planned = Gauge("eochain_tiles_planned", "Tasks in the campaign's graph.",
                                    c, registry=reg)
        self._in_flight = Gauge("eochain_intermediate_in_flight_bytes", "Estimated bytes of "
                                "intermediate results held or being computed.", c,
                                registry=reg)
        self._nodes_g = Gauge("eochain_nodes", "Worker nodes alive, by instance type and "
                              "market.", cim, registry=reg)
        self._interruptions = Counter("eochain_spot_interruptions", "Spot nodes lost while "
                                      "the campaign ran.", ci, registry=reg)
        self._departures = Counter("eochain_node_departures", "Worker nodes that left, by "
                                   "cause (interruption, scale-down, drain, failure).",
                                   ["campaign", "instance_type", "cause"], registry=reg)
        self._fallbacks = Counter("eochain_market_fallbacks", "Capacity requests moved to "
                                  "another market (spot -> on-demand).",
                                  ["campaign", "instance_type", "from_market", "to_market"],
                                  registry=reg)
        self._retries = Counter("eochain_task_retries", "Task runs retried after a system "
                                "failure.", cio, registry=reg)
        self._recomputed = Counter("eochain_task_recomputations", "Finished tasks run again "
                                   "because their result was lost with a node.", cio,
                                   registry=reg)
        self._planned_cost = Gauge("eochain_cost_planned_usd", "Cost of the plan, in US "
                                   "dollars.", c, registry=reg)
        self._accrued_c = Counter("eochain_cost_accrued_usd", "Cost accrued so far: node "
                                  "seconds times price, in US dollars.", cim, registry=reg)
        self._projected = Gauge("eochain_cost_projected_usd", "Projected final cost, in US "
                                "dollars.", c, registry=reg)
        self._burn = Gauge("eochain_fleet_burn_rate_usd_per_second", "What the nodes alive "
                           "now cost per second, in US dollars.", c, registry=reg)
        self._planned_makespan = Gauge("eochain_makespan_planned_seconds", "Makespan of the "
                                       "plan.", c, registry=reg)
        self._eta = Gauge("eochain_time_to_completion_seconds", "Estimated time until the "
                          "last task is done.", c, registry=reg)
        self._deadline = Gauge("eochain_deadline_timestamp_seconds", "When the campaign "
                               "must be done (Unix time).", c, registry=reg)
        self._start_time = Gauge("eochain_campaign_start_timestamp_seconds", "When the "
                                 "campaign started (Unix time).", c, registry=reg)
        self._products = Counter("eochain_products_written", "Products committed to the "
                                 "output store.", ["campaign", "product"], registry=reg)
        self._area = Counter("eochain_product_area_square_meters", "Ground area covered by "
                             "committed products.", ["campaign", "product"], registry=reg)
        self._cross_zone = Counter("eochain_cross_zone_input_bytes", "Input bytes tasks read "
                                   "from nodes of another zone (billed as inter-AZ transfer).",
                                   c, registry=reg)

    # -- plan and graph ----------------------------------------------------------------------
    def set_plan(self, plan: PlanTargets) -> None:
        with self._lock:
            self._plan = plan
            self._planned_cost.labels(self.campaign).set(plan.planned_cost_usd)
            self._planned_makespan.labels(self.campaign).set(plan.planned_makespan_s)
            self._deadline.labels(self.campaign).set(self.start_s + plan.deadline_s)
            self.tick()

    def tasks_planned(self, op: str, n: int) -> None:
        """``n`` more tasks of ``op`` are in the graph (pending)."""
        if n < 0:
            raise MetricsError(f"tasks_planned({op!r}, {n}): expected n >= 0")
        with self._lock:
            self._state(op)["pending"] += n
            self._retries.labels(self.campaign, op).inc(0)
            self._recomputed.labels(self.campaign, op).inc(0)
            self._publish_states(op)

    def declare(self, op: str, instance_type: str) -> None:
        """Create the task series of ``op`` on ``instance_type`` at zero, before any run.

        A series that appears only with its first observation hides that first
        increase from ``rate()``; declared ones count from the first scrape.
        """
        self._task_series(op, instance_type)

    def _task_series(self, op: str, instance_type: str) -> _TaskSeries:
        series = self._series.get((op, instance_type))
        if series is None:
            labels = (self.campaign, op, instance_type)
            series = _TaskSeries(
                ok=self._runs.labels(*labels, "ok"), failed=self._runs.labels(*labels, "failed"),
                lost=self._runs.labels(*labels, "lost"), duration=self._duration.labels(*labels),
                memory=self._memory.labels(*labels), pixels=self._pixels.labels(*labels))
            self._series[(op, instance_type)] = series
        return series

    # -- fleet -------------------------------------------------------------------------------
    def node_added(self, node_id: str, instance_type: str, market: str,
                   price_usd_per_h: float) -> None:
        if market not in ("spot", "on-demand"):
            raise MetricsError(f"node {node_id}: market {market!r}, expected 'spot' or "
                               "'on-demand'")
        if not math.isfinite(price_usd_per_h) or price_usd_per_h < 0:
            raise MetricsError(f"node {node_id}: price_usd_per_h = {price_usd_per_h}, "
                               "expected a finite price >= 0")
        with self._lock:
            if node_id in self._nodes and self._nodes[node_id].ended_s is None:
                return
            now = self._now()
            self._nodes[node_id] = _Node(instance_type, market, price_usd_per_h, now, now)
            self._accrued_c.labels(self.campaign, instance_type, market).inc(0)
            self._nodes_g.labels(self.campaign, instance_type, market).inc()
            if market == "spot":
                self._interruptions.labels(self.campaign, instance_type).inc(0)
            self.tick()

    def node_removed(self, node_id: str) -> None:
        """A node left (its cause, and an interruption's count, are the dispatcher's:
        :meth:`interrupted`)."""
        with self._lock:
            node = self._nodes.get(node_id)
            if node is None:
                raise MetricsError(f"node_removed({node_id!r}): no such node was added; "
                                   f"known: {sorted(self._nodes)[:5]}")
            if node.ended_s is not None:
                return
            self.tick()
            node.ended_s = self._now()
            self._nodes_g.labels(self.campaign, node.instance_type, node.market).dec()
            self.tick()

    def declare_fleet(self, nodes: Iterable[tuple[str, str]]) -> None:
        """Create the planned fleet's series at zero: departures by cause, and for spot pools
        interruptions and spot fallbacks.

        ``nodes`` are (instance type, market) pairs. Without this, the spot and
        fallback panels stay empty until the first event, and ``increase()``
        misses that event.
        """
        with self._lock:
            for instance_type, market in nodes:
                for cause in DepartureCause:
                    self._departures.labels(self.campaign, instance_type, cause.value).inc(0)
                if market == "spot":
                    self._interruptions.labels(self.campaign, instance_type).inc(0)
                    self._fallbacks.labels(self.campaign, instance_type, "spot",
                                           "on-demand").inc(0)

    def interrupted(self, instance_type: str) -> None:
        """A spot node of ``instance_type`` was interrupted (the runtime decides the cause)."""
        self._interruptions.labels(self.campaign, instance_type).inc()

    def node_departed(self, instance_type: str, cause: str) -> None:
        """A node of ``instance_type`` left for ``cause`` (the dispatcher's, one of
        :class:`scheduler.fleet.departures.DepartureCause`'s values)."""
        self._departures.labels(self.campaign, instance_type, cause).inc()

    def fallback(self, instance_type: str, from_market: str, to_market: str) -> None:
        self._fallbacks.labels(self.campaign, instance_type, from_market, to_market).inc()

    # -- tasks -------------------------------------------------------------------------------
    def task_started(self, op: str, instance_type: str) -> None:
        with self._lock:
            self._move(op, "pending", "running")
            self._task_series(op, instance_type)

    def task_finished(self, op: str, instance_type: str, runtime_s: float, *, ok: bool = True,
                      pixels: int = 0, peak_memory_bytes: int | None = None) -> None:
        """A task's status came back: ``ok`` or failed (the kernel raised; final)."""
        if not math.isfinite(runtime_s) or runtime_s < 0:
            raise MetricsError(f"task_finished({op!r}): runtime_s = {runtime_s}, expected >= 0")
        with self._lock:
            now = self._now()
            self._move(op, "running", "done" if ok else "failed")
            series = self._task_series(op, instance_type)
            (series.ok if ok else series.failed).inc()
            series.duration.observe(runtime_s)
            if pixels:
                series.pixels.inc(pixels)
            if peak_memory_bytes is not None:
                series.memory.observe(peak_memory_bytes)
            stage = self._stages.setdefault((stage_of(op), instance_type), _Stage())
            stage.tasks += 1
            stage.busy_s += runtime_s
            stage.first_start_s = min(stage.first_start_s,
                                        max(now - runtime_s - self.start_s, 0.0))
            stage.last_end_s = max(stage.last_end_s, now - self.start_s)

    def tasks_skipped(self, op: str, n: int = 1) -> None:
        """``n`` pending tasks of ``op`` will never run (an input failed): counted failed."""
        if n < 0:
            raise MetricsError(f"tasks_skipped({op!r}, {n}): expected n >= 0")
        with self._lock:
            self._move(op, "pending", "failed", n)

    def task_lost(self, op: str, instance_type: str) -> None:
        """The run died with its worker or node; it goes back to pending and is retried."""
        with self._lock:
            self._move(op, "running", "pending")
            self._task_series(op, instance_type).lost.inc()
            self._retries.labels(self.campaign, op).inc()

    def recomputed(self, op: str, n: int = 1) -> None:
        """``n`` finished tasks of ``op`` must run again (their results were lost)."""
        with self._lock:
            self._move(op, "done", "pending", n)
            self._recomputed.labels(self.campaign, op).inc(n)

    def product_written(self, product: str, area_m2: float) -> None:
        if not math.isfinite(area_m2) or area_m2 < 0:
            raise MetricsError(f"product_written({product!r}): area_m2 = {area_m2}, "
                               "expected >= 0")
        self._products.labels(self.campaign, product).inc()
        self._area.labels(self.campaign, product).inc(area_m2)

    def cross_zone(self, nbytes: int) -> None:
        """A task was given ``nbytes`` of input held by nodes of another zone."""
        if nbytes < 0:
            raise MetricsError(f"cross_zone({nbytes}): expected nbytes >= 0")
        with self._lock:
            self._cross_zone_bytes += nbytes
        self._cross_zone.labels(self.campaign).inc(nbytes)

    def observe_progress(self, progress: ProgressLike) -> None:
        """Use as (part of) the runtime's progress callback.

        Sets the bytes in flight; while no per-task event has been reported
        (``tasks_planned``...), the snapshot's task counts drive tiles remaining,
        the ETA and the projection.
        """
        with self._lock:
            self._in_flight.labels(self.campaign).set(progress.bytes_in_flight)
            self._progress = (int(progress.tasks_done), int(progress.tasks_total))

    # -- cost --------------------------------------------------------------------------------
    def tick(self) -> Projection:
        """Bill every node up to now, then refresh burn rate, projection and ETA."""
        with self._lock:
            now = self._now()
            burn = 0.0
            for node in self._nodes.values():
                until = now if node.ended_s is None else node.ended_s
                if until > node.billed_to_s:
                    usd = (until - node.billed_to_s) * node.price_usd_per_h / 3600.0
                    key = (node.instance_type, node.market)
                    self._accrued[key] = self._accrued.get(key, 0.0) + usd
                    self._accrued_c.labels(self.campaign, *key).inc(usd)
                    node.billed_to_s = until
                if node.ended_s is None and self._end_s is None:
                    burn += node.price_usd_per_h / 3600.0
            if self._states or self._progress is None:
                done = sum(s["done"] for s in self._states.values())
                total = sum(sum(s.values()) - s["failed"] for s in self._states.values())
            else:
                done, total = self._progress
            plan = self._plan
            proj = project(accrued_usd=sum(self._accrued.values()), burn_usd_per_s=burn,
                           tasks_done=done, tasks_total=total, elapsed_s=now - self.start_s,
                           planned_makespan_s=None if plan is None else plan.planned_makespan_s)
            self._burn.labels(self.campaign).set(burn)
            self._tiles_remaining.labels(self.campaign).set(total - done)
            self._tiles_planned.labels(self.campaign).set(total)
            self._eta.labels(self.campaign).set(proj.eta_s)
            self._projected.labels(self.campaign).set(proj.projected_cost_usd)
            return proj

    def _now(self) -> float:
        """The clock, stopped at the end of the run once :meth:`finish` was called."""
        return self._clock() if self._end_s is None else self._end_s

    def finish(self) -> None:
        """The run ended: bill up to now and stop; later calls keep the first end."""
        with self._lock:
            if self._end_s is None:
                self.tick()
                self._end_s = self._clock()
                self.tick()

    @property
    def accrued_usd(self) -> float:
        """The run's cost so far: the ledger's node-seconds x price and its bytes read
        across zones."""
        return self.ledger().total_usd

    def ledger(self) -> RunLedger:
        """What the run used so far (the one account of its cost), for the cost report."""
        with self._lock:
            self.tick()
            now = self._now()
            nodes: dict[tuple[str, str, float], list[float]] = {}
            for node in self._nodes.values():
                end = now if node.ended_s is None else node.ended_s
                entry = nodes.setdefault(
                    (node.instance_type, node.market, node.price_usd_per_h), [0.0, 0])
                entry[0] += max(end - node.started_s, 0.0)
                entry[1] += 1
            return RunLedger(
                campaign=self.campaign,
                wall_s=now - self.start_s,
                nodes=tuple(NodeUsage(t, m, p, int(n), node_s)
                            for (t, m, p), (node_s, n) in sorted(nodes.items())),
                stages=tuple(StageUsage(stage, t, st.tasks, st.busy_s,
                                        0.0 if math.isinf(st.first_start_s)
                                        else st.first_start_s, st.last_end_s)
                             for (stage, t), st in sorted(self._stages.items())),
                transfer_usd=self._cross_zone_bytes / 1e9 * self.inter_az_usd_per_gb,
            )

    def exposition(self) -> bytes:
        """The current metrics in the text exposition format (after a tick)."""
        self.tick()
        return generate_latest(self.registry)

    # -- internals ---------------------------------------------------------------------------
    def _state(self, op: str) -> dict[str, int]:
        if op not in self._states:
            self._states[op] = dict.fromkeys(TASK_STATES, 0)
        return self._states[op]

    def _move(self, op: str, src: str, dst: str, n: int = 1) -> None:
        counts = self._state(op)
        # events may race the graph bookkeeping (a retry seen before the plan): never go < 0
        moved = min(n, counts[src]) if src == "done" else n
        counts[src] = max(counts[src] - moved, 0)
        counts[dst] += moved
        self._state_gauge(op, src).set(counts[src])
        self._state_gauge(op, dst).set(counts[dst])

    def _state_gauge(self, op: str, state: str) -> Any:
        gauge = self._state_gauges.get((op, state))
        if gauge is None:
            gauge = self._state_gauges[(op, state)] = self._tasks.labels(self.campaign, op, state)
        return gauge

    def _publish_states(self, op: str) -> None:
        for state, n in self._states[op].items():
            self._state_gauge(op, state).set(n)


class _TickingCollector(Collector):
    """Bills the fleet, refreshes the projection, before the registry is read."""

    def __init__(self, metrics: CampaignMetrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Any]:
        self.metrics.tick()
        yield from ()

    def describe(self) -> Iterator[Any]:
        yield from ()


#: Seconds between the exporter's checks for shutdown.
SERVER_POLL_S = 0.1


class MetricsExporter:
    """Serves a registry's metrics at ``http://HOST:PORT/metrics`` (HOST 127.0.0.1 by default).

    ``with MetricsExporter(metrics) as exp: ... exp.url``; port 0 picks a free port.
    """

    def __init__(self, metrics: CampaignMetrics, host: str = LOOPBACK, port: int = 0) -> None:
        if not 0 <= port <= 65535:
            raise MetricsError(f"exporter port {port}: expected 0..65535 (0 picks a free one)")
        self.metrics = metrics
        self.host = host
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self._port = port

    def start(self) -> Self:
        if self._server is None:
            from wsgiref.simple_server import WSGIRequestHandler, make_server

            class Quiet(WSGIRequestHandler):
                def log_message(self, format: str, *args: Any) -> None:
                    pass  # Prometheus scrapes every few seconds: no line per request

            class Server(ThreadingWSGIServer):
                address_family = socket.AF_INET6 if ":" in self.host else socket.AF_INET

            self._server = make_server(self.host, self._port,
                                       make_wsgi_app(self.metrics.registry), Server,
                                       handler_class=Quiet)
            # a short poll: close() waits for the loop to notice (the default 0.5 s would
            # add up to half a second to the end of every run)
            self._thread = threading.Thread(target=self._server.serve_forever,
                                            kwargs={"poll_interval": SERVER_POLL_S},
                                            name="eochain-metrics-http", daemon=True)
            self._thread.start()
        return self

    @property
    def port(self) -> int:
        if self._server is None:
            raise MetricsError("the exporter is not started; call start() first")
        return int(self._server.server_port)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/metrics"

    def close(self) -> None:
        """Stop serving: the loop is woken by a connection of ours rather than left to notice
        at its next poll (up to :data:`SERVER_POLL_S` more at the end of every run)."""
        if self._server is not None:
            stopper = threading.Thread(target=self._server.shutdown, name="eochain-metrics-stop")
            stopper.start()
            try:
                socket.create_connection((self.host, self.port), timeout=SERVER_POLL_S).close()
            except OSError:
                pass  # the poll ends the loop anyway
            stopper.join()
            self._server.server_close()
            if self._thread is not None:
                self._thread.join(timeout=5)
            self._server = self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
