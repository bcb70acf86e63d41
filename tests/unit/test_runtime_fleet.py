"""The plan's fleet as an autoscaler request, and spot losses judged against the plan (pure)."""

from __future__ import annotations

from typing import Any

import pytest

from planner.catalog import load_catalog
from planner.errors import PlanError
from scheduler.cloud.errors import ClusterConfigError
from scheduler.fleet.autoscaling import (
    FleetRequest,
    SpotLosses,
    fleet_bundles,
    fleet_request,
    plan_region,
)
from scheduler.fleet.fallback import FallbackDecision, FallbackPolicy, fallback_pools
from scheduler.products.driver import StageQueue
from scheduler.runtime.placement import surplus_nodes

pytestmark = pytest.mark.unit

REGION = "eu-west-3"


def _plan(*fleet: tuple[str, str, int], budget_usd: float | None = 100.0) -> dict[str, Any]:
    catalog = load_catalog()
    return {"format": "eochain-plan/1", "budget_usd": budget_usd, "total_cost_usd": 5.0,
            "fleet": [{"instance_type": t, "region": REGION, "market": m, "instances": n,
                       "vcpus": catalog.instance_types[t].vcpus if t in catalog.instance_types
                       else 1,
                       "price_usd_per_h": 0.1, "busy_instance_h": 2.0}
                      for t, m, n in fleet]}


def test_one_bundle_per_planned_node_with_its_vcpus_and_pool_resource() -> None:
    plan = _plan(("c7g.xlarge", "spot", 2), ("m7g.xlarge", "on-demand", 1),
                 ("c7g.xlarge", "spot", 1), ("m7g.xlarge", "spot", 0))
    bundles = fleet_bundles(plan)
    assert sorted(bundles, key=sorted) == sorted(
        [{"c7g.xlarge:spot": 1.0}] * 3 + [{"m7g.xlarge:on-demand": 1.0}], key=sorted)


def test_region_comes_from_the_fleet_else_the_data_region() -> None:
    assert plan_region(_plan(("c7g.xlarge", "spot", 1))) == REGION
    assert plan_region({"fleet": [], "data_region": "us-east-1"}) == "us-east-1"
    with pytest.raises(ClusterConfigError, match="data_region"):
        plan_region({"fleet": [{"instance_type": "c7g.xlarge"}]})


def test_a_type_the_region_lacks_fails_with_did_you_mean() -> None:
    with pytest.raises(ClusterConfigError, match=r"c7g\.xlargee.*did you mean 'c7g\.xlarge'"):
        fleet_bundles(_plan(("c7g.xlargee", "spot", 1)))
    with pytest.raises(PlanError, match="format"):  # the plan reader's one error
        fleet_bundles({"fleet": [{"instance_type": "c7g.xlarge", "region": REGION,
                                  "market": "spot", "instances": 1}]})


def test_a_flapping_spot_pool_gets_the_fallback_said_once() -> None:
    said: list[str] = []
    losses = SpotLosses(_plan(("c7g.xlarge", "spot", 3), ("m7g.xlarge", "on-demand", 1)),
                        policy=FallbackPolicy(max_interruptions=2, window_s=60.0),
                        say=said.append, start_s=0.0)
    losses.node_lost({"m7g.xlarge:on-demand"}, 1.0, 0.1)  # not an interruption
    losses.node_lost({"m7g.xlarge:on-demand"}, 2.0, 0.1)
    losses.node_lost({"c7g.xlarge:spot"}, 3.0, 0.2)
    assert said == []
    losses.node_lost({"c7g.xlarge:spot", "other-tag"}, 4.0, 0.5)
    losses.node_lost({"c7g.xlarge:spot"}, 5.0, 0.6)
    assert len(said) == 1 and len(losses.decisions) == 1
    decision = losses.decisions[0]
    assert (decision.from_type, decision.from_market) == ("c7g.xlarge", "spot")
    assert decision.found and (decision.to_type, decision.to_market) != ("c7g.xlarge", "spot")
    # among the pools the rendered cluster config has node types for
    assert (decision.to_type, decision.to_market) in fallback_pools(
        "c7g.xlarge", "spot", REGION, load_catalog())
    assert said[0] == decision.reason
    # 2 busy instance-hours x 4 vCPUs, half of the work done
    assert "4.0 vCPU-h" in decision.reason


