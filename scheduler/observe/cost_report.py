"""End-of-run cost report: planned vs actual cost and makespan, per instance type and stage.

Inputs are data: the plan (:class:`planner.plan_document.PlanDocument`, from
``eochain plan``) and the :class:`RunLedger` that
:class:`scheduler.observe.metrics.CampaignMetrics` kept during the run (nodes with
their alive seconds and price, task busy time per stage and instance type).
The report is a table for the terminal and a PNG.

One cost. The ledger is the run's only account of what it cost::

    actual cost = sum over the nodes that ran: node-seconds x price_usd_per_h / 3600
                + input bytes read across zones x inter-AZ USD per GB     (transfer_usd)

The progress bar, the end-of-run summary, the ``eochain_cost_accrued_usd``
metric and this report's total all show that figure (read from the same
``CampaignMetrics``, which stops billing when the run ends).

One stage vocabulary. Rows are keyed by (instance type, stage), with the
planner's stages (:data:`planner.stages.STAGES`: stereo, dsm, fusion,
ortho). A runtime operation's name starts with its stage (``stereo_tile``,
``dsm_write``: a product's plan and writer tasks belong to its stage), so
:func:`stage_of` reads it off the name.

Attribution, for one instance type ``i`` and stage ``s``::

    planned cost    = the plan's row (PlanDocument.stage_rows): price x (busy
                      instance-hours + startup) shared by task count
    actual cost     = cost of the nodes of type i (node-seconds x price, all markets)
                      x busy_s[s, i] / sum_s' busy_s[s', i]      (share by busy time,
                                                                   so idle time is spread)
    planned makespan = the plan's row: max busy_instance_h / instances + startup
    actual makespan  = last task end - first task start of stage s on type i

Node time of a type that ran no task at all shows as stage ``(idle)``. The
plan's transfer cost has no instance type: it is its own ``(transfer)`` line,
against the input bytes the run's tasks read across zones (``RunLedger.transfer_usd``).
The totals are the plan's ``total_cost_usd`` and ``makespan_s`` against the
ledger's cost and wall time.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from planner.plan_document import PlanDocument, as_plan_document
from planner.stages import STAGES
from scheduler.observe.errors import CostReportError

IDLE = "(idle)"
TRANSFER = "(transfer)"

#: The stage of a task outside the stage vocabulary (a test's function, say).
OTHER = "(other)"


def stage_of(op: str) -> str:
    """The stage of a runtime operation (``scheduler.observe.metrics.op_name`` of a task): its first
    word, one of :data:`planner.stages.STAGES` (``stereo_tile`` -> ``stereo``, ``dsm_write`` ->
    ``dsm``); :data:`OTHER` for an operation of no stage."""
    stage = op.split("_", 1)[0]
    return stage if stage in STAGES else OTHER


@dataclass(frozen=True, slots=True)
class NodeUsage:
    """Nodes of one instance type, market and price over the run."""

    instance_type: str
    market: str
    price_usd_per_h: float
    nodes: int
    node_s: float

    @property
    def cost_usd(self) -> float:
        """Node-seconds x price: what these nodes cost."""
        return self.node_s * self.price_usd_per_h / 3600.0


@dataclass(frozen=True, slots=True)
class StageUsage:
    """Tasks of one stage on one instance type: count, busy time, first start, last end."""

    stage: str
    instance_type: str
    tasks: int
    busy_s: float
    first_start_s: float
    last_end_s: float


@dataclass(frozen=True, slots=True)
class RunLedger:
    """What a run used; times are seconds after the campaign's start."""

    campaign: str
    wall_s: float
    nodes: tuple[NodeUsage, ...]
    stages: tuple[StageUsage, ...]
    #: Input bytes tasks read from nodes of another zone, priced at the inter-AZ rate
    transfer_usd: float = 0.0

    @property
    def cost_usd(self) -> float:
        """The nodes' cost: node-seconds x price, summed over the run's nodes."""
        return sum(n.cost_usd for n in self.nodes)

    @property
    def total_usd(self) -> float:
        """The run's actual cost: its nodes and the bytes it moved across zones."""
        return self.cost_usd + self.transfer_usd

    def to_dict(self) -> dict[str, Any]:
        return {"campaign": self.campaign, "wall_s": self.wall_s, "cost_usd": self.cost_usd,
                "transfer_usd": self.transfer_usd,
                "nodes": [{**asdict(n), "cost_usd": n.cost_usd} for n in self.nodes],
                "stages": [asdict(s) for s in self.stages]}

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> RunLedger:
        try:
            return cls(str(doc["campaign"]), float(doc["wall_s"]),
                       tuple(NodeUsage(**{k: v for k, v in n.items() if k != "cost_usd"})
                             for n in doc["nodes"]),
                       tuple(StageUsage(**s) for s in doc["stages"]),
                       float(doc.get("transfer_usd", 0.0)))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise CostReportError(f"ledger: {exc!r}; expected campaign, wall_s, nodes[], "
                                  "stages[] as written by RunLedger.to_dict") from exc


