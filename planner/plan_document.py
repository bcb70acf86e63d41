"""The plan document: the one reader and writer of ``plan.json`` (format ``eochain-plan/1``).

``eochain plan`` writes it (:func:`planner.planning.plan_to_dict` builds it
here); ``eochain run``, ``cluster-config``, the metrics, the fleet and the
cost report read it through :func:`read_plan` or :func:`plan_document_from_dict`
and get a :class:`PlanDocument`, or a :class:`~planner.errors.PlanError` that
names the file, the key and what was expected. Nothing else parses the JSON.

The document, as ``eochain plan`` writes it::

    format              "eochain-plan/1"                      required
    fleet[]             instance_type, market, instances      required in every entry
                        region, price_usd_per_h, vcpus, mem_gib, interruption_band,
                        tasks {stage: count}, busy_instance_h optional
    campaign, deadline_s, budget_usd, data_region, total_cost_usd, makespan_s,
    figures, cost_breakdown_usd {part: usd}, startup_s, stages[] {name, tasks, threads,
    peak_mem_gib, transfer_bytes_per_task}                    optional (checked when given)
    zones               availability zones the fleet is spread over, round-robin
                        (default 1: every node in one zone; ``eochain cluster-config``
                        pins each node type to its zone's subnet)
    replan              pools[] {instance_type, market, max_instances}, max_instances:
                        what a live re-plan (``eochain run --replan``) may ask for in
                        the fleet's region, within the campaign's limits (instances
                        per type, vCPU quota per market), so that ``eochain
                        cluster-config`` renders it (optional: without it, the fleet's
                        own pools only)
    anything else       (risk, frontier, lp, dag...)          kept as is, for readers to come

A figure a reader needs but the plan lacks (a partial plan typed by hand)
is asked for with :meth:`PlanDocument.require`, which names the key.

The plan's rows: per (instance type, stage), its tasks, cost and makespan
(:meth:`PlanDocument.stage_rows`)::

    cost     = sum over entries e of type i: price_e x (busy_instance_h_e
               + instances_e x startup_s / 3600) x tasks_e[s] / sum_s' tasks_e[s']
    makespan = max over entries e of type i: busy_instance_h_e / instances_e + startup_s

Stages are named in :data:`planner.stages.STAGES`, the one vocabulary of
plans, runs, metrics and cost reports.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from planner.config_loader import parse_json, read_text, short
from planner.errors import ConfigError, PlanError

__all__ = ["MARKETS", "PLAN_FORMAT", "FleetEntry", "PlanDocument", "PlanStage", "ReplanLimits",
           "ReplanPool", "StageRow", "as_plan_document", "plan_document_from_dict", "read_plan",
           "write_plan"]

PLAN_FORMAT = "eochain-plan/1"
MARKETS = ("spot", "on-demand")
#: Where a plan comes from when the caller does not say (error messages).
DEFAULT_SOURCE = "plan.json"


@dataclass(frozen=True, slots=True)
class FleetEntry:
    """One pool of the plan's fleet: ``instances`` nodes of a type, in a market and region."""

    instance_type: str
    market: str
    instances: int
    region: str | None = None
    price_usd_per_h: float | None = None
    vcpus: int | None = None
    mem_gib: float | None = None
    interruption_band: str | None = None
    tasks: Mapping[str, int] = field(default_factory=dict)
    busy_instance_h: float = 0.0
    extra: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return _given({"instance_type": self.instance_type, "region": self.region,
                       "market": self.market, "instances": self.instances, "vcpus": self.vcpus,
                       "mem_gib": self.mem_gib, "price_usd_per_h": self.price_usd_per_h,
                       "interruption_band": self.interruption_band, "tasks": dict(self.tasks),
                       "busy_instance_h": self.busy_instance_h, **self.extra})


@dataclass(frozen=True, slots=True)
class PlanStage:
    """One stage of the planned DAG: its task count and per-task needs."""

    name: str
    tasks: int
    threads: int | None = None
    peak_mem_gib: float | None = None
    transfer_bytes_per_task: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return _given({"name": self.name, "tasks": self.tasks, "threads": self.threads,
                       "peak_mem_gib": self.peak_mem_gib,
                       "transfer_bytes_per_task": self.transfer_bytes_per_task})


@dataclass(frozen=True, slots=True)
class ReplanPool:
    """A pool a live re-plan may ask for, and the most nodes of it the limits allow."""

    instance_type: str
    market: str
    max_instances: int

    def to_dict(self) -> dict[str, Any]:
        return {"instance_type": self.instance_type, "market": self.market,
                "max_instances": self.max_instances}


