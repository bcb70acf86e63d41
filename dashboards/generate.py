"""Writes the Grafana dashboards of eochain (``dashboards/*.json``) from one description.

Run ``python dashboards/generate.py`` after editing; a test checks that the
committed JSON equals what this script writes, and that every panel's query
returns data from a real Prometheus scraping a campaign.

Five dashboards, each with the variables ``datasource`` (a Prometheus data
source, so the JSON imports anywhere), ``campaign`` and ``instance_type``
(multi-valued, "All" = ``.*``):

* progress: tiles remaining and done, tasks by state, throughput, ETA, deadline slack,
  bytes in flight;
* cost: planned vs accrued vs projected, projected/planned ratio, cost by instance type,
  per product and per km^2, burn rate, input bytes read across zones;
* fleet: nodes by type and market, spot interruptions, node departures by cause
  (interruption, scale-down, drain, failure), market fallbacks, lost runs,
  retries and recomputations;
* kernels: throughput (tasks and pixels per second), latency quantiles, mean latency,
  peak memory quantiles;
* actors: what the Ray actors report themselves (``ray_eochain_actor_*``, scraped from
  every Ray node through Ray's service discovery, so it outlives the driver): tasks per
  second by operation and outcome, latency quantiles, peak worker memory, tasks by node.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
DS = {"type": "prometheus", "uid": "${datasource}"}
C = 'campaign=~"$campaign"'
CI = 'campaign=~"$campaign", instance_type=~"$instance_type"'
RI = "$__rate_interval"

Panel = tuple[str, str, list[tuple[str, str]], str]  # type, title, [(expr, legend)], unit

DASHBOARDS: dict[str, tuple[str, list[Panel]]] = {
    "progress": ("eochain: campaign progress", [
        ("stat", "Tiles remaining", [
            (f"sum by (campaign) (eochain_tiles_remaining{{{C}}})", "{{campaign}}")], "none"),
        ("gauge", "Done", [
            ((f"1 - sum by (campaign) (eochain_tiles_remaining{{{C}}}) / "
             f"sum by (campaign) (eochain_tiles_planned{{{C}}} > 0)"), "{{campaign}}")],
         "percentunit"),
        ("stat", "Estimated time to completion", [
            (f"eochain_time_to_completion_seconds{{{C}}}", "{{campaign}}")], "s"),
        ("stat", "Deadline slack (deadline - estimated end)", [
            (f"campaign:eochain_deadline_slack_seconds:estimate{{{C}}}", "{{campaign}}")], "s"),
        ("timeseries", "Tasks by operation and state", [
            (f"sum by (op, state) (eochain_tasks{{{C}}})", "{{op}} {{state}}")], "none"),
        ("timeseries", "Throughput (tasks done per second)", [
            (f'sum by (op) (rate(eochain_task_runs_total{{{CI}, outcome="ok"}}[{RI}]))',
             "{{op}}")], "ops"),
        ("timeseries", "Intermediate bytes in flight", [
            (f"eochain_intermediate_in_flight_bytes{{{C}}}", "{{campaign}}")], "bytes"),
        ("timeseries", "Retries and recomputations per second", [
            (f"sum by (op) (rate(eochain_task_retries_total{{{C}}}[{RI}]))", "retry {{op}}"),
            (f"sum by (op) (rate(eochain_task_recomputations_total{{{C}}}[{RI}]))",
             "recompute {{op}}")], "ops"),
    ]),
    "cost": ("eochain: cost", [
        ("timeseries", "Planned vs accrued vs projected cost", [
            (f"eochain_cost_planned_usd{{{C}}}", "planned {{campaign}}"),
            (f"campaign:eochain_cost_accrued_usd:sum{{{C}}}", "accrued {{campaign}}"),
            (f"eochain_cost_projected_usd{{{C}}}", "projected {{campaign}}")], "currencyUSD"),
        ("stat", "Projected / planned cost", [
            (f"campaign:eochain_cost_projected_over_planned:ratio{{{C}}}", "{{campaign}}")],
         "percentunit"),
        ("timeseries", "Accrued cost by instance type and market", [
            (f"sum by (instance_type, market) (eochain_cost_accrued_usd_total{{{CI}}})",
             "{{instance_type}} {{market}}")], "currencyUSD"),
        ("stat", "Cost per product", [
            ((f"campaign:eochain_cost_accrued_usd:sum{{{C}}} / on (campaign) "
             f"sum by (campaign) (eochain_products_written_total{{{C}}} > 0)"), "{{campaign}}")],
         "currencyUSD"),
        ("stat", "Cost per km^2", [
            ((f"campaign:eochain_cost_accrued_usd:sum{{{C}}} / on (campaign) "
             f"(sum by (campaign) (eochain_product_area_square_meters_total{{{C}}} > 0) / 1e6)"),
             "{{campaign}}")], "currencyUSD"),
        ("timeseries", "Products written by type", [
            (f"sum by (product) (eochain_products_written_total{{{C}}})", "{{product}}")],
         "none"),
        ("timeseries", "Fleet burn rate (USD per hour)", [
            (f"3600 * eochain_fleet_burn_rate_usd_per_second{{{C}}}", "{{campaign}}")],
         "currencyUSD"),
        ("timeseries", "Input bytes read across zones (billed as inter-AZ transfer)", [
            (f"sum by (campaign) (eochain_cross_zone_input_bytes_total{{{C}}})",
             "{{campaign}}")], "bytes"),
    ]),
    "fleet": ("eochain: fleet and spot", [
        ("timeseries", "Nodes by instance type and market", [
            (f"sum by (instance_type, market) (eochain_nodes{{{CI}}})",
             "{{instance_type}} {{market}}")], "none"),
        ("stat", "Spot interruptions (last 10 min)", [
            (f"campaign:eochain_spot_interruptions:increase10m{{{C}}}", "{{campaign}}")],
         "none"),
        ("timeseries", "Spot interruptions by instance type", [
            (f"sum by (instance_type) (eochain_spot_interruptions_total{{{CI}}})",
             "{{instance_type}}")], "none"),
        ("timeseries", "Node departures by cause", [
            (f"sum by (instance_type, cause) (eochain_node_departures_total{{{CI}}})",
             "{{instance_type}} {{cause}}")], "none"),
        ("timeseries", "Market fallbacks", [
            ((f"sum by (instance_type, from_market, to_market) "
             f"(eochain_market_fallbacks_total{{{CI}}})"),
             "{{instance_type}} {{from_market}} -> {{to_market}}")], "none"),
        ("timeseries", "Lost task runs per second by instance type", [
            ((f'sum by (instance_type) (rate(eochain_task_runs_total{{{CI}, outcome="lost"}}'
             f"[{RI}]))"), "{{instance_type}}")], "ops"),
        ("timeseries", "Retries and recomputations (total)", [
            (f"sum by (op) (eochain_task_retries_total{{{C}}})", "retries {{op}}"),
            (f"sum by (op) (eochain_task_recomputations_total{{{C}}})", "recomputed {{op}}")],
         "none"),
    ]),
    "kernels": ("eochain: kernels", [
        ("timeseries", "Tasks per second by operation and instance type", [
            ((f"sum by (op, instance_type) "
             f"(rate(eochain_task_duration_seconds_count{{{CI}}}[{RI}]))"),
             "{{op}} {{instance_type}}")], "ops"),
        ("timeseries", "Pixels per second", [
            (f"sum by (op, instance_type) (rate(eochain_pixels_processed_total{{{CI}}}[{RI}]))",
             "{{op}} {{instance_type}}")], "none"),
        ("timeseries", "Task latency quantiles", [
            ((f"histogram_quantile({q}, sum by (le, op) "
             f"(rate(eochain_task_duration_seconds_bucket{{{CI}}}[{RI}])))"), f"p{p} {{{{op}}}}")
            for q, p in (("0.5", "50"), ("0.95", "95"), ("0.99", "99"))], "s"),
        ("timeseries", "Mean task latency", [
            ((f"sum by (op) (rate(eochain_task_duration_seconds_sum{{{CI}}}[{RI}])) / "
             f"sum by (op) (rate(eochain_task_duration_seconds_count{{{CI}}}[{RI}]) > 0)"),
             "{{op}}")], "s"),
        ("timeseries", "Peak task memory quantiles", [
            ((f"histogram_quantile({q}, sum by (le, op) "
             f"(rate(eochain_task_peak_memory_bytes_bucket{{{CI}}}[{RI}])))"), f"p{p} {{{{op}}}}")
            for q, p in (("0.5", "50"), ("0.95", "95"))], "bytes"),
    ]),
    "actors": ("eochain: actors (reported by the Ray nodes)", [
        ("timeseries", "Actor tasks per second by operation and outcome", [
            ((f"sum by (op, outcome) (rate(ray_eochain_actor_tasks_total{{{CI}}}[{RI}]))"),
             "{{op}} {{outcome}}")], "ops"),
        ("timeseries", "Actor task latency quantiles", [
            ((f"histogram_quantile({q}, sum by (le, op) "
             f"(rate(ray_eochain_actor_task_duration_seconds_bucket{{{CI}}}[{RI}])))"),
             f"p{p} {{{{op}}}}") for q, p in (("0.5", "50"), ("0.95", "95"))], "s"),
        # a worker's gauge ends with its process: the peak over the last hour
        ("timeseries", "Peak memory of the actors' workers (last hour)", [
            (f"max by (instance_type) (max_over_time(ray_eochain_actor_peak_memory_bytes{{{CI}}}[1h]))",
             "{{instance_type}}")], "bytes"),
        ("timeseries", "Actor tasks by node (total)", [
            (f"sum by (NodeAddress) (ray_eochain_actor_tasks_total{{{C}}})",
             "{{NodeAddress}}")], "none"),
    ]),
}


def _variables() -> list[dict[str, Any]]:
    def query_var(name: str, label: str, query: str) -> dict[str, Any]:
        return {
            "type": "query", "name": name, "label": label, "datasource": DS,
            "definition": query, "query": {"query": query, "refId": f"var-{name}"},
            "refresh": 2, "includeAll": True, "multi": True, "allValue": ".*",
            "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
            "options": [], "sort": 1, "hide": 0,
        }
    return [
        {"type": "datasource", "name": "datasource", "label": "Data source",
         "query": "prometheus", "current": {}, "hide": 0, "options": [], "refresh": 1},
        query_var("campaign", "Campaign", "label_values(eochain_tiles_planned, campaign)"),
        query_var("instance_type", "Instance type",
                  'label_values(eochain_nodes{campaign=~"$campaign"}, instance_type)'),
    ]


def _panel(pid: int, panel: Panel, x: int, y: int) -> dict[str, Any]:
    kind, title, exprs, unit = panel
    width = 6 if kind in ("stat", "gauge") else 12
    return {
        "id": pid, "type": kind, "title": title, "datasource": DS,
        "gridPos": {"h": 8, "w": width, "x": x, "y": y},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {},
        "targets": [{"refId": chr(ord("A") + i), "datasource": DS, "expr": expr,
                     "legendFormat": legend, "range": kind == "timeseries",
                     "instant": kind != "timeseries"}
                    for i, (expr, legend) in enumerate(exprs)],
    }


def dashboard(name: str) -> dict[str, Any]:
    title, panels = DASHBOARDS[name]
    out, x, y = [], 0, 0
    for pid, panel in enumerate(panels, start=1):
        p = _panel(pid, panel, x, y)
        w = p["gridPos"]["w"]
        if x + w > 24:
            x, y = 0, y + 8
            p["gridPos"].update(x=x, y=y)
        out.append(p)
        x += w
    return {
        "uid": f"eochain-{name}", "title": title, "tags": ["eochain"], "editable": True,
        "schemaVersion": 39, "version": 1, "refresh": "30s", "timezone": "utc",
        "time": {"from": "now-6h", "to": "now"}, "graphTooltip": 1,
        "templating": {"list": _variables()},
        "annotations": {"list": []},
        "panels": out,
    }


def render(name: str) -> str:
    return json.dumps(dashboard(name), indent=2, sort_keys=True) + "\n"


def main() -> int:
    for name in DASHBOARDS:
        (HERE / f"{name}.json").write_text(render(name))
    return 0


if __name__ == "__main__":
    sys.exit(main())
