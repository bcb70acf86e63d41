"""Actor choice (locality, zones, node-type preference) and `eochain run`'s helpers, no Ray."""

from __future__ import annotations

from pathlib import Path

import pytest

from planner.plan_document import plan_document_from_dict
from scheduler.cli.run import plan_placement, summary
from scheduler.fleet.cluster_config import zone_resource
from scheduler.fleet.departures import Departure, DepartureCause
from scheduler.products.flow import FlowReport
from scheduler.runtime.dispatch import Dispatcher, RunReport, _Slot
from scheduler.runtime.placement import (
    Choice,
    Placement,
    bytes_across,
    candidates,
    choose,
    input_bytes_by_zone,
    input_zone,
)
from scheduler.runtime.state import DispatchState, Failure, Task, TaskGraph

pytestmark = pytest.mark.unit


def _state_with_held(sizes: dict[str, int]) -> DispatchState:
    tasks = [Task(k, print, (), n) for k, n in sizes.items()]
    tasks.append(Task("join", print, tuple(sizes)))
    state = DispatchState(TaskGraph.build(tasks), 1 << 30)
    for _ in sizes:
        key = state.take()
        assert key is not None
        state.start(key)
        state.complete(key)
    return state


def test_task_goes_to_the_node_holding_most_of_its_input_bytes() -> None:
    state = _state_with_held({"a": 100, "b": 10, "c": 10})
    where = {"a": "n2", "b": "n1", "c": "n1"}
    slots = [_Slot(None, "n1", frozenset()), _Slot(None, "n2", frozenset()),
             _Slot(None, "n3", frozenset())]
    assert Dispatcher._pick(("a", "b", "c"), slots, where, state).node_id == "n2"


def test_without_inputs_the_least_busy_actor_is_chosen() -> None:
    state = _state_with_held({})
    slots = [_Slot(None, "n1", frozenset(), running=2), _Slot(None, "n2", frozenset(), running=1)]
    assert Dispatcher._pick((), slots, {}, state).node_id == "n2"


STEREO, DSM, ORTHO = ("c7g.xlarge:spot",), ("m7g.xlarge:spot",), ("r7g.large:on-demand",)
PLACEMENT = Placement.of([STEREO, DSM, ORTHO, STEREO])


def _slot(node: str, *tags: str, running: int = 0) -> _Slot:
    return _Slot(None, node, frozenset(tags), running=running)


def test_a_node_of_a_placed_type_runs_only_its_stages_and_others_run_anything() -> None:
    stereo, dsm, bare = _slot("n1", *STEREO), _slot("n2", *DSM), _slot("n3")
    assert PLACEMENT.allows(STEREO, stereo.resources)
    assert not PLACEMENT.allows(DSM, stereo.resources)
    assert PLACEMENT.allows(DSM, dsm.resources)
    # a node the plan placed nothing on (no type, or a pool of a re-plan) runs any task
    assert PLACEMENT.allows(DSM, bare.resources)
    assert PLACEMENT.allows(DSM, frozenset({"c6g.large:spot"}))
    assert PLACEMENT.allows((), stereo.resources)  # a task without a placement
    # its own type first, when one is free
    assert candidates(PLACEMENT, DSM, [bare, dsm, stereo]) == [dsm]
    assert candidates(PLACEMENT, DSM, [bare, stereo]) == [bare]


def test_a_task_waits_for_its_type_while_it_is_busy_or_coming_then_runs_anywhere() -> None:
    stereo, dsm_busy = _slot("n1", *STEREO), _slot("n2", *DSM, running=2)
    usable = [stereo, dsm_busy]
    assert choose(PLACEMENT, STEREO, [stereo], usable, [], 0.0, 60.0) is Choice.OWN
    # its actor is busy: wait for it rather than take another stage's node
    assert choose(PLACEMENT, DSM, [stereo], usable, [], 0.0, 60.0) is Choice.WAIT
    # no ortho node yet, one asked of the autoscaler: wait until wait_s ...
    coming = [("r7g.large", "on-demand")]
    assert choose(PLACEMENT, ORTHO, [stereo], usable, coming, 59.0, 60.0) is Choice.WAIT
    assert choose(PLACEMENT, ORTHO, [stereo], usable, coming, 60.0, 60.0) is Choice.ANY
    # ... and at once when it is neither there nor coming: never stall
    assert choose(PLACEMENT, ORTHO, [stereo], usable, [], 0.0, 60.0) is Choice.ANY


Z0, Z1 = zone_resource(0), zone_resource(1)