@dataclass(frozen=True, slots=True)
class ReplanLimits:
    """What live re-plans may ask for: pools, each capped, and nodes in all at most."""

    pools: tuple[ReplanPool, ...]
    max_instances: int

    def to_dict(self) -> dict[str, Any]:
        return {"pools": [p.to_dict() for p in self.pools], "max_instances": self.max_instances}


@dataclass(frozen=True, slots=True)
class StageRow:
    """The plan's line for one (instance type, stage): tasks, cost and makespan."""

    instance_type: str
    stage: str
    tasks: int
    cost_usd: float
    makespan_s: float


@dataclass(frozen=True, slots=True)
class PlanDocument:
    """A checked ``plan.json`` (module docstring); ``origin`` names it in error messages."""

    fleet: tuple[FleetEntry, ...]
    format: str = PLAN_FORMAT
    campaign: str = ""
    deadline_s: float | None = None
    budget_usd: float | None = None
    data_region: str | None = None
    total_cost_usd: float | None = None
    makespan_s: float | None = None
    figures: str | None = None
    cost_breakdown_usd: Mapping[str, float] = field(default_factory=dict)
    startup_s: float = 0.0
    stages: tuple[PlanStage, ...] = ()
    zones: int = 1
    replan: ReplanLimits | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)
    origin: str = field(default=DEFAULT_SOURCE, compare=False)

    def require(self, name: str) -> float:
        """A figure the caller cannot do without (``total_cost_usd``...), else a PlanError."""
        value = getattr(self, name)
        if value is None:
            raise PlanError(f"{self.origin}: lacks {name!r}; expected a number >= 0 (the "
                            "plan.json that `eochain plan campaign.yaml` writes has it)")
        return float(value)

    def prices(self) -> dict[tuple[str, str], float]:
        """(instance type, market) -> USD per hour of every fleet entry."""
        out = {}
        for i, e in enumerate(self.fleet):
            if e.price_usd_per_h is None:
                raise PlanError(f"{self.origin}: fleet[{i}] ({e.instance_type} {e.market}) "
                                "lacks 'price_usd_per_h'; expected a price >= 0")
            out[(e.instance_type, e.market)] = e.price_usd_per_h
        return out

    @property
    def fleet_price_usd_per_h(self) -> float:
        """Sum over the fleet of instances x hourly price (entries without a price count 0)."""
        return sum(e.instances * (e.price_usd_per_h or 0.0) for e in self.fleet)

    @property
    def transfer_usd(self) -> float:
        return float(self.cost_breakdown_usd.get("transfer", 0.0))

    def stage_rows(self) -> tuple[StageRow, ...]:
        """The plan's (instance type, stage) rows, sorted (module docstring)."""
        rows: dict[tuple[str, str], list[float]] = {}
        startup_h = self.startup_s / 3600.0
        for e in self.fleet:
            n = sum(e.tasks.values())
            cost = (e.price_usd_per_h or 0.0) * (e.busy_instance_h + e.instances * startup_h)
            finish_s = (e.busy_instance_h / max(e.instances, 1) + startup_h) * 3600.0
            for stage, k in e.tasks.items():
                row = rows.setdefault((e.instance_type, stage), [0, 0.0, 0.0])
                row[0] += k
                row[1] += cost * k / n if n else 0.0
                row[2] = max(row[2], finish_s)
        return tuple(StageRow(t, s, int(k), c, m) for (t, s), (k, c, m) in sorted(rows.items()))

    def to_dict(self) -> dict[str, Any]:
        """The JSON document: the typed keys that have a value, then the kept ones."""
        return {**_given({"format": self.format, "campaign": self.campaign,
                          "deadline_s": self.deadline_s, "budget_usd": self.budget_usd,
                          "data_region": self.data_region,
                          "total_cost_usd": self.total_cost_usd, "makespan_s": self.makespan_s,
                          "figures": self.figures,
                          "cost_breakdown_usd": dict(self.cost_breakdown_usd),
                          "fleet": [e.to_dict() for e in self.fleet],
                          "stages": [s.to_dict() for s in self.stages],
                          "startup_s": self.startup_s, "zones": self.zones,
                          "replan": None if self.replan is None else self.replan.to_dict()}),
                **self.extra}


