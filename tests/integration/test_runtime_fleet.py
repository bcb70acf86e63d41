"""A run with a plan asks Ray's autoscaler for the plan's fleet and withdraws it at the end.

The campaign (ortho of one small synthetic scene, 64-px tiles) runs through
the :class:`~scheduler.products.driver.Driver` on a real local Ray. The
autoscaler's pending request is read from the GCS, where
``ray.autoscaler.sdk.request_resources`` leaves it (the internal KV key of
autoscaler v1, the cluster constraint of v2): while tasks complete it holds
one bundle per planned node, after the run it is empty. A local Ray has no
autoscaler to act on it; scaling itself is tested with the ``fake_multinode``
provider in ``test_spot_autoscaling.py``.

The last tests remove a node of a local multi-node cluster midway: a busy
spot node is an interruption (the pool's fallback is said once, and the
interruption and fallback counters of the run's metrics count it), an idle
node that the run's own shrunk request let go is a scale-down (nothing
reaches the spot tracker or the metrics).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from scheduler.fleet.autoscaling import FleetRequest, SpotLosses
from scheduler.fleet.departures import DepartureCause
from scheduler.fleet.fallback import FallbackPolicy
from scheduler.observe.metrics import CampaignMetrics
from scheduler.products.driver import Driver
from scheduler.products.flow import SceneInput
from scheduler.runtime.dispatch import Dispatcher, DispatchOptions, Progress
from scheduler.runtime.state import Task, TaskGraph
from scheduler.testing.cluster import LocalCluster, NodeSpec

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PLAN: dict[str, Any] = {"format": "eochain-plan/1", "budget_usd": 10.0, "fleet": [
    {"instance_type": "c7g.xlarge", "region": "eu-west-3", "market": "spot", "instances": 2},
    {"instance_type": "m7g.xlarge", "region": "eu-west-3", "market": "on-demand",
     "instances": 1}]}
FLEET = sorted([{"c7g.xlarge:spot": 1.0}] * 2 + [{"m7g.xlarge:on-demand": 1.0}],
               key=lambda b: sorted(b.items()))


def requested_bundles() -> list[dict[str, float]]:
    """The autoscaler request now recorded in the connected cluster's GCS."""
    from ray._private.ray_constants import AUTOSCALER_RESOURCE_REQUEST_CHANNEL
    from ray.autoscaler.v2.utils import is_autoscaler_v2
    from ray.experimental.internal_kv import _internal_kv_get, internal_kv_get_gcs_client

    if is_autoscaler_v2():
        from ray.autoscaler.v2.sdk import get_cluster_status

        gcs = internal_kv_get_gcs_client()  # type: ignore[no-untyped-call]
        status = get_cluster_status(gcs.address)
        bundles = [dict(by_count.bundle)
                   for demand in status.resource_demands.cluster_constraint_demand
                   for by_count in demand.bundles_by_count for _ in range(by_count.count)]
    else:
        raw = _internal_kv_get(AUTOSCALER_RESOURCE_REQUEST_CHANNEL)
        bundles = json.loads(raw) if raw else []
    return sorted(({k: float(v) for k, v in b.items()} for b in bundles),
                  key=lambda b: sorted(b.items()))


@pytest.fixture()
def local_ray() -> Iterator[None]:
    import ray

    if ray.is_initialized():
        ray.shutdown()  # a connection left by an earlier module
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def shared_ray() -> Iterator[None]:
    """One local Ray for the runs that only read the request (each releases it at its end):
    the first Driver starts it, the others connect to it (a Ray start is seconds)."""
    import ray

    if ray.is_initialized():
        ray.shutdown()  # a connection left by an earlier module
    yield
    ray.shutdown()


def test_run_requests_the_plans_fleet_and_releases_it(shared_ray: None, tmp_path: Path) -> None:
    from ops.synthetic.scene import SceneSpec, generate_scene

    scene = generate_scene(SceneSpec(width=192, height=192, seed=3), tmp_path / "scene")
    during: list[list[dict[str, float]]] = []

    def watch(p: Progress) -> None:
        if len(during) < 3:
            during.append(requested_bundles())

    driver = Driver(num_cpus=2, plan=PLAN)
    report = (driver.get_flow([SceneInput("a", str(scene.out_dir / "view_0.tif"))])
              .ortho(dem=str(scene.out_dir / "dem.tif"), tile_px=64)
              .write(tmp_path / "out").run(watch))
    assert report.ok, report.failures
    assert len(report.written) == 1
    assert during and all(b == FLEET for b in during), during
    assert requested_bundles() == []


