"""Feeding :class:`~scheduler.observe.metrics.CampaignMetrics` from the runtime without changing it.

Two adapters, for what the runtime does not report itself yet:

* :class:`RayFleetWatcher` polls ``ray.nodes()`` in a daemon thread. A worker
  node (CPUs > 0) whose custom resource names its type and market
  (``"c7g.large:spot"``, as the runtime's clusters do) is reported with
  ``node_added`` when it appears, at the plan's price for that type and
  market, and ``node_removed`` when Ray declares it dead. Whether a departure
  was a spot interruption is the dispatcher's call (it knows whether the node
  was busy, drained on a notice, or let go by the run's own request:
  :mod:`scheduler.fleet.departures`), so the watcher counts none.
* :func:`observe_campaign` is the whole wiring for a command: metrics,
  exporter on 127.0.0.1, the watcher on Ray runs, and the cost report
  (table, PNG and ledger JSON) written when the campaign ends.
* :class:`InstrumentedTask` wraps a task function so an in-process run (the
  serial driver) reports each task: start, duration, pixels of an array
  result, the worker's peak resident memory, and products with their area.
  On Ray the function runs in an actor process, so there the dispatcher
  reports from the ``TaskStatus`` it reads (:mod:`scheduler.observe.dispatch_metrics`).
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from dataclasses import replace as _replace
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from planner.catalog import load_catalog
from planner.plan_document import PlanDocument, as_plan_document
from scheduler.observe.cost_report import build_cost_report, format_cost_report, write_cost_report
from scheduler.observe.errors import MetricsError
from scheduler.observe.labels import CAMPAIGN_KEY, node_type_of, op_name
from scheduler.observe.metrics import LOOPBACK, CampaignMetrics, MetricsExporter, PlanTargets
from scheduler.observe.targets import registered_target


def peak_rss_bytes() -> int:
    """Peak resident memory of this process so far (Linux reports ru_maxrss in KiB)."""
    import resource

    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def prices_from_plan(plan: PlanDocument | Mapping[str, Any]) -> dict[tuple[str, str], float]:
    """(instance type, market) -> USD per hour of the plan's fleet (a PlanError names a gap)."""
    return as_plan_document(plan).prices()


def publish_campaign_name(campaign: str) -> None:
    """Publish ``campaign`` for the actors of this Ray job (their metrics' ``campaign`` label).

    Ray's internal KV (a developer API, wrapped in :mod:`scheduler.ray_private`) holds one key per
    job, so campaigns sharing a cluster keep their own names.
    """
    import ray

    from scheduler.ray_private import internal_kv_put

    if not ray.is_initialized():
        return
    job_id = ray.get_runtime_context().get_job_id()
    internal_kv_put(CAMPAIGN_KEY.format(job_id=job_id), campaign.encode(),
                                 overwrite=True)


class RayFleetWatcher:
    """Reports the connected Ray cluster's worker nodes to ``metrics`` (module docstring)."""

    def __init__(self, metrics: CampaignMetrics, prices: Mapping[tuple[str, str], float],
                 interval_s: float = 1.0, default_price_usd_per_h: float = 0.0) -> None:
        if interval_s <= 0:
            raise MetricsError(f"RayFleetWatcher interval_s = {interval_s}, expected > 0")
        self.metrics = metrics
        self.prices = dict(prices)
        self.interval_s = interval_s
        self.default_price_usd_per_h = default_price_usd_per_h
        self.alive: dict[str, tuple[str, str]] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None

    def poll(self) -> None:
        """One pass over ``ray.nodes()``: report nodes that joined or died since the last."""
        import ray

        seen: set[str] = set()
        for node in ray.nodes():  # type: ignore[no-untyped-call]
            node_id = str(node["NodeID"])
            resources: Mapping[str, float] = node.get("Resources", {})
            if not node.get("Alive") or float(resources.get("CPU", 0.0)) <= 0:
                continue
            seen.add(node_id)
            if node_id not in self.alive:
                itype, market = node_type_of(resources)
                price = self.prices.get((itype, market), self.default_price_usd_per_h)
                self.metrics.node_added(node_id, itype, market, price)
                self.alive[node_id] = (itype, market)
        for node_id in [n for n in self.alive if n not in seen]:
            self.alive.pop(node_id)
            self.metrics.node_removed(node_id)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.poll()
            except Exception as exc:  # noqa: BLE001 - kept for stop() to raise in the caller
                self.error = exc
                return
            self._stop.wait(self.interval_s)

    def start(self) -> Self:
        self.poll()
        self._thread = threading.Thread(target=self._loop, name="eochain-fleet-watch",
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop polling (the nodes stay as they are in the metrics)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10 * self.interval_s + 5)
            self._thread = None
        if self.error is not None:
            raise MetricsError(f"the fleet watcher failed: {self.error!r}") from self.error

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def area_m2(fn: object) -> float:
    """Ground area of a product writer's ``geobox`` (0 for a function without one)."""
    geobox = getattr(fn, "geobox", None)
    transform = getattr(geobox, "transform", None)
    if transform is None:
        return 0.0
    a, b, _, d, e, _ = (float(v) for v in transform)
    return abs(a * e - b * d) * float(getattr(geobox, "width", 0)) * float(
        getattr(geobox, "height", 0))