def _given(fields: dict[str, Any]) -> dict[str, Any]:
    """``fields`` without the optional ones that have no value (absent keys, not nulls)."""
    return {k: v for k, v in fields.items() if v is not None}


class _Reader:
    """Typed fields of one JSON object, each failure naming ``where: key``."""

    def __init__(self, doc: Mapping[str, Any], where: str) -> None:
        self.doc = doc
        self.where = where

    def fail(self, key: str, expected: str) -> PlanError:
        return PlanError(f"{self.where}: {key} {short(self.doc.get(key))}, expected {expected}")

    def required(self, key: str) -> Any:
        if key not in self.doc:
            raise PlanError(f"{self.where}: {key} is missing; keys there: "
                            f"{short(sorted(self.doc))}")
        return self.doc[key]

    def text(self, key: str, *, required: bool = False) -> str | None:
        value = self.required(key) if required else self.doc.get(key)
        if value is None and not required:
            return None
        if not isinstance(value, str) or (required and not value):
            raise self.fail(key, "a non-empty string" if required else "a string")
        return value

    def number(self, key: str, *, default: float | None = None) -> float | None:
        value = self.doc.get(key)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(
                value) or value < 0:
            raise self.fail(key, "a finite number >= 0")
        return float(value)

    def count(self, key: str, *, required: bool = False) -> int | None:
        value = self.required(key) if required else self.doc.get(key)
        if value is None and not required:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise self.fail(key, "a whole number >= 0")
        return value

    def mapping(self, key: str) -> Mapping[str, Any]:
        value = self.doc.get(key)
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            raise self.fail(key, "an object")
        return value


def _counts(value: Mapping[str, Any], where: str) -> dict[str, int]:
    out = {}
    for stage, k in value.items():
        if isinstance(k, bool) or not isinstance(k, int) or k < 0:
            raise PlanError(f"{where}[{stage!r}] {short(k)}, expected a whole number of "
                            "tasks >= 0")
        out[str(stage)] = k
    return out


def _usd(value: Mapping[str, Any], where: str) -> dict[str, float]:
    out = {}
    for part, usd in value.items():
        if isinstance(usd, bool) or not isinstance(usd, int | float) or not math.isfinite(usd):
            raise PlanError(f"{where}[{part!r}] {short(usd)}, expected a finite number")
        out[str(part)] = float(usd)
    return out


_ENTRY_KEYS = ("instance_type", "region", "market", "instances", "vcpus", "mem_gib",
               "price_usd_per_h", "interruption_band", "tasks", "busy_instance_h")
_TOP_KEYS = ("format", "campaign", "deadline_s", "budget_usd", "data_region", "total_cost_usd",
             "makespan_s", "figures", "cost_breakdown_usd", "fleet", "stages", "startup_s",
             "zones", "replan")


def _entry(raw: Any, i: int, source: str) -> FleetEntry:
    where = f"{source}: fleet[{i}]"
    if not isinstance(raw, Mapping):
        raise PlanError(f"{where} {short(raw)}, expected an object with instance_type, "
                        "market and instances")
    r = _Reader(raw, where)
    market = r.required("market")
    if market not in MARKETS:
        raise PlanError(f"{where}: market {short(market)}, expected one of {MARKETS}")
    band = raw.get("interruption_band")
    return FleetEntry(
        instance_type=str(r.text("instance_type", required=True)), market=market,
        instances=int(r.count("instances", required=True) or 0), region=r.text("region"),
        price_usd_per_h=r.number("price_usd_per_h"), vcpus=r.count("vcpus"),
        mem_gib=r.number("mem_gib"), interruption_band=None if band is None else str(band),
        tasks=_counts(r.mapping("tasks"), f"{where}.tasks"),
        busy_instance_h=r.number("busy_instance_h", default=0.0) or 0.0,
        extra={k: v for k, v in raw.items() if k not in _ENTRY_KEYS})


def _stage(raw: Any, i: int, source: str) -> PlanStage:
    where = f"{source}: stages[{i}]"
    if not isinstance(raw, Mapping):
        raise PlanError(f"{where} {short(raw)}, expected an object with name and tasks")
    r = _Reader(raw, where)
    return PlanStage(str(r.text("name", required=True)),
                     int(r.count("tasks", required=True) or 0),
                     r.count("threads"), r.number("peak_mem_gib"),
                     r.number("transfer_bytes_per_task"))