def test_a_tasks_zone_is_the_one_holding_most_of_its_input_bytes() -> None:
    tags_of = {"n0": frozenset({*STEREO, Z0}), "n1": frozenset({*STEREO, Z1}),
               "bare": frozenset(STEREO)}
    where = {"plan": "n1", "a": "n0", "b": "n0", "c": "bare"}
    by_zone = input_bytes_by_zone(("plan", "a", "b", "c"), where,
                                  {"plan": 100, "a": 30, "b": 30, "c": 7}, tags_of)
    assert by_zone == {Z1: 100, Z0: 60, None: 7}
    assert input_zone(by_zone) == Z1
    assert input_zone({Z1: 5, Z0: 5}) == Z0  # a tie: the first by name, whatever the order
    # a product's plan task (no input), or a cluster without zones: no zone
    assert input_zone({}) is None and input_zone({None: 7}) is None
    # what a node of each zone would read across zones (unknown zones count nothing)
    assert bytes_across(by_zone, Z0) == 100 and bytes_across(by_zone, Z1) == 60
    assert bytes_across(by_zone, None) == 0


def test_a_task_stays_in_its_zone_while_the_zone_has_a_node_for_it() -> None:
    here, there = _slot("n1", *STEREO, Z1), _slot("n0", *STEREO, Z0)
    busy_here = _slot("n1", *STEREO, Z1, running=2)
    # its zone's actor is free: only it
    assert choose(PLACEMENT, STEREO, [there, here], [there, here], [], 0.0, 60.0, Z1) \
        is Choice.OWN
    assert candidates(PLACEMENT, STEREO, [there, here], Z1) == [here]
    assert candidates(PLACEMENT, (), [there, here], Z1) == [here]  # a task of no type too
    # busy: wait for it, rather than read the inputs across zones
    assert choose(PLACEMENT, STEREO, [there], [there, busy_here], [], 0.0, 60.0, Z1) \
        is Choice.WAIT
    # without a zone (a plan task, a cluster without zones): any free actor of its types
    assert choose(PLACEMENT, STEREO, [there], [there, busy_here], [], 0.0, 60.0) is Choice.OWN


def test_a_task_leaves_its_zone_only_when_the_zone_has_no_node_for_it() -> None:
    there = _slot("n0", *STEREO, Z0)
    # its zone lost (nodes gone or draining: not usable): another zone's node of its type
    assert choose(PLACEMENT, STEREO, [there], [there], [], 0.0, 60.0, Z1) is Choice.OWN
    assert candidates(PLACEMENT, STEREO, [there], Z1) == [there]
    # its zone has nodes, but only of another stage's type: the same
    dsm_here = _slot("n1", *DSM, Z1)
    assert choose(PLACEMENT, STEREO, [there, dsm_here], [there, dsm_here], [], 0.0, 60.0, Z1) \
        is Choice.OWN
    assert candidates(PLACEMENT, STEREO, [there, dsm_here], Z1) == [there]


def test_a_fallback_pool_takes_over_the_stages_of_the_pool_it_replaces() -> None:
    subs = {("c7g.xlarge", "spot"): ("m7g.xlarge", "spot"),
            ("m7g.xlarge", "spot"): ("m7g.xlarge", "on-demand")}
    placement = Placement.of([STEREO, DSM, ORTHO], subs)
    assert placement.accepted(STEREO) == {"c7g.xlarge:spot", "m7g.xlarge:spot",
                                          "m7g.xlarge:on-demand"}
    on_demand = frozenset({"m7g.xlarge:on-demand"})
    assert placement.allows(STEREO, on_demand) and placement.allows(DSM, on_demand)
    assert not placement.allows(ORTHO, on_demand)


def test_a_node_the_plan_places_a_stage_on_runs_no_other_stage_even_when_it_is_done() -> None:
    only_ortho = Placement.of([ORTHO], planned=STEREO + DSM + ORTHO)
    assert not only_ortho.allows(ORTHO, frozenset(STEREO))
    assert Placement.of([ORTHO]).allows(ORTHO, frozenset(STEREO))  # without the plan's pools


def test_the_plan_places_each_stage_on_the_types_of_its_fleet_entries() -> None:
    plan = plan_document_from_dict({"format": "eochain-plan/1", "fleet": [
        {"instance_type": "m7g.2xlarge", "market": "spot", "instances": 2,
         "tasks": {"stereo": 10, "dsm": 0}},
        {"instance_type": "c7g.2xlarge", "market": "spot", "instances": 3,
         "tasks": {"dsm": 10, "ortho": 2}},
        {"instance_type": "r7i.large", "market": "on-demand", "instances": 1,
         "tasks": {"ortho": 4}},
        {"instance_type": "r7i.large", "market": "spot", "instances": 0, "tasks": {"ortho": 4}},
        {"instance_type": "c6g.large", "market": "spot", "instances": 1},
    ]})
    assert plan_placement(plan) == {"stereo": ("m7g.2xlarge:spot",),
                                    "dsm": ("c7g.2xlarge:spot",),
                                    "ortho": ("c7g.2xlarge:spot", "r7i.large:on-demand")}
    assert plan_placement(plan_document_from_dict({"format": "eochain-plan/1",
                                                   "fleet": []})) == {}


