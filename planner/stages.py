"""The stage vocabulary and the tasks of each product: one declaration source for plan and run.

Every task of a plan and of a run is a :class:`TaskKey`
``(op, item, row, col)``, written ``op:item:row_col``, and belongs to one of
:data:`STAGES`: the stage of an op is its part before the first dot
(``ortho.write`` -> ``ortho``). Tile tasks carry the tile's row and column;
a product's plan and writer tasks are row 0, column 0.

The task layout of each product, laid out here once, is what the planner
costs (:mod:`planner.estimate`, grids estimated from footprints) and what the
runtime dispatches (:mod:`scheduler.products.product`, grids surveyed from
the RPCs); only the grid sizes differ. An edge ``u -> v`` means "v reads
u's result"; a task's inputs are listed in the order its function takes them::

    ortho of scene S:
        ortho.plan:S ──> ortho:S:r_c (each tile) ──> ortho.write:S

    dsm of pair P:
        stereo.plan:P ──> stereo:P:r_c ──> dsm:P:r_c ──> dsm.write:P
              └──────────────────────────────^

    dsm of views G fused over pairs P1..Pk (pair items G/P1..G/Pk):
        stereo.plan:G ──> stereo:G/Pi:r_c ──> dsm:G/Pi:r_c ──┐
              │                  (each pair i) ──────────────┴──> fusion:G:r_c ──> dsm.write:G
              └──────────────────────────────────────────────────────^

* ``stereo`` (tile): reads both views' raw windows, rectifies, matches and
  triangulates: the points landing on the tile grown by the hole-filling margin;
* ``dsm`` (tile): rasterises those points and filters the raster: the DSM
  tile; it reads only its own stereo tile (the points already cover the
  margin its filters need);
* ``fusion`` (tile): fuses the pairs' DSM tiles per cell;
* ``ortho`` (tile): resamples the raw image onto the map on the external
  DEM (not the DSM: the runtime orthorectifies on the DEM), so it reads no task
  but its scene's plan.

The plan tasks (``stereo.plan``, ``ortho.plan``) hand the product's plan to
its tiles; the writers (``dsm.write``, ``ortho.write``) assemble the tiles
into the product's COG.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from planner.errors import CampaignError, DagError
from planner.geometry.grid import InputWindow, TileGrid

__all__ = ["MAX_FUSED_PAIRS", "PRODUCT_TASKS", "STAGES", "LaidTask", "SurveyedProduct", "TaskKey", "dsm_tasks", "ortho_tasks", "parse_key", "stage_of"]

#: The stages, in DAG order: every task of a plan and of a run belongs to one.
STAGES = ("stereo", "dsm", "fusion", "ortho")
#: Tasks of a product beside its tiles: its plan task and its writer.
PRODUCT_TASKS = 2
#: Pairs a fused DSM is planned with at most (:func:`ops.stereo.multiview.plan_multiview`'s
#: ``max_pairs``; which pairs it keeps, by B/H, is known only once the RPCs are read).
MAX_FUSED_PAIRS = 6


class TaskKey(NamedTuple):
    """A task: operation name, scene or pair id, tile row and tile column.

    A named tuple rather than a dataclass: graphs of a million tasks hash
    these keys millions of times, and tuple hashing runs in C.
    """

    op: str
    item: str
    row: int
    col: int

    def __str__(self) -> str:
        return f"{self.op}:{self.item}:{self.row}_{self.col}"


def stage_of(op: str) -> str:
    """The stage of an op (``"ortho.write"`` -> ``"ortho"``); DagError for an unknown one."""
    stage = op.split(".", 1)[0]
    if stage not in STAGES:
        raise DagError(f"op {op!r} belongs to no stage; expected an op of {', '.join(STAGES)} "
                       "(an op's stage is its part before the first dot)")
    return stage


def parse_key(key: str) -> TaskKey:
    """The :class:`TaskKey` written as ``key`` (``"dsm:a+b:0_1"``); DagError if it is none."""
    op, sep, rest = key.partition(":")
    item, sep2, tile = rest.rpartition(":")
    row, sep3, col = tile.partition("_")
    if not (sep and sep2 and sep3 and row.isdigit() and col.isdigit()):
        raise DagError(f"task key {key!r} is not op:item:row_col (e.g. 'dsm:a+b:0_1')")
    return TaskKey(op, item, int(row), int(col))


class LaidTask(NamedTuple):
    """One task of a product's layout: its key, the keys it reads (argument order), its kind:
    "plan" (shared by the tiles), "tile" or "write"."""

    key: TaskKey
    inputs: tuple[TaskKey, ...]
    kind: str


def ortho_tasks(scene: str, n_rows: int, n_cols: int) -> Iterator[LaidTask]:
    """The tasks of a scene's ortho on a grid of ``n_rows`` x ``n_cols`` tiles (docstring above)."""
    _check_grid(scene, n_rows, n_cols)
    plan = TaskKey("ortho.plan", scene, 0, 0)
    yield LaidTask(plan, (), "plan")
    plan_only = (plan,)
    tiles = []
    for i in range(n_rows):
        for j in range(n_cols):
            key = TaskKey("ortho", scene, i, j)
            tiles.append(key)
            yield LaidTask(key, plan_only, "tile")
    yield LaidTask(TaskKey("ortho.write", scene, 0, 0), tuple(tiles), "write")


