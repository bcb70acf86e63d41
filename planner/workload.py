"""How much work a campaign or a product asks for, estimated before any is done.

A mistyped ``gsd_m: 1e-6`` or ``tile_px: 64`` on a large survey turns a
campaign of thousands of tasks into billions; the commands estimate first
and refuse beyond stated limits, naming the estimate, unless the user passes
``--allow-large``. The estimate is cheap (no DAG, no grid objects):

- an ortho per scene: the footprint's extent in metres (equirectangular at
  its centre latitude) over ``gsd_m``, in tiles of ``tile_px``; one task a
  tile, and the product's plan and writer tasks (:mod:`planner.stages`);
- a DSM per pair: the same over the two footprints' intersection at the DSM
  ``gsd_m``, two tasks a tile (stereo and dsm), plus plan and writer;
- a fused DSM per group of views: the same over the union of its first
  :data:`~planner.stages.MAX_FUSED_PAIRS` overlapping pairs, ``2 k + 1``
  tasks a tile for ``k`` pairs (stereo and dsm per pair, fusion), plus plan
  and writer;
- output bytes: :data:`BYTES_PER_PX` a pixel (float32), an upper bound;
- planner memory: :data:`PLANNER_BYTES_PER_TASK` a task (the DAG of a
  1,003,946-task campaign took 1.50 GiB in ``benchmarks/planner_scale``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from planner.campaign import M_PER_DEG_LAT, M_PER_DEG_LON_EQUATOR, Campaign
from planner.errors import SizeLimitError
from planner.stages import MAX_FUSED_PAIRS, PRODUCT_TASKS

#: Bytes a product pixel takes (float32); uint16 products take half.
BYTES_PER_PX = 4
#: Planner memory per task of the DAG, measured by benchmarks/planner_scale (1.50 GiB / 1.0 M).
PLANNER_BYTES_PER_TASK = 1600
#: Most tasks a command accepts without ``--allow-large`` (about 3 GiB of planner memory).
MAX_TASKS = 2_000_000
#: Most output bytes a campaign accepts without ``--allow-large`` (100 TiB).
MAX_CAMPAIGN_BYTES = 100 * 2**40
#: Most output bytes one product (``eochain ortho``/``dsm``) accepts (100 GiB).
MAX_PRODUCT_BYTES = 100 * 2**30


@dataclass(frozen=True, slots=True)
class Workload:
    """Estimated tasks and output of some work; ``what`` names it in messages."""

    what: str
    tasks: float
    output_px: float

    @property
    def output_bytes(self) -> float:
        return self.output_px * BYTES_PER_PX

    @property
    def planner_bytes(self) -> float:
        return self.tasks * PLANNER_BYTES_PER_TASK

    def describe(self) -> str:
        """``N tasks, X of output, about Y of planner memory``."""
        return (f"{_count(self.tasks)} tasks, {human_bytes(self.output_bytes)} of output, about "
                f"{human_bytes(self.planner_bytes)} of planner memory")


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"):
        if n < 1024 or unit == "EiB":
            return f"{n:.0f} {unit}" if n >= 100 else f"{n:.3g} {unit}"
        n /= 1024
    return f"{n:.3g} EiB"


def _count(n: float) -> str:
    return f"{n:,.0f}" if n < 1e12 else f"{n:.3g}"


def grid_workload(what: str, rows: float, cols: float, tile_px: int,
                  tasks_per_tile: int = 1) -> Workload:
    """A product of ``rows`` x ``cols`` output pixels, cut into ``tile_px`` tiles."""
    tiles = math.ceil(rows / tile_px) * math.ceil(cols / tile_px)
    return Workload(what, float(tiles * tasks_per_tile + PRODUCT_TASKS),
                    float(rows) * float(cols))


def bbox_workload(what: str, bbox: tuple[float, float, float, float], gsd_m: float,
                  tile_px: int, tasks_per_tile: int = 1) -> Workload:
    """A product covering a lon/lat box at ``gsd_m``."""
    x0, y0, x1, y1 = bbox
    lat = math.radians(0.5 * (y0 + y1))
    width_m = (x1 - x0) * M_PER_DEG_LON_EQUATOR * max(math.cos(lat), 1e-6)
    height_m = (y1 - y0) * M_PER_DEG_LAT
    return grid_workload(what, max(1.0, math.ceil(height_m / gsd_m)),
                         max(1.0, math.ceil(width_m / gsd_m)), tile_px, tasks_per_tile)


def total(what: str, parts: Iterable[Workload]) -> Workload:
    tasks = px = 0.0
    for p in parts:
        tasks += p.tasks
        px += p.output_px
    return Workload(what, tasks, px)


def campaign_workload(campaign: Campaign) -> Workload:
    """The campaign's tasks and output (module docstring)."""
    tile = campaign.tiling.tile_px
    parts: list[Workload] = []
    ortho, dsm = campaign.product("ortho"), campaign.product("dsm")
    if ortho is not None:
        parts += [bbox_workload(s.id, s.footprint, ortho.gsd_m, tile) for s in campaign.scenes]
    if dsm is not None:
        by_id = {s.id: s for s in campaign.scenes}
        for pair in campaign.pairs:
            a, b = by_id[pair.left].footprint, by_id[pair.right].footprint
            box = (max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3]))
            if box[0] < box[2] and box[1] < box[3]:
                parts.append(bbox_workload(pair.id, box, dsm.gsd_m, tile, tasks_per_tile=2))
        for group in campaign.view_groups:
            boxes: list[tuple[float, float, float, float]] = []
            for i, one in enumerate(group):
                for other in group[i + 1:]:
                    a, b = by_id[one].footprint, by_id[other].footprint
                    box = (max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3]))
                    if box[0] < box[2] and box[1] < box[3] and len(boxes) < MAX_FUSED_PAIRS:
                        boxes.append(box)
            if boxes:
                union = (min(x[0] for x in boxes), min(x[1] for x in boxes),
                         max(x[2] for x in boxes), max(x[3] for x in boxes))
                parts.append(bbox_workload("+".join(group), union, dsm.gsd_m, tile,
                                           tasks_per_tile=2 * len(boxes) + 1))
    return total(f"campaign {campaign.name!r}", parts)


def check_workload(work: Workload, *, max_tasks: float = MAX_TASKS,
                   max_bytes: float = MAX_CAMPAIGN_BYTES, allow_large: bool = False,
                   hint: str = "check gsd_m, tile_px and the inputs") -> None:
    """Raise :class:`SizeLimitError` with the estimate when ``work`` is beyond a limit."""
    if allow_large:
        return
    over = []
    if work.tasks > max_tasks:
        over.append(f"{_count(work.tasks)} tasks (limit {_count(max_tasks)}; about "
                    f"{human_bytes(work.planner_bytes)} of planner memory)")
    if work.output_bytes > max_bytes:
        over.append(f"{human_bytes(work.output_bytes)} of output (limit "
                    f"{human_bytes(max_bytes)})")
    if over:
        raise SizeLimitError(
            f"{work.what} would make {' and '.join(over)}; {hint}, or pass --allow-large "
            "to do it anyway")
