"""A product's tasks stay in the zone of its plan task, on a real local Ray cluster.

Two 1-CPU worker nodes carry different zone resources (``eochain-zone-0``,
``eochain-zone-1``), as the node types of a spread plan do. Each product is
a plan task, tiles reading it and a join reading the tiles::

    plan --> tile 0 .. tile 5 --> join

Every task returns the node it ran on (with its inputs' nodes), so the join
says where the whole product ran. The plans start in both zones; each
product's tiles and join must stay in its plan's zone, even while that zone's
one actor is busy and the other zone's is free. In the same run, a product
whose zone has no node that may run its tiles (its plan placed on the spot
node, its tiles on the on-demand one): they move to the other zone, and the
dispatcher counts those moves, and only those, and the bytes read across
zones: in the run's report, its summary and the campaign's metrics.
"""

from __future__ import annotations

import time

import pytest
from prometheus_client import CollectorRegistry

from scheduler.cli.progress import summary
from scheduler.fleet.cluster_config import zone_resource
from scheduler.fleet.departures import zone_of
from scheduler.observe.metrics import CampaignMetrics
from scheduler.products.flow import FlowReport
from scheduler.runtime.dispatch import Dispatcher, DispatchOptions
from scheduler.runtime.state import Task, TaskGraph
from scheduler.testing.cluster import LocalCluster, NodeSpec

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SPOT, ON_DEMAND = "c7g.xlarge:spot", "m7g.xlarge:on-demand"
TILES = 6


def _node() -> str:
    import ray

    return str(ray.get_runtime_context().get_node_id())


def _plan(ctx: object) -> tuple[str, ...]:
    return (_node(),)


def _tile(ctx: object, plan: tuple[str, ...]) -> tuple[str, ...]:
    time.sleep(0.05)  # long enough that a tile finds its zone's actor busy
    return (*plan, _node())


def _join(ctx: object, *tiles: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(n for tile in tiles for n in tile) + (_node(),)


def _product(name: str, plan: tuple[str, ...] = (), tile: tuple[str, ...] = ()) -> list[Task]:
    tiles = [Task(f"{name}.tile{i}", _tile, (f"{name}.plan",), resources=tile)
             for i in range(TILES)]
    return [Task(f"{name}.plan", _plan, resources=plan), *tiles,
            Task(f"{name}.join", _join, tuple(t.key for t in tiles), resources=tile)]


def test_a_products_tasks_run_in_its_plans_zone_and_leave_it_only_without_a_node() -> None:
    import ray

    nodes = [NodeSpec(1, resources={ON_DEMAND: 1.0, zone_resource(0): 1.0}),
             NodeSpec(1, resources={SPOT: 1.0, zone_resource(1): 1.0})]
    options = DispatchOptions(batch_target_s=0.0)  # one task per call: each chooses its actor
    products = [f"p{i}" for i in range(4)]
    # q's plan runs on the spot node (zone 1), which may run none of its tiles
    graph = TaskGraph.build([t for p in products for t in _product(p)]
                            + _product("q", plan=(SPOT,), tile=(ON_DEMAND,)))
    with LocalCluster(nodes):
        zone = {n["NodeID"]: zone_of(n["Resources"]) for n in ray.nodes()}  # type: ignore[no-untyped-call]
        metrics = CampaignMetrics("zones", registry=CollectorRegistry())
        dispatcher = Dispatcher(options, metrics=metrics)
        report = dispatcher.run(graph)
    assert report.ok, report.failures
    ran_in = {p: [zone[n] for n in report.results[f"{p}.join"]] for p in products}  # type: ignore[union-attr]
    assert all(len(set(zones)) == 1 for zones in ran_in.values()), ran_in
    assert {zones[0] for zones in ran_in.values()} == {zone_resource(0), zone_resource(1)}
    nodes_of_q = report.results["q.join"]
    assert isinstance(nodes_of_q, tuple)
    assert [zone[n] for n in nodes_of_q[:2]] == [zone_resource(1), zone_resource(0)]
    # q's tiles moved, nothing else (its join reads its tiles in their zone)
    assert dispatcher.cross_zone_tasks == TILES and dispatcher.cross_zone_bytes > 0
    assert (report.cross_zone_tasks, report.cross_zone_bytes) == (
        TILES, dispatcher.cross_zone_bytes)
    assert metrics.registry.get_sample_value("eochain_cross_zone_input_bytes_total",
                                             {"campaign": "zones"}) == report.cross_zone_bytes
    # billed at the inter-AZ rate in the run's ledger (the cost report's spent side)
    assert metrics.ledger().transfer_usd == pytest.approx(
        report.cross_zone_bytes / 1e9 * metrics.inter_az_usd_per_gb)
    text = summary(FlowReport((), (), (), 5, report, report.wall_s), None)
    assert (f"across zones: {TILES} tasks ran outside their inputs' zone, "
            f"{report.cross_zone_bytes / 2**20:.2f} MiB of inputs read") in text, text