def _replan(raw: Any, source: str) -> ReplanLimits | None:
    if raw is None:
        return None
    where = f"{source}: replan"
    if not isinstance(raw, Mapping) or not isinstance(raw.get("pools"), list):
        raise PlanError(f"{where} {short(raw)}, expected an object with pools (a list) and "
                        "max_instances")
    pools = []
    for i, p in enumerate(raw["pools"]):
        if not isinstance(p, Mapping):
            raise PlanError(f"{where}.pools[{i}] {short(p)}, expected an object with "
                            "instance_type, market and max_instances")
        r = _Reader(p, f"{where}.pools[{i}]")
        market = r.required("market")
        if market not in MARKETS:
            raise PlanError(f"{where}.pools[{i}]: market {short(market)}, expected one of "
                            f"{MARKETS}")
        pools.append(ReplanPool(str(r.text("instance_type", required=True)), market,
                                int(r.count("max_instances", required=True) or 0)))
    total = _Reader(raw, where).count("max_instances", required=True)
    return ReplanLimits(tuple(pools), int(total or 0))


def plan_document_from_dict(doc: Any, source: str = DEFAULT_SOURCE) -> PlanDocument:
    """Check a parsed ``plan.json`` and type it; every problem is a PlanError naming the key."""
    if not isinstance(doc, Mapping):
        raise PlanError(f"{source}: a JSON {type(doc).__name__}, expected an object (the "
                        "plan.json that `eochain plan campaign.yaml` writes)")
    fmt = doc.get("format")
    if fmt != PLAN_FORMAT:
        found = "is missing" if "format" not in doc else short(fmt)
        raise PlanError(f"{source}: format {found}, expected {PLAN_FORMAT!r} (write it with "
                        "`eochain plan campaign.yaml`)")
    fleet = doc.get("fleet")
    if not isinstance(fleet, list):
        found = "is missing" if "fleet" not in doc else short(fleet)
        raise PlanError(f"{source}: fleet {found}, expected a list of entries with "
                        "instance_type, market and instances")
    stages = doc.get("stages") or []
    if not isinstance(stages, list):
        raise PlanError(f"{source}: stages {short(stages)}, expected a list")
    r = _Reader(doc, source)
    campaign = doc.get("campaign", "")
    figures = doc.get("figures")
    zones = r.count("zones")
    if zones == 0:
        raise r.fail("zones", "a whole number >= 1 (the zones the fleet is spread over)")
    return PlanDocument(
        fleet=tuple(_entry(e, i, source) for i, e in enumerate(fleet)),
        campaign=campaign if isinstance(campaign, str) else str(campaign),
        deadline_s=r.number("deadline_s"), budget_usd=r.number("budget_usd"),
        data_region=r.text("data_region"), total_cost_usd=r.number("total_cost_usd"),
        makespan_s=r.number("makespan_s"),
        figures=None if figures is None else str(figures),
        cost_breakdown_usd=_usd(r.mapping("cost_breakdown_usd"), f"{source}: cost_breakdown_usd"),
        startup_s=r.number("startup_s", default=0.0) or 0.0,
        stages=tuple(_stage(s, i, source) for i, s in enumerate(stages)),
        zones=1 if zones is None else zones, replan=_replan(doc.get("replan"), source),
        extra={k: v for k, v in doc.items() if k not in _TOP_KEYS}, origin=source)


def as_plan_document(plan: PlanDocument | Mapping[str, Any],
                     source: str = DEFAULT_SOURCE) -> PlanDocument:
    """``plan`` itself, or the document of a parsed ``plan.json``."""
    return plan if isinstance(plan, PlanDocument) else plan_document_from_dict(plan, source)


def read_plan(path: str | Path) -> PlanDocument:
    """Read and check ``plan.json``; an unreadable or bad file is a PlanError naming the key."""
    source = f"plan {str(path)!r}"
    try:
        text = read_text(path, "plan")
    except ConfigError as exc:
        raise PlanError(str(exc)) from exc
    try:
        doc = parse_json(text, source)
    except ConfigError as exc:
        # strict JSON refuses NaN and Infinity without naming the key: name it when possible
        try:
            loose = json.loads(text)
        except (ValueError, RecursionError):
            raise PlanError(str(exc)) from exc
        plan_document_from_dict(loose, source)
        raise PlanError(str(exc)) from exc
    return plan_document_from_dict(doc, source)


def write_plan(path: str | Path, plan: PlanDocument) -> Path:
    """Write ``plan`` as indented JSON to ``path``."""
    path = Path(path)
    path.write_text(json.dumps(plan.to_dict(), indent=2) + "\n")
    return path