def test_no_budget_left_is_said_rather_than_overspent() -> None:
    said: list[str] = []
    losses = SpotLosses(_plan(("c7g.xlarge", "spot", 1), budget_usd=0.0),
                        policy=FallbackPolicy(max_interruptions=1), say=said.append, start_s=0.0)
    losses.node_lost({"c7g.xlarge:spot"}, 10.0, 0.0)
    assert len(said) == 1 and not losses.decisions[0].found
    assert "no fallback fits" in said[0]


def test_without_a_plan_a_flapping_pool_is_reported_without_advice() -> None:
    said: list[str] = []
    losses = SpotLosses(None, policy=FallbackPolicy(max_interruptions=1), say=said.append)
    losses.node_lost({"c7g.large:spot"}, 1.0, 0.0)
    assert said and "no plan" in said[0] and losses.decisions == []


def _staged_plan() -> dict[str, Any]:
    """3 spot c7g for the DSM stage, 2 on-demand m7g for ortho, 1 c7g without per-stage tasks."""
    plan = _plan(("c7g.xlarge", "spot", 3), ("m7g.xlarge", "on-demand", 2),
                 ("c6g.xlarge", "on-demand", 1))
    plan["fleet"][0]["tasks"] = {"dsm": 10}
    plan["fleet"][1]["tasks"] = {"ortho": 4, "dsm": 0}
    return plan


