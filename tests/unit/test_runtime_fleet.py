"""The plan's fleet as an autoscaler request, and spot losses judged against the plan (pure)."""

from __future__ import annotations

from typing import Any

import pytest

from planner.catalog import load_catalog
from scheduler.cloud.errors import ClusterConfigError
from scheduler.cloud.fallback import FallbackPolicy
from scheduler.runtime.fleet import SpotLosses, fleet_bundles, plan_region

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
        [{"CPU": 4.0, "c7g.xlarge:spot": 1.0}] * 3 + [{"CPU": 4.0, "m7g.xlarge:on-demand": 1.0}],
        key=sorted)
    assert fleet_bundles(plan, cpus_per_node=1)[0]["CPU"] == 1.0


def test_region_comes_from_the_fleet_else_the_data_region() -> None:
    assert plan_region(_plan(("c7g.xlarge", "spot", 1))) == REGION
    assert plan_region({"fleet": [], "data_region": "us-east-1"}) == "us-east-1"
    with pytest.raises(ClusterConfigError, match="data_region"):
        plan_region({"fleet": [{"instance_type": "c7g.xlarge"}]})


def test_a_type_the_region_lacks_fails_with_did_you_mean() -> None:
    with pytest.raises(ClusterConfigError, match=r"c7g\.xlargee.*did you mean 'c7g\.xlarge'"):
        fleet_bundles(_plan(("c7g.xlargee", "spot", 1)))
    with pytest.raises(ClusterConfigError, match="format"):
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
