"""The Grafana dashboards: importable JSON, in step with their generator, covering the issue.

No Grafana server can run here, so the JSON is checked for what Grafana's
importer needs (title, uid, schemaVersion, panels with id, type, gridPos and
targets with refId and expr, a data source given as a variable) and for what
the issue asks of each dashboard. That every query returns data is checked
against a real Prometheus in ``test_metrics.py``.
"""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

pytestmark = pytest.mark.integration

DASHBOARDS = Path(__file__).resolve().parents[2] / "dashboards"
NAMES = ("actors", "cost", "fleet", "kernels", "progress")
PANEL_TYPES = {"stat", "gauge", "timeseries", "table", "bargauge", "barchart"}


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("dashboards_generate",
                                                  DASHBOARDS / "generate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _load(name: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((DASHBOARDS / f"{name}.json").read_text())
    return doc


def test_the_committed_json_is_what_the_generator_writes() -> None:
    gen = _generator()
    assert sorted(gen.DASHBOARDS) == sorted(NAMES)
    assert sorted(p.stem for p in DASHBOARDS.glob("*.json")) == sorted(NAMES)
    for name in NAMES:
        assert (DASHBOARDS / f"{name}.json").read_text() == gen.render(name), (
            f"dashboards/{name}.json is stale: run python dashboards/generate.py")


@pytest.mark.parametrize("name", NAMES)
def test_dashboard_has_what_grafana_import_needs(name: str) -> None:
    doc = _load(name)
    assert doc["title"] and doc["uid"] == f"eochain-{name}" and len(doc["uid"]) <= 40
    assert isinstance(doc["schemaVersion"], int) and doc["schemaVersion"] >= 36
    assert {"from", "to"} <= set(doc["time"])
    variables = {v["name"]: v for v in doc["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for var in ("campaign", "instance_type"):
        v = variables[var]
        assert v["type"] == "query" and v["includeAll"] and v["multi"]
        assert v["query"]["query"].startswith("label_values(")
        assert v["datasource"]["uid"] == "${datasource}"
    ids = [p["id"] for p in doc["panels"]]
    assert len(ids) == len(set(ids)), f"{name}: duplicate panel ids {ids}"
    cells: set[tuple[int, int]] = set()
    for panel in doc["panels"]:
        where = f"{name}/{panel['title']}"
        assert panel["type"] in PANEL_TYPES, where
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, where
        pos = panel["gridPos"]
        assert pos["w"] > 0 and pos["h"] > 0 and pos["x"] + pos["w"] <= 24, where
        cover = {(pos["y"] + dy, pos["x"] + dx) for dy in range(pos["h"])
                 for dx in range(pos["w"])}
        assert not cover & cells, f"{where} overlaps another panel"
        cells |= cover
        refs = [t["refId"] for t in panel["targets"]]
        assert refs and len(refs) == len(set(refs)), where
        for target in panel["targets"]:
            assert target["expr"].strip(), where
            assert target["expr"].count("(") == target["expr"].count(")"), where
            # every selector of an eochain metric filters on the chosen campaign(s)
            for sel in re.findall(r"((?:eochain_|campaign:)\w*(?::\w+)*)(\{[^}]*\})?",
                                  target["expr"]):
                assert 'campaign=~"$campaign"' in sel[1], f"{where}: {sel[0]} unfiltered"


def _exprs(name: str) -> str:
    return "\n".join(t["expr"] for p in _load(name)["panels"] for t in p["targets"])


def test_dashboards_cover_what_the_issue_asks() -> None:
    progress, cost, fleet, kernels = (_exprs(n) for n in ("progress", "cost", "fleet",
                                                          "kernels"))
    for metric in ("eochain_tiles_remaining", "eochain_tasks{", "eochain_task_runs_total",
                   "eochain_time_to_completion_seconds", "eochain_intermediate_in_flight_bytes"):
        assert metric in progress, metric
    for metric in ("eochain_cost_planned_usd", "campaign:eochain_cost_accrued_usd:sum",
                   "eochain_cost_projected_usd", "eochain_products_written_total",
                   "eochain_product_area_square_meters_total"):
        assert metric in cost, metric
    for metric in ("eochain_nodes", "eochain_spot_interruptions_total",
                   "eochain_node_departures_total", "eochain_market_fallbacks_total"):
        assert metric in fleet, metric
    assert "histogram_quantile(0.95" in kernels and "eochain_task_duration_seconds_bucket" in (
        kernels)
    assert "eochain_task_peak_memory_bytes_bucket" in kernels
    assert "eochain_pixels_processed_total" in kernels
    assert '$instance_type' in kernels and '$instance_type' in fleet
    actors = _exprs("actors")
    for metric in ("ray_eochain_actor_tasks_total", "ray_eochain_actor_task_duration_seconds_bucket",
                   "ray_eochain_actor_peak_memory_bytes"):
        assert metric in actors, metric
    # the actors' series carry the campaign label: every panel selects on it
    for panel in _load("actors")["panels"]:
        assert all('campaign=~"$campaign"' in t["expr"] for t in panel["targets"]), panel["title"]