@dataclass(frozen=True, slots=True)
class CostLine:
    """Planned vs actual for one (instance type, stage); NaN where one side has nothing."""

    instance_type: str
    stage: str
    planned_tasks: int
    actual_tasks: int
    planned_cost_usd: float
    actual_cost_usd: float
    planned_makespan_s: float
    actual_makespan_s: float


@dataclass(frozen=True, slots=True)
class CostReport:
    campaign: str
    lines: tuple[CostLine, ...]
    planned_cost_usd: float
    actual_cost_usd: float
    planned_makespan_s: float
    actual_makespan_s: float


def _planned(plan: PlanDocument) -> dict[tuple[str, str], list[float]]:
    """(instance type, stage) -> [tasks, cost_usd, makespan_s]: the plan's rows."""
    out: dict[tuple[str, str], list[float]] = {
        (r.instance_type, r.stage): [r.tasks, r.cost_usd, r.makespan_s]
        for r in plan.stage_rows()}
    if plan.transfer_usd > 0:
        out[("", TRANSFER)] = [0.0, plan.transfer_usd, math.nan]
    return out


def _actual(ledger: RunLedger) -> dict[tuple[str, str], list[float]]:
    """(instance type, stage) -> [tasks, cost_usd, makespan_s] from the ledger."""
    cost_of: dict[str, float] = {}
    for n in ledger.nodes:
        cost_of[n.instance_type] = cost_of.get(n.instance_type, 0.0) + n.cost_usd
    busy_of: dict[str, float] = {}
    for s in ledger.stages:
        busy_of[s.instance_type] = busy_of.get(s.instance_type, 0.0) + s.busy_s
    out: dict[tuple[str, str], list[float]] = {}
    for s in ledger.stages:
        busy = busy_of[s.instance_type]
        cost = cost_of.get(s.instance_type, 0.0)
        share = s.busy_s / busy if busy > 0 else 1.0 / sum(
            1 for t in ledger.stages if t.instance_type == s.instance_type)
        out[(s.instance_type, s.stage)] = [s.tasks, cost * share,
                                           max(s.last_end_s - s.first_start_s, 0.0)]
    for itype, cost in cost_of.items():
        if itype not in busy_of:
            out[(itype, IDLE)] = [0, cost, math.nan]
    if ledger.transfer_usd > 0:
        out[("", TRANSFER)] = [0, ledger.transfer_usd, math.nan]
    return out


def build_cost_report(plan: PlanDocument | Mapping[str, Any] | None,
                      ledger: RunLedger) -> CostReport:
    """Join the plan's and the ledger's lines (see the module docstring).

    A plan that is malformed or lacks ``total_cost_usd``/``makespan_s`` is a
    :class:`~planner.errors.PlanError` naming the key.
    """
    doc = as_plan_document(plan) if plan is not None else None
    planned = _planned(doc) if doc is not None else {}
    actual = _actual(ledger)
    lines = []
    for key in sorted(set(planned) | set(actual)):
        p = planned.get(key, [0, math.nan, math.nan])
        a = actual.get(key, [0, math.nan, math.nan])
        lines.append(CostLine(key[0], key[1], int(p[0]), int(a[0]), p[1], a[1], p[2], a[2]))
    if doc is not None:
        planned_cost = doc.require("total_cost_usd")
        planned_makespan = doc.require("makespan_s")
    else:
        planned_cost = planned_makespan = math.nan
    return CostReport(ledger.campaign, tuple(lines), planned_cost, ledger.total_usd,
                      planned_makespan, ledger.wall_s)


def _usd(x: float) -> str:
    return "-" if math.isnan(x) else f"${x:,.4f}"


def _dur(x: float) -> str:
    if math.isnan(x):
        return "-"
    return f"{x:.1f} s" if x < 3600 else f"{x / 3600:.2f} h"


def _delta(plan: float, actual: float) -> str:
    if math.isnan(plan) or math.isnan(actual) or plan <= 0:
        return "-"
    return f"{(actual - plan) / plan:+.0%}"


def format_cost_report(report: CostReport) -> str:
    """A fixed-width table for the terminal."""
    head = ("instance type", "stage", "tasks plan/run", "cost plan", "cost run", "diff",
            "makespan plan", "makespan run")
    rows: list[Sequence[str]] = [head]
    for ln in report.lines:
        rows.append((ln.instance_type or "-", ln.stage, f"{ln.planned_tasks}/{ln.actual_tasks}",
                     _usd(ln.planned_cost_usd), _usd(ln.actual_cost_usd),
                     _delta(ln.planned_cost_usd, ln.actual_cost_usd),
                     _dur(ln.planned_makespan_s), _dur(ln.actual_makespan_s)))
    rows.append(("total", "", "", _usd(report.planned_cost_usd), _usd(report.actual_cost_usd),
                 _delta(report.planned_cost_usd, report.actual_cost_usd),
                 _dur(report.planned_makespan_s), _dur(report.actual_makespan_s)))
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    out = [f"cost report: {report.campaign}"]
    for j, r in enumerate(rows):
        if j in (1, len(rows) - 1):
            out.append("  ".join("-" * w for w in widths))
        out.append("  ".join(c.ljust(w) if i < 2 else c.rjust(w)
                             for i, (c, w) in enumerate(zip(r, widths, strict=True))))
    return "\n".join(out)