class Recorder:
    """A re-planner that records what it hears and, from the third task on, asks for one
    on-demand c7g.xlarge only (the live re-planning hook of ``Driver.dispatch``)."""

    def __init__(self) -> None:
        self.done: list[tuple[str, float]] = []
        self.asked: list[dict[str, int]] = []

    def on_task_done(self, stage: str, runtime_s: float) -> None:
        self.done.append((stage, runtime_s))

    def on_interruption(self, instance_type: str, market: str) -> None:
        raise AssertionError(f"no node is interrupted here ({instance_type} {market})")

    def fleet_for(self, remaining_tasks_by_stage: Mapping[str, int],
                  elapsed_s: float) -> dict[tuple[str, str], int] | None:
        self.asked.append(dict(remaining_tasks_by_stage))
        return {("c7g.xlarge", "on-demand"): 1} if len(self.done) >= 3 else None


def test_a_replanner_hears_each_task_and_its_fleet_becomes_the_request(
        shared_ray: None, tmp_path: Path) -> None:
    from ops.synthetic.scene import SceneSpec, generate_scene

    scene = generate_scene(SceneSpec(width=192, height=192, seed=3), tmp_path / "scene")
    replanner = Recorder()
    requests: list[list[dict[str, float]]] = []

    def watch(p: Progress) -> None:
        requests.append(requested_bundles())

    driver = Driver(num_cpus=2, plan=PLAN, replanner=replanner)
    report = (driver.get_flow([SceneInput("a", str(scene.out_dir / "view_0.tif"))])
              .ortho(dem=str(scene.out_dir / "dem.tif"), tile_px=64)
              .write(tmp_path / "out").run(watch))
    assert report.ok, report.failures
    tasks = report.dispatch.task_runs if report.dispatch else 0
    assert [stage for stage, _ in replanner.done] == ["ortho"] * tasks
    assert all(runtime_s >= 0 for _, runtime_s in replanner.done)
    assert replanner.asked[0]["ortho"] < tasks  # tasks left, counted per stage
    assert requests[0] == FLEET and [{"c7g.xlarge:on-demand": 1.0}] in requests
    assert requested_bundles() == []


def test_a_failed_run_releases_the_fleet_too(shared_ray: None, tmp_path: Path) -> None:
    driver = Driver(num_cpus=1, plan=PLAN)
    driver.connect()

    class Boom(Exception):
        """Raised from the progress callback: the run fails midway."""

    def progress(p: Progress) -> None:
        assert requested_bundles() == FLEET
        raise Boom

    graph = TaskGraph.build([Task("t", lambda ctx: 1)])
    with pytest.raises(Boom):
        driver.dispatch(graph, progress, lambda key, value: None)
    assert requested_bundles() == []


def _nap(ctx: object) -> int:
    time.sleep(0.25)
    return 1


def test_a_lost_spot_node_is_recorded_and_its_flapping_pool_gets_a_fallback() -> None:
    """Two 1-CPU nodes, one spot; the spot node is killed midway (an interruption).

    With a policy that calls one interruption flapping, the dispatcher says
    the plan's fallback for ``c7g.xlarge (spot)`` once; the lost work is
    re-queued and the run completes on the on-demand node.
    """
    said: list[str] = []
    spot = SpotLosses(PLAN, policy=FallbackPolicy(max_interruptions=1), say=said.append)
    metrics = CampaignMetrics("fleet-test")
    nodes = [NodeSpec(1, resources={"c7g.xlarge:spot": 1.0}),
             NodeSpec(1, resources={"m7g.xlarge:on-demand": 1.0})]
    with LocalCluster(nodes) as cluster:
        victim = cluster.nodes[0]

        def interrupt(p: Progress) -> None:
            if p.tasks_done == 4 and victim in cluster.nodes:
                cluster.remove_node(victim)

        graph = TaskGraph.build([Task(f"t{i}", _nap) for i in range(60)])
        dispatcher = Dispatcher(DispatchOptions(), metrics=metrics, spot=spot)
        report = dispatcher.run(graph, interrupt)
    assert report.ok, report.failures
    assert len(report.results) == 60
    assert len(said) == 1 and said == spot.messages
    assert said[0].startswith("c7g.xlarge (spot) keeps being interrupted")
    assert [(d.from_type, d.from_market) for d in spot.decisions] == [("c7g.xlarge", "spot")]
    assert [(d.instance_type, d.cause) for d in dispatcher.departures] == [
        ("c7g.xlarge", DepartureCause.INTERRUPTION)]
    assert dispatcher.departures[0].held  # what it was running (or lost) when it went
    labels = {"campaign": "fleet-test", "instance_type": "c7g.xlarge"}
    assert metrics.registry.get_sample_value("eochain_spot_interruptions_total", labels) == 1.0
    to = spot.decisions[0]
    assert metrics.registry.get_sample_value("eochain_market_fallbacks_total", {
        **labels, "from_market": "spot", "to_market": str(to.to_market)}) == 1.0