@dataclass(frozen=True, slots=True)
class InstrumentedTask:
    """A task function that reports itself to ``metrics`` (in-process runs: serial driver).

    Ray actors run in other processes, where this object's metrics would be a
    copy: on Ray the dispatcher reports from the ``TaskStatus`` it reads instead.
    A result with a ``uri`` from a function with a ``geobox`` (a product writer)
    counts as a product of the function's ``op`` with the geobox's area.
    """

    fn: Callable[..., object]
    metrics: CampaignMetrics
    op: str
    instance_type: str

    def __call__(self, ctx: object, *inputs: object) -> object:
        self.metrics.task_started(self.op, self.instance_type)
        start = time.perf_counter()
        try:
            value = self.fn(ctx, *inputs)
        except Exception:
            self.metrics.task_finished(self.op, self.instance_type, time.perf_counter() - start,
                                       ok=False, peak_memory_bytes=peak_rss_bytes())
            raise
        shape: tuple[int, ...] = tuple(getattr(value, "shape", ()))
        pixels = int(shape[-1]) * int(shape[-2]) if len(shape) >= 2 else 0
        self.metrics.task_finished(self.op, self.instance_type, time.perf_counter() - start,
                                   pixels=pixels, peak_memory_bytes=peak_rss_bytes())
        if hasattr(value, "uri") and hasattr(self.fn, "geobox"):
            self.metrics.product_written(str(getattr(self.fn, "op", self.op)), area_m2(self.fn))
        return value


def instrument_graph(graph: Any, metrics: CampaignMetrics,
                     instance_type_of: Callable[[Any], str]) -> Any:
    """A copy of a runtime ``TaskGraph`` whose functions report to ``metrics``.

    Registers every task as pending (``tasks_planned``); ``instance_type_of(task)``
    names where each task runs (for an in-process run: the local machine's type).
    """
    from scheduler.runtime.state import TaskGraph

    tasks = []
    counts: dict[str, int] = {}
    for task in graph.tasks.values():
        op, instance_type = op_name(task.fn), instance_type_of(task)
        counts[op] = counts.get(op, 0) + 1
        metrics.declare(op, instance_type)
        tasks.append(_replace(task, fn=InstrumentedTask(task.fn, metrics, op, instance_type)))
    for op, n in sorted(counts.items()):
        metrics.tasks_planned(op, n)
    return TaskGraph({t.key: t for t in tasks}, graph.priority, graph.consumers)


@dataclass(frozen=True, slots=True)
class Observation:
    """What :func:`observe_campaign` hands the command: the metrics and where they are served."""

    metrics: CampaignMetrics
    exporter: MetricsExporter


def _warn(message: str) -> None:
    """A warning of the metrics side, on standard error (the run goes on)."""
    print(message, file=sys.stderr)


@contextmanager
def observe_campaign(
    campaign: str, plan: PlanDocument | Mapping[str, Any] | None = None, *, on_ray: bool = True,
    host: str = LOOPBACK, port: int = 0, report_dir: str | Path | None = None,
    echo: Callable[[str], None] | None = None,
) -> Iterator[Observation]:
    """Metrics for one campaign run, from start to cost report.

    ``plan`` (a ``plan.json`` document) gives the planned cost, makespan,
    deadline and the fleet's prices. With ``on_ray`` a :class:`RayFleetWatcher`
    reports the connected cluster's nodes (call it after Ray is connected).
    While it runs, the exporter is listed for Prometheus in the file_sd
    directory (:mod:`scheduler.observe.targets`) and, on Ray, the campaign's
    name is published for the actors' metrics (:func:`publish_campaign_name`).
    When the block ends the cost report goes to ``report_dir``
    (``cost-report.txt``, ``cost-report.png``, ``cost-ledger.json``) and its
    table to ``echo`` (e.g. ``click.echo``).
    """
    plan = as_plan_document(plan) if plan is not None else None
    metrics = CampaignMetrics(
        campaign, inter_az_usd_per_gb=load_catalog().overheads.inter_az_usd_per_gb)
    if plan is not None:
        metrics.set_plan(PlanTargets.from_plan(plan))
    prices = prices_from_plan(plan) if plan is not None else {}
    metrics.declare_fleet(prices)
    with (MetricsExporter(metrics, host=host, port=port) as exporter,
          registered_target(campaign, host, exporter.port, warn=_warn)):
        if on_ray:
            publish_campaign_name(campaign)
        watcher = RayFleetWatcher(metrics, prices).start() if on_ray else None
        try:
            yield Observation(metrics, exporter)
        finally:
            if watcher is not None:
                watcher.stop()
            metrics.finish()  # the run's end, if the command has not said it already
            ledger = metrics.ledger()
            report = build_cost_report(plan, ledger)
            if report_dir is not None:
                write_cost_report(report, report_dir)
                (Path(report_dir) / "cost-ledger.json").write_text(
                    json.dumps(ledger.to_dict(), indent=1))
            if echo is not None:
                echo(format_cost_report(report))