#: Colours of the plot's bars (planned, actual), axes and text.
PLANNED_RGB = (0x9A, 0xA5, 0xB1)
ACTUAL_RGB = (0x2F, 0x6F, 0xB0)
INK_RGB = (0x22, 0x22, 0x22)


def nice_ticks(top: float, n: int = 5) -> list[float]:
    """Axis ticks from 0 to at least ``top``: about ``n`` steps of 1, 2 or 5 x 10^k (pure)."""
    if not top > 0 or not math.isfinite(top):
        return [0.0, 1.0]
    raw = top / n
    base = 10.0 ** math.floor(math.log10(raw))
    step = next(m * base for m in (1.0, 2.0, 5.0, 10.0) if m * base >= raw)
    count = math.ceil(top / step - 1e-9)
    return [i * step for i in range(count + 1)]


def _tick_label(v: float, step: float) -> str:
    decimals = max(0, -math.floor(math.log10(step))) if step > 0 else 0
    return f"{v:.{min(decimals, 6)}f}"


def plot_cost_report(report: CostReport, path: str | Path) -> Path:
    """Grouped bars, planned vs actual: cost (left) and makespan (right) per line; a PNG.

    Drawn with Pillow (a few milliseconds to import) rather than matplotlib (half
    a second of imports at the end of every run, on the command's critical path).
    """
    from PIL import Image, ImageDraw, ImageFont

    path = Path(path)
    labels = [(ln.instance_type, ln.stage) if ln.instance_type else (ln.stage,)
              for ln in report.lines] + [("total",)]
    panels = (
        (f"cost, {report.campaign}", "USD",
         [ln.planned_cost_usd for ln in report.lines] + [report.planned_cost_usd],
         [ln.actual_cost_usd for ln in report.lines] + [report.actual_cost_usd]),
        ("makespan", "hours",
         [ln.planned_makespan_s / 3600 for ln in report.lines] + [report.planned_makespan_s / 3600],
         [ln.actual_makespan_s / 3600 for ln in report.lines] + [report.actual_makespan_s / 3600]),
    )
    panel_w = max(400, 80 * len(labels) + 90)
    width, height = 2 * panel_w, 450
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=12)
    small = ImageFont.load_default(size=10)
    for p, (title, unit, planned, actual) in enumerate(panels):
        x0, x1 = p * panel_w + 70, (p + 1) * panel_w - 20  # plot area
        y0, y1 = 40, height - 60
        values = [v for v in (*planned, *actual) if math.isfinite(v)]
        ticks = nice_ticks(max(values, default=0.0))
        top = ticks[-1]
        step = ticks[1] - ticks[0]

        def y_of(v: float, y0: int = y0, y1: int = y1, top: float = top) -> float:
            return y1 - (y1 - y0) * (v / top)

        draw.text(((x0 + x1) / 2, 12), title, fill=INK_RGB, font=font, anchor="mt")
        for t in ticks:
            y = y_of(t)
            draw.line([(x0, y), (x1, y)], fill=(0xE4, 0xE4, 0xE4))
            draw.text((x0 - 6, y), _tick_label(t, step), fill=INK_RGB, font=small, anchor="rm")
        draw.text((p * panel_w + 8, (y0 + y1) / 2), unit, fill=INK_RGB, font=small, anchor="lm")
        slot = (x1 - x0) / len(labels)
        bar = slot * 0.35
        for i, name in enumerate(labels):
            cx = x0 + slot * (i + 0.5)
            for v, dx, rgb in ((planned[i], -bar, PLANNED_RGB), (actual[i], 0.0, ACTUAL_RGB)):
                if math.isfinite(v) and v > 0:
                    draw.rectangle([cx + dx, y_of(v), cx + dx + bar, y1], fill=rgb)
            draw.multiline_text((cx, y1 + 6), "\n".join(name), fill=INK_RGB, font=small,
                                anchor="ma", align="center")
        draw.line([(x0, y0), (x0, y1), (x1, y1)], fill=INK_RGB)
        for k, (series, rgb) in enumerate((("planned", PLANNED_RGB), ("actual", ACTUAL_RGB))):
            lx = x1 - 140 + 70 * k  # above the plot area, right of the title
            draw.rectangle([lx, 8, lx + 12, 18], fill=rgb)
            draw.text((lx + 16, 13), series, fill=INK_RGB, font=small, anchor="lm")
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format="PNG")
    return path


def write_cost_report(report: CostReport, out_dir: str | Path,
                      stem: str = "cost-report") -> tuple[Path, Path]:
    """``STEM.txt`` (the table) and ``STEM.png`` (the plot) in ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    txt = out / f"{stem}.txt"
    txt.write_text(format_cost_report(report) + "\n")
    return txt, plot_cost_report(report, out / f"{stem}.png")
