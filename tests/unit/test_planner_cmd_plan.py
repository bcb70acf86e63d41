"""``eochain plan``: table, plan.json, pareto.png, --json, --deadline/--budget overrides."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from planner.campaign import load_campaign
from scheduler.cli.plan import plan

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]

SMALL = {
    "name": "small",
    "inputs": {"survey": {"pairs": 4, "bbox": [4.6, 43.4, 6.6, 44.6], "scene_km": 8}},
    "products": {"ortho": {"gsd_m": 0.5}, "dsm": {"gsd_m": 1.0}},
    "tiling": {"tile_px": 2048, "margin_px": 64},
    "data": {"region": "eu-west-3", "bucket": "raw"},
    "deadline_h": 6,
    "compute": {"regions": ["eu-west-3", "eu-west-1"], "families": ["c7g", "m7g", "r7g"]},
    "quotas": {"on_demand_vcpus": 64, "spot_vcpus": 128, "max_instances_per_type": 4},
}


@pytest.fixture
def campaign_file(tmp_path: Path) -> Path:
    path = tmp_path / "campaign.yaml"
    path.write_text(yaml.safe_dump(SMALL))
    return path


def test_plan_writes_table_json_and_png(campaign_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = CliRunner().invoke(plan, [str(campaign_file), "--out", str(out), "--runs", "3"])
    assert result.exit_code == 0, result.output
    assert "cost" in result.output and "makespan" in result.output and "risk" in result.output
    doc = json.loads((out / "plan.json").read_text())
    assert doc["format"] == "eochain-plan/1"
    assert doc["total_cost_usd"] > 0 and doc["makespan_s"] <= 6 * 3600 * 1.01
    assert doc["figures"] == "simulated" and doc["risk"]["deadline_hit_rate"] >= 0.95
    assert doc["total_cost_usd"] == doc["risk"]["mean_cost_usd"]
    assert doc["makespan_s"] == doc["risk"]["p95_makespan_s"]
    # every cost item is counted, and the total is their sum
    items = doc["cost_breakdown_usd"]
    assert {"compute", "transfer", "head", "network", "volumes", "requests", "storage",
            "inter_az"} <= set(items)
    assert sum(items.values()) == pytest.approx(doc["total_cost_usd"], rel=1e-3)
    assert {e["region"] for e in doc["fleet"]} == {doc["fleet"][0]["region"]}  # one cluster
    # the frontier is Pareto once simulated: faster points cost more
    front = doc["frontier"]
    assert front
    spans = [p["makespan_s"] for p in front]
    assert spans == sorted(spans)
    tasks = {s["name"]: s["tasks"] for s in doc["stages"]}
    for name, n in tasks.items():  # every task placed exactly once
        assert sum(e["tasks"].get(name, 0) for e in doc["fleet"]) == n
    costs = [p["cost_usd"] for p in doc["frontier"]]
    assert costs == sorted(costs, reverse=True)
    assert (out / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_json_flag_prints_machine_plan(campaign_file: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(plan, [str(campaign_file), "--json", "--out", str(tmp_path),
                                       "--runs", "0", "--deadline", "12"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)  # stderr says what was estimated and defaulted
    assert doc["deadline_s"] == 12 * 3600
    assert {"total_cost_usd", "makespan_s", "fleet"} <= set(doc)


def test_impossible_deadline_names_the_critical_path(campaign_file: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(plan, [str(campaign_file), "--deadline", "0.05",
                                       "--out", str(tmp_path)])
    assert result.exit_code != 0
    assert "shorter than the critical path" in result.output


def test_budget_below_cheapest_plan_is_an_error(campaign_file: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(plan, [str(campaign_file), "--budget", "0.01", "--runs", "0",
                                       "--out", str(tmp_path)])
    assert result.exit_code != 0
    assert "budget 0.01 USD is below the cheapest plan" in result.output


def test_budget_is_checked_against_the_simulated_cost(campaign_file: Path,
                                                      tmp_path: Path) -> None:
    """A budget the LP's fluid cost fits but the simulated plan does not is refused."""
    ok = CliRunner().invoke(plan, [str(campaign_file), "--json", "--runs", "5",
                                   "--out", str(tmp_path / "a")])
    assert ok.exit_code == 0, ok.output
    doc = json.loads((tmp_path / "a" / "plan.json").read_text())
    assert doc["lp"]["cost_usd"] < doc["total_cost_usd"]
    budget = (doc["lp"]["cost_usd"] + doc["total_cost_usd"]) / 2
    tight = CliRunner().invoke(plan, [str(campaign_file), "--runs", "5", "--budget",
                                      f"{budget:.4f}", "--out", str(tmp_path / "b")])
    assert tight.exit_code != 0
    assert "mean cost" in tight.output and "budget" in tight.output


def test_example_campaign_is_valid() -> None:
    c = load_campaign(REPO / "examples" / "campaign.yaml")
    assert len(c.pairs) >= 200 and {p.kind for p in c.products} == {"ortho", "dsm"}