def dsm_tasks(item: str, n_rows: int, n_cols: int, pairs: Sequence[str] = ()
              ) -> Iterator[LaidTask]:
    """The tasks of a DSM product: of one pair without ``pairs``, else its ``pairs`` fused.

    ``pairs`` names the pairs of a fused product (e.g. ``"a+b"``); their
    stereo and dsm tasks are items ``item/pair``.
    """
    _check_grid(item, n_rows, n_cols)
    if len(set(pairs)) != len(pairs):
        raise DagError(f"DSM {item}: pairs {list(pairs)} repeat one; expected each pair once")
    plan = TaskKey("stereo.plan", item, 0, 0)
    yield LaidTask(plan, (), "plan")
    plan_only = (plan,)
    items = [f"{item}/{p}" for p in pairs] or [item]
    tiles = []
    for i in range(n_rows):
        for j in range(n_cols):
            grids = []
            for it in items:
                stereo = TaskKey("stereo", it, i, j)
                yield LaidTask(stereo, plan_only, "tile")
                dsm = TaskKey("dsm", it, i, j)
                yield LaidTask(dsm, (plan, stereo), "tile")
                grids.append(dsm)
            if pairs:
                fused = TaskKey("fusion", item, i, j)
                yield LaidTask(fused, (plan, *grids), "tile")
                tiles.append(fused)
            else:
                tiles.append(grids[0])
    yield LaidTask(TaskKey("dsm.write", item, 0, 0), tuple(tiles), "write")


def _check_grid(item: str, n_rows: int, n_cols: int) -> None:
    if n_rows < 1 or n_cols < 1:
        raise DagError(f"{item}: a grid of {n_rows} x {n_cols} tiles; expected at least one tile")
    if ":" in item:
        raise DagError(f"item {item!r} holds ':', which separates a task key's parts; "
                       "expected a scene or pair id without ':'")


@dataclass(frozen=True, slots=True)
class SurveyedProduct:
    """A product on the grid the runtime surveyed for it (RPCs, DEM): what it will run.

    ``kind`` is ``"dsm"`` or ``"ortho"``; ``item`` the product's pair, views or
    scene id; ``pairs`` the pairs a fused DSM fuses (empty for one pair).
    """

    kind: str
    item: str
    grid: TileGrid
    pairs: tuple[str, ...] = ()
    #: raw-image windows each stereo tile reads, as the runtime declared them
    windows: Mapping[TaskKey, tuple[InputWindow, ...]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in ("dsm", "ortho"):
            raise CampaignError(f"surveyed product {self.item}: kind {self.kind!r}; expected "
                                "'dsm' or 'ortho'")
