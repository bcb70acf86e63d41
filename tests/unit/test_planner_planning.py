"""plan_campaign keeps its promises: simulated figures, one region, refusals instead of misses."""

from __future__ import annotations

import pytest

from planner.calibration import load_calibration
from planner.campaign import parse_campaign
from planner.catalog import load_catalog
from planner.errors import InfeasiblePlanError
from planner.planning import plan_campaign, plan_to_dict
from planner.simulator import CampaignSimulator

pytestmark = pytest.mark.unit

DOC = {
    "name": "promises",
    "inputs": {"survey": {"pairs": 3, "bbox": [4.6, 43.4, 6.6, 44.6], "scene_km": 8}},
    "products": {"ortho": {"gsd_m": 0.5}, "dsm": {"gsd_m": 1.0}},
    "tiling": {"tile_px": 2048, "margin_px": 64},
    "data": {"region": "eu-west-3", "bucket": "raw"},
    "deadline_h": 6,
    "compute": {"regions": ["eu-west-3", "eu-west-1"], "families": ["c7g", "m7g"]},
    "quotas": {"on_demand_vcpus": 64, "spot_vcpus": 128, "max_instances_per_type": 4},
}


def test_plan_figures_agree_with_fresh_simulations() -> None:
    """The headline cost and makespan are the simulator's: fresh seeds agree within 5 %."""
    catalog, calibration = load_catalog(), load_calibration()
    cp = plan_campaign(parse_campaign(DOC), catalog, calibration, simulate_runs=20, seed=0)
    doc = plan_to_dict(cp)
    assert cp.simulation is not None and doc["figures"] == "simulated"
    assert len({e["region"] for e in doc["fleet"]}) == 1
    from planner.estimate import campaign_dag
    from planner.order import depth_first_order

    graph = campaign_dag(cp.campaign, calibration, catalog.families)
    regions = sorted({o.region for o in cp.problem.offers})
    sim = CampaignSimulator(graph, depth_first_order(graph), cp.problem,
                            spot=catalog.spot_model, overheads=catalog.overheads,
                            head_usd_per_h={r: catalog.head_usd_per_h(r) for r in regions})
    fresh = sim.simulate(cp.chosen, 40, seed=1000, deadline_s=cp.deadline_h * 3600,
                         runtime_error=cp.runtime_error, zones=cp.zones)
    assert fresh.mean_cost_usd == pytest.approx(doc["total_cost_usd"], rel=0.05)
    assert fresh.mean_makespan_s == pytest.approx(doc["risk"]["mean_makespan_s"], rel=0.05)
    assert fresh.deadline_hit_rate >= 0.9


def test_a_deadline_the_simulation_misses_is_refused() -> None:
    """Just above the critical path the LP finds a fleet, but +/-30 % task times miss it."""
    catalog, calibration = load_catalog(), load_calibration()
    campaign = parse_campaign(DOC)
    cp = plan_campaign(campaign, catalog, calibration, simulate_runs=0)
    floor_h = (cp.problem.critical_path_s + cp.problem.startup_s) / 3600
    with pytest.raises(InfeasiblePlanError, match="no plan keeps a deadline"):
        plan_campaign(campaign, catalog, calibration, deadline_h=floor_h * 1.02,
                      simulate_runs=5)