#: the spot pool carries only the (already finished) dsm stage: the run's request drops it
STAGED_PLAN: dict[str, Any] = {"format": "eochain-plan/1", "budget_usd": 10.0, "fleet": [
    {"instance_type": "c7g.xlarge", "region": "eu-west-3", "market": "spot", "instances": 1,
     "tasks": {"dsm": 1}},
    {"instance_type": "m7g.xlarge", "region": "eu-west-3", "market": "on-demand",
     "instances": 1, "tasks": {"ortho": 40}}]}


@pytest.mark.parametrize(("dsm_left", "cause"), [(0.0, DepartureCause.SCALE_DOWN),
                                                  (1.0, DepartureCause.FAILURE)])
def test_an_idle_node_the_request_let_go_is_a_scale_down_not_an_interruption(
        dsm_left: float, cause: DepartureCause) -> None:
    """A chain of naps runs on the on-demand node (its preferred type, always free),
    so the spot node sits idle; it is removed midway. With the request for its
    pool shrunk to nothing (``dsm_left=0``) that is the run's own scale-down;
    with the request still wanting it, a failure. Neither is an interruption.
    """
    fleet = FleetRequest(STAGED_PLAN, issue=lambda bundles: None, say=lambda message: None)
    fleet.update({"dsm": dsm_left, "ortho": 1.0})
    said: list[str] = []
    spot = SpotLosses(STAGED_PLAN, policy=FallbackPolicy(max_interruptions=1), say=said.append)
    metrics = CampaignMetrics("scale-test")
    nodes = [NodeSpec(1, resources={"c7g.xlarge:spot": 1.0}),
             NodeSpec(1, resources={"m7g.xlarge:on-demand": 1.0})]
    on_demand = ("m7g.xlarge:on-demand",)
    chain = [Task("c0", _nap, resources=on_demand)] + [
        Task(f"c{i}", _nap_after, (f"c{i - 1}",), resources=on_demand) for i in range(1, 40)]
    with LocalCluster(nodes) as cluster:
        victim = cluster.nodes[0]

        def scale_down(p: Progress) -> None:
            if p.tasks_done == 2 and victim in cluster.nodes:
                cluster.remove_node(victim)

        dispatcher = Dispatcher(DispatchOptions(), metrics=metrics, spot=spot, fleet=fleet)
        report = dispatcher.run(TaskGraph.build(chain), scale_down)
    assert report.ok, report.failures
    assert report.retries == 0  # nothing ran on the node that left
    assert [(d.instance_type, d.cause, d.held) for d in dispatcher.departures] == [
        ("c7g.xlarge", cause, "")]
    assert said == [] and spot.tracker.count("c7g.xlarge", "spot", time.monotonic()) == 0
    assert metrics.registry.get_sample_value(
        "eochain_spot_interruptions_total",
        {"campaign": "scale-test", "instance_type": "c7g.xlarge"}) in (None, 0.0)
    assert metrics.registry.get_sample_value(
        "eochain_node_departures_total",
        {"campaign": "scale-test", "instance_type": "c7g.xlarge", "cause": cause.value}) == 1.0


def _nap_after(ctx: object, previous: int) -> int:
    time.sleep(0.25)
    return previous + 1


def _free_cpus() -> float:
    import ray

    return float(ray.available_resources().get("CPU", 0.0))  # type: ignore[no-untyped-call]


def test_warm_actors_start_and_preload_before_the_run_and_cool_ends_those_no_run_took(
        local_ray: None) -> None:
    from tests.conftest import poll_until

    driver = Driver(num_cpus=2)
    driver.warm()  # one actor per CPU, started now
    poll_until("the warm actors hold both CPUs", lambda: _free_cpus() == 0.0)
    driver.cool()
    poll_until("the CPUs are free again", lambda: _free_cpus() == 2.0)
    driver.warm(("tabnanny",))  # the actors import it before their first task
    driver.warm(("tabnanny", "pyclbr"))  # warm already: they import what they lack too
    report = driver.dispatch(TaskGraph.build([Task("t", _imported_tabnanny),
                                              Task("u", _imported_pyclbr)]), None,
                             lambda k, v: None)
    assert report.ok and report.results == {"t": True, "u": True}
    poll_until("the run ended its actors", lambda: _free_cpus() == 2.0)
    # actors of a run that was not warmed have not imported it
    report = driver.dispatch(TaskGraph.build([Task("t", _imported_tabnanny)]), None,
                             lambda k, v: None)
    assert report.ok and report.results == {"t": False}


