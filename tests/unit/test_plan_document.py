"""The plan document: one reader and writer of plan.json, one error (PlanError) for a bad plan."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from planner.errors import PlanError, PlannerError
from planner.plan_document import (
    PLAN_FORMAT,
    FleetEntry,
    PlanDocument,
    ReplanLimits,
    ReplanPool,
    StageRow,
    as_plan_document,
    plan_document_from_dict,
    read_plan,
    write_plan,
)

pytestmark = pytest.mark.unit


def _plan() -> dict[str, Any]:
    """A plan as `eochain plan` writes it: stereo, dsm and ortho on three node types."""
    return {
        "format": PLAN_FORMAT, "campaign": "gizeh", "source": "campaign.yaml",
        "deadline_s": 86400.0, "budget_usd": None, "data_region": "eu-west-3",
        "total_cost_usd": 1.25, "makespan_s": 5400.0, "figures": "simulated",
        "cost_breakdown_usd": {"compute": 1.0, "transfer": 0.05, "head": 0.2},
        "zones": 2, "lp": {"cost_usd": 1.1, "makespan_s": 5000.0},
        "fleet": [
            {"instance_type": "m7g.2xlarge", "region": "eu-west-3", "market": "spot",
             "instances": 2, "vcpus": 8, "mem_gib": 32.0, "price_usd_per_h": 0.12,
             "interruption_band": "<5%", "tasks": {"stereo": 40}, "busy_instance_h": 1.5},
            {"instance_type": "c7g.xlarge", "region": "eu-west-3", "market": "on-demand",
             "instances": 1, "vcpus": 4, "mem_gib": 8.0, "price_usd_per_h": 0.145,
             "interruption_band": None, "tasks": {"dsm": 40, "ortho": 10},
             "busy_instance_h": 1.0},
            {"instance_type": "r7g.large", "region": "eu-west-3", "market": "spot",
             "instances": 1, "vcpus": 2, "mem_gib": 16.0, "price_usd_per_h": 0.04,
             "interruption_band": "5-10%", "tasks": {"ortho": 30}, "busy_instance_h": 0.5},
        ],
        "stages": [{"name": "stereo", "tasks": 40, "threads": 4, "peak_mem_gib": 2.5,
                    "transfer_bytes_per_task": 1000},
                   {"name": "dsm", "tasks": 40, "threads": 1, "peak_mem_gib": 0.5,
                    "transfer_bytes_per_task": 0},
                   {"name": "ortho", "tasks": 40, "threads": 1, "peak_mem_gib": 0.4,
                    "transfer_bytes_per_task": 500}],
        "startup_s": 180.0, "risk": {"runs": 10}, "frontier": [], "catalog_date": "2025-11-01",
        "replan": {"pools": [{"instance_type": "m7g.2xlarge", "market": "spot",
                              "max_instances": 8},
                             {"instance_type": "c7g.8xlarge", "market": "on-demand",
                              "max_instances": 4}], "max_instances": 12},
    }


def test_a_plan_round_trips_through_the_document_and_the_file(tmp_path: Path) -> None:
    doc = plan_document_from_dict(_plan())
    assert doc.fleet[0] == FleetEntry("m7g.2xlarge", "spot", 2, "eu-west-3", 0.12, 8, 32.0,
                                      "<5%", {"stereo": 40}, 1.5)
    assert [s.name for s in doc.stages] == ["stereo", "dsm", "ortho"]
    assert doc.zones == 2 and plan_document_from_dict({**_plan(), "zones": None}).zones == 1
    assert doc.replan == ReplanLimits((ReplanPool("m7g.2xlarge", "spot", 8),
                                       ReplanPool("c7g.8xlarge", "on-demand", 4)), 12)
    assert plan_document_from_dict({**_plan(), "replan": None}).replan is None
    # every key with a value survives, typed ones and kept ones (risk, lp...); a
    # null is an absent key (readers of the dict get None from .get either way)
    given = _plan()
    del given["budget_usd"], given["fleet"][1]["interruption_band"]
    assert doc.to_dict() == given
    assert plan_document_from_dict(doc.to_dict()) == doc
    path = write_plan(tmp_path / "plan.json", doc)
    assert json.loads(path.read_text()) == given
    back = read_plan(path)
    assert back == doc and back.origin == f"plan {str(path)!r}"
    assert as_plan_document(back) is back


def test_the_plan_rows_per_type_and_stage() -> None:
    doc = plan_document_from_dict(_plan())
    startup_h = 180 / 3600
    c7g_usd = 0.145 * (1.0 + startup_h)
    assert doc.stage_rows() == (
        StageRow("c7g.xlarge", "dsm", 40, pytest.approx(c7g_usd * 40 / 50),
                 pytest.approx(3600 + 180)),
        StageRow("c7g.xlarge", "ortho", 10, pytest.approx(c7g_usd * 10 / 50),
                 pytest.approx(3600 + 180)),
        StageRow("m7g.2xlarge", "stereo", 40, pytest.approx(0.12 * (1.5 + 2 * startup_h)),
                 pytest.approx(1.5 / 2 * 3600 + 180)),
        StageRow("r7g.large", "ortho", 30, pytest.approx(0.04 * (0.5 + startup_h)),
                 pytest.approx(1800 + 180)),
    )
    assert doc.prices() == {("m7g.2xlarge", "spot"): 0.12, ("c7g.xlarge", "on-demand"): 0.145,
                            ("r7g.large", "spot"): 0.04}
    assert doc.fleet_price_usd_per_h == pytest.approx(2 * 0.12 + 0.145 + 0.04)
    assert doc.transfer_usd == 0.05


def _without(keys: tuple[str, ...], entry: int | None = None) -> dict[str, Any]:
    plan = _plan()
    target = plan if entry is None else plan["fleet"][entry]
    for k in keys:
        del target[k]
    return plan


def _with(value: Any, key: str, entry: int | None = None) -> dict[str, Any]:
    plan = _plan()
    (plan if entry is None else plan["fleet"][entry])[key] = value
    return plan


@pytest.mark.parametrize(("doc", "message"), [
    ([_plan()], r"plan.json: a JSON list, expected an object"),
    ("plan", r"a JSON str, expected an object"),
    (_without(("format",)), r"format is missing, expected 'eochain-plan/1'"),
    (_with("eochain-plan/2", "format"), r"format 'eochain-plan/2', expected 'eochain-plan/1'"),
    (_without(("fleet",)), r"fleet is missing"),
    (_with({"m7g": 2}, "fleet"), r"fleet \{'m7g': 2\}, expected a list"),
    (_without(("market",), 1), r"fleet\[1\]: market is missing"),
    (_without(("instance_type",), 0), r"fleet\[0\]: instance_type is missing"),
    (_without(("instances",), 2), r"fleet\[2\]: instances is missing"),
    (_with("many", "instances", 0), r"fleet\[0\]: instances 'many', expected a whole number"),
    (_with("preemptible", "market", 0), r"fleet\[0\]: market 'preemptible', expected one of"),
    (_with(math.nan, "total_cost_usd"), r"plan.json: total_cost_usd nan, expected a finite"),
    (_with(math.inf, "price_usd_per_h", 1), r"fleet\[1\]: price_usd_per_h inf, expected a"),
    (_with(-3.0, "makespan_s"), r"makespan_s -3.0, expected a finite number >= 0"),
    (_with({"ortho": 1.5}, "tasks", 2), r"fleet\[2\].tasks\['ortho'\] 1.5, expected a whole"),
    (_with({"compute": math.nan}, "cost_breakdown_usd"), r"cost_breakdown_usd\['compute'\] nan"),
    (_with([{"tasks": 3}], "stages"), r"stages\[0\]: name is missing"),
    (_with({"pools": {}}, "replan"), r"replan \{'pools': \{\}\}, expected an object with pools"),
    (_with({"pools": [{"instance_type": "t", "market": "spot", "max_instances": -1}],
            "max_instances": 1}, "replan"), r"replan.pools\[0\]: max_instances -1, expected"),
    (_with({"pools": []}, "replan"), r"replan: max_instances is missing"),
])
def test_a_bad_plan_is_a_plan_error_naming_the_key(doc: Any, message: str) -> None:
    with pytest.raises(PlanError, match=message) as caught:
        plan_document_from_dict(doc)
    assert isinstance(caught.value, PlannerError) and isinstance(caught.value, ValueError)


@pytest.mark.parametrize(("text", "message"), [
    ("[1, 2, 3]", "a JSON list, expected an object"),
    ('{"format": "eochain-plan/1", "fleet": [], "total_cost_usd": NaN}',
     "total_cost_usd nan, expected a finite number"),
    ('{"format": "eochain-plan/1", "fleet": [], "fleet": []}', "duplicate key 'fleet'"),
    ('{"format": "eochain-plan/1", "fleet": [], "risk": {"p95": NaN}}', "NaN is not a number"),
    ("{not json", "is not valid JSON"),
    ('{"format": "v0", "fleet": []}', "format 'v0'"),
])
def test_read_plan_refuses_a_bad_file_naming_it_and_the_key(
        tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "plan.json"
    path.write_text(text)
    with pytest.raises(PlanError, match=message) as caught:
        read_plan(path)
    assert str(path) in str(caught.value)
    with pytest.raises(PlanError, match="cannot be read"):
        read_plan(tmp_path / "absent.json")


def test_a_partial_plan_reads_and_names_what_a_reader_requires() -> None:
    doc = plan_document_from_dict({"format": PLAN_FORMAT, "fleet": [
        {"instance_type": "c7g.large", "market": "spot", "instances": 1}]}, "p.json")
    assert doc.total_cost_usd is None and doc.stage_rows() == ()
    with pytest.raises(PlanError, match=r"p.json: lacks 'deadline_s'"):
        doc.require("deadline_s")
    with pytest.raises(PlanError, match=r"p.json: fleet\[0\] \(c7g.large spot\) lacks "
                       "'price_usd_per_h'"):
        doc.prices()
    assert doc.fleet_price_usd_per_h == 0.0


def test_unknown_keys_are_kept_for_later_readers() -> None:
    plan = _with("eu-west-3b", "zone", 0)
    plan["future"] = {"x": 1}
    doc = plan_document_from_dict(plan)
    assert doc.extra["future"] == {"x": 1} and doc.fleet[0].extra == {"zone": "eu-west-3b"}
    assert doc.to_dict()["future"] == {"x": 1}
    assert doc.to_dict()["fleet"][0]["zone"] == "eu-west-3b"
    assert isinstance(doc, PlanDocument)