def test_summary_names_failed_scenes_and_cost() -> None:
    left = (Departure("n1", "c7g.xlarge", "spot", DepartureCause.SCALE_DOWN, 1.0),
            Departure("n2", "m7g.xlarge", "spot", DepartureCause.SCALE_DOWN, 2.0),
            Departure("n3abcdefghijklmn", "m7g.xlarge", "spot", DepartureCause.INTERRUPTION,
                      3.0, "1 call running, a call lost there"))
    dispatch = RunReport({}, (), 10, 1, 2, 2**20, 3.0, departures=left)
    report = FlowReport((), ("ortho/a.tif",), (Failure("b/survey", "b", "b.tif: bad TIFF"),),
                        2, dispatch, 3.0)
    text = summary(report, 0.0123)
    assert "0 written, 1 already done, 1 failed, of 2" in text
    assert "FAILED b: b.tif: bad TIFF" in text
    assert "1 retried, 2 recomputed" in text and "$0.0123" in text
    assert "nodes left: 1 interruption, 2 scale-down" in text
    # what made the lost node busy, for it alone (the idle ones left with nothing)
    assert "m7g.xlarge spot node n3abcdefghij left (interruption) with 1 call running, " \
        "a call lost there" in text
    assert text.count(" left (") == 1


def test_system_failures_are_told_from_deterministic_errors() -> None:
    from ray.exceptions import ActorDiedError, ObjectLostError, RayTaskError

    from scheduler.runtime.dispatch import is_system_failure

    lost = ObjectLostError("ab" * 14, None, "")
    assert is_system_failure(ActorDiedError())
    assert is_system_failure(lost)
    assert is_system_failure(RayTaskError("run", "", lost))  # type: ignore[no-untyped-call]
    plain = AttributeError("no 'matching'")
    unpicklable = RayTaskError("run", "", plain)  # type: ignore[no-untyped-call]
    assert not is_system_failure(unpicklable)


def test_lost_inputs_are_named_by_the_error() -> None:
    from ray import ObjectRef
    from ray.exceptions import ActorDiedError, ObjectReconstructionFailedError, RayTaskError

    from scheduler.runtime.dispatch import lost_input_keys

    a: ObjectRef[object] = ObjectRef(b"\x01" * 28)
    b: ObjectRef[object] = ObjectRef(b"\x02" * 28)
    lost = ObjectReconstructionFailedError(b.hex(), None, "")
    wrapped = RayTaskError("run", "", lost)  # type: ignore[no-untyped-call]
    assert lost_input_keys(wrapped, {"a": a, "b": b}) == ["b"]
    unknown = ObjectReconstructionFailedError("ff" * 28, None, "")
    assert lost_input_keys(unknown, {"a": a, "b": b}) == ["a", "b"]
    assert lost_input_keys(ActorDiedError(), {"a": a}) == []


def test_run_heights_reach_the_dsm_and_geoid_heights_need_a_geoid(tmp_path: Path) -> None:
    """``eochain run --heights``: the DSMs' vertical reference, refused without ``--geoid``."""
    import json

    import yaml
    from click.testing import CliRunner

    from ops.synthetic.scene import SceneSpec, generate_scene
    from scheduler.cli.run import campaign_flow, run
    from scheduler.cli.scene_survey import load_surveyed_campaign
    from scheduler.products.driver import Driver

    scene = generate_scene(SceneSpec(width=64, height=64, seed=3), tmp_path / "scene")
    lon0, lat0, lon1, lat1 = scene.footprint_lonlat
    entry = {"footprint": [lon0, lat0, lon1, lat1], "rows": 64, "cols": 64}
    path = tmp_path / "campaign.yaml"
    path.write_text(yaml.safe_dump(json.loads(json.dumps({
        "name": "heights",
        "inputs": {"scenes": [{"id": "a", "uri": "scene/view_0.tif", **entry},
                              {"id": "b", "uri": "scene/view_1.tif", **entry}],
                   "pairs": [["a", "b"]]},
        "products": {"dsm": {"gsd_m": 1.0}}}))))
    dem = str(scene.out_dir / "dem.tif")
    refused = CliRunner().invoke(run, [str(path), "--dem", dem, "--heights", "geoid"])
    assert refused.exit_code == 2 and "--heights geoid needs --geoid" in refused.output
    flow = campaign_flow(load_surveyed_campaign(path), path, Driver(address="serial"), dem=dem,
                         geoid=dem, tile_px=None, dest=None, placement={}, heights="geoid")
    assert flow.dsm_step is not None and flow.dsm_step.heights == "geoid"