def _imported_tabnanny(ctx: object) -> bool:
    return "tabnanny" in sys.modules


def _imported_pyclbr(ctx: object) -> bool:
    return "pyclbr" in sys.modules


class StereoNap:
    """A task of the stereo stage (its operation, ``stereo_nap``, names it) that naps."""

    def __call__(self, ctx: object) -> int:
        time.sleep(0.2)
        return 1


class OrthoNap(StereoNap):
    """The same, of the ortho stage."""


#: stereo on a spot c7g, ortho on a spot r7g; the catalog's fallback for c7g.xlarge spot
#: in eu-west-3 is c6g.2xlarge spot (the cheapest same-architecture spot offer)
PLACED_PLAN: dict[str, Any] = {"format": "eochain-plan/1", "budget_usd": 10.0, "fleet": [
    {"instance_type": "c7g.xlarge", "region": "eu-west-3", "market": "spot", "instances": 1,
     "vcpus": 4, "busy_instance_h": 0.01, "tasks": {"stereo": 30}},
    {"instance_type": "r7g.xlarge", "region": "eu-west-3", "market": "spot", "instances": 1,
     "vcpus": 4, "busy_instance_h": 0.01, "tasks": {"ortho": 30}}]}


def test_the_fallback_pool_takes_over_the_stage_of_the_pool_it_replaces() -> None:
    """The stereo node is interrupted; the fallback pool's node, asked for instead, runs the
    rest of stereo, and the ortho node runs ortho only, before and after."""
    metrics = CampaignMetrics("fallback-test")
    stereo, ortho = ("c7g.xlarge:spot",), ("r7g.xlarge:spot",)
    tasks = [Task(f"stereo:p:0_{i}", StereoNap(), resources=stereo, stage="stereo")
             for i in range(30)]
    tasks += [Task(f"ortho:a:0_{i}", OrthoNap(), resources=ortho, stage="ortho")
              for i in range(30)]
    nodes = [NodeSpec(1, resources={"c7g.xlarge:spot": 1.0}),
             NodeSpec(1, resources={"r7g.xlarge:spot": 1.0})]
    joined: list[str] = []
    with LocalCluster(nodes) as cluster:
        victim = cluster.nodes[0]

        def autoscaler(bundles: Sequence[Mapping[str, float]]) -> None:
            """Brings up the nodes of pools newly asked for (here: the fallback's)."""
            for pool in {k for b in bundles for k in b} - set(stereo + ortho) - set(joined):
                joined.append(pool)
                cluster.add_node(NodeSpec(1, resources={pool: 1.0}))

        fleet = FleetRequest(PLACED_PLAN, issue=autoscaler, say=lambda message: None)
        fleet.update({"stereo": 1.0, "ortho": 1.0})
        spot = SpotLosses(PLACED_PLAN, policy=FallbackPolicy(max_interruptions=1),
                          say=lambda message: None, act=fleet.substitute)

        def interrupt(p: Progress) -> None:
            if p.tasks_done >= 6 and victim in cluster.nodes:
                cluster.remove_node(victim)

        dispatcher = Dispatcher(DispatchOptions(), metrics=metrics, spot=spot, fleet=fleet)
        report = dispatcher.run(TaskGraph.build(tasks), interrupt)
    assert report.ok, report.failures
    assert fleet.substitutions == {("c7g.xlarge", "spot"): ("c6g.2xlarge", "spot")}
    assert joined == ["c6g.2xlarge:spot"]
    assert [(d.instance_type, d.cause) for d in dispatcher.departures] == [
        ("c7g.xlarge", DepartureCause.INTERRUPTION)]
    ran = {(s.stage, s.instance_type): s.tasks for s in metrics.ledger().stages}
    assert set(ran) == {("stereo", "c7g.xlarge"), ("stereo", "c6g.2xlarge"),
                        ("ortho", "r7g.xlarge")}, ran
    assert ran[("ortho", "r7g.xlarge")] == 30