def _pools(bundles: list[dict[str, float]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for b in bundles:
        for k in b:
            out[k] = out.get(k, 0) + 1
    return out


def test_the_request_follows_the_work_left_per_stage() -> None:
    plan = _staged_plan()
    full = {"c7g.xlarge:spot": 3, "m7g.xlarge:on-demand": 2, "c6g.xlarge:on-demand": 1}
    assert _pools(fleet_request(plan, {"dsm": 1.0, "ortho": 1.0})) == full
    assert _pools(fleet_request(plan, {"dsm": 0.1, "ortho": 1.0})) == {
        "c7g.xlarge:spot": 1, "m7g.xlarge:on-demand": 2, "c6g.xlarge:on-demand": 1}
    # DSM done: its spot type is dropped; the entry without per-stage tasks stays while work is left
    assert _pools(fleet_request(plan, {"dsm": 0.0, "ortho": 0.25})) == {
        "m7g.xlarge:on-demand": 1, "c6g.xlarge:on-demand": 1}
    assert fleet_request(plan, {"dsm": 0.0, "ortho": 0.0}) == []
    assert fleet_request(plan, {}) == []
    with pytest.raises(ClusterConfigError, match=r"'ortho' is 1\.5"):
        fleet_request(plan, {"ortho": 1.5})


def test_a_fallback_replaces_the_flapping_pool_in_the_request() -> None:
    plan = _staged_plan()
    subs = {("c7g.xlarge", "spot"): ("m7g.xlarge", "on-demand")}
    bundles = fleet_request(plan, {"dsm": 1.0, "ortho": 1.0}, subs)
    assert _pools(bundles) == {"m7g.xlarge:on-demand": 5, "c6g.xlarge:on-demand": 1}
    issued: list[list[dict[str, float]]] = []
    said: list[str] = []
    fleet = FleetRequest(plan, issue=lambda b: issued.append([dict(x) for x in b]),
                         say=said.append)
    fleet.update({"dsm": 1.0, "ortho": 1.0})
    fleet.update({"dsm": 1.0, "ortho": 1.0})  # unchanged: not re-issued
    assert len(issued) == 1 and _pools(issued[0])["c7g.xlarge:spot"] == 3
    losses = SpotLosses(plan, policy=FallbackPolicy(max_interruptions=1), say=said.append,
                        start_s=0.0, act=fleet.substitute)
    losses.node_lost({"c7g.xlarge:spot"}, 1.0, 0.1)
    decision = losses.decisions[0]
    assert decision.found and decision.to_type is not None
    to = f"{decision.to_type}:{decision.to_market}"
    assert len(issued) == 2 and "c7g.xlarge:spot" not in _pools(issued[1])
    assert _pools(issued[1])[to] >= 3
    assert said[0] == decision.reason
    assert said[1].startswith(f"autoscaler: asking for {decision.to_type} ({decision.to_market}) "
                              "instead of c7g.xlarge (spot)")
    fleet.release()
    assert issued[-1] == [] and fleet.bundles == []


def test_the_pools_the_plan_places_stages_on() -> None:
    fleet = FleetRequest(_staged_plan(), issue=lambda b: None, say=lambda m: None)
    assert fleet.placed == {"c7g.xlarge:spot", "m7g.xlarge:on-demand"}  # not c6g: no tasks


def test_a_failed_fallback_changes_nothing() -> None:
    fleet = FleetRequest(_staged_plan(), issue=lambda b: None, say=lambda m: None)
    fleet.update({"dsm": 1.0})
    none = FallbackDecision("c7g.xlarge", "spot", None, None, None, "no fallback fits")
    assert not fleet.substitute(none) and fleet.substitutions == {}


def test_the_stage_queue_counts_tasks_left_per_stage() -> None:
    queue = StageQueue({"stereo:p:0_0": "stereo", "dsm:p:0_0": "dsm", "ortho:a:0_0": "ortho",
                        "ortho:a:0_1": "ortho"})
    assert queue.remaining_fraction() == {"stereo": 1.0, "dsm": 1.0, "ortho": 1.0}
    assert queue.done("ortho:a:0_0") == "ortho"
    assert queue.done("ortho:a:0_0") is None  # counted once
    assert queue.done("elsewhere") is None
    assert queue.remaining_fraction() == {"stereo": 1.0, "dsm": 1.0, "ortho": 0.5}
    assert queue.left == {"stereo": 1, "dsm": 1, "ortho": 1}


def test_a_live_replan_becomes_the_request_with_substitutions_applied() -> None:
    plan = _staged_plan()
    issued: list[list[dict[str, float]]] = []
    fleet = FleetRequest(plan, issue=lambda b: issued.append([dict(x) for x in b]),
                         say=lambda m: None)
    fleet.update({"dsm": 1.0, "ortho": 1.0})
    fleet.substitute(FallbackDecision("c7g.xlarge", "spot", "c7g.xlarge", "on-demand", 1.0, ""))
    fleet.replan({("c7g.xlarge", "spot"): 2, ("m7g.xlarge", "spot"): 4,
                  ("m7g.xlarge", "on-demand"): 0})
    assert _pools(issued[-1]) == {"c7g.xlarge:on-demand": 2, "m7g.xlarge:spot": 4}
    fleet.update({"dsm": 0.0, "ortho": 0.0})  # nothing left: nothing asked
    assert issued[-1] == []
    with pytest.raises(ClusterConfigError, match=r"re-plan: -1 nodes of m7g\.xlarge"):
        fleet_request(plan, {"dsm": 1.0}, replanned={("m7g.xlarge", "spot"): -1})


def test_idle_nodes_beyond_the_request_are_let_go_busy_ones_and_untyped_kept() -> None:
    pools = {"a": ("c7g.xlarge", "spot"), "b": ("c7g.xlarge", "spot"),
             "c": ("c7g.xlarge", "spot"), "d": ("m7g.xlarge", "on-demand"), "head": ("", "")}
    # c7g: 3 alive, 1 asked, "a" busy: two idle ones go; m7g no longer asked: it goes too
    assert surplus_nodes(pools, {("c7g.xlarge", "spot"): 1}, {"a"}) == {"b", "c", "d"}
    # all busy: none goes yet (they go once idle, at a later re-read)
    assert surplus_nodes(pools, {}, {"a", "b", "c", "d"}) == set()
    assert surplus_nodes(pools, {("c7g.xlarge", "spot"): 3, ("m7g.xlarge", "on-demand"): 1},
                         set()) == set()
