"""Footprint-based products: the plan-time declarations of a campaign's tasks.

No RPC is read at plan time. Each pair's DSM grid covers the intersection of
its two lon/lat footprints, in the UTM zone of its centre, at the DSM GSD;
each scene's ortho grid covers its footprint at the ortho GSD in the same
CRS. The tasks of each product, their stages and edges are those of
:mod:`planner.stages` (the runtime lays out its products there too, on the
surveyed grids); this module gives them estimated costs, edge bytes and raw
input windows:

- ``stereo`` (pair, DSM tile): reads raw windows of both views around the
  tile's padded window (estimated by linear interpolation of the footprint,
  an affine stand-in for the RPCs);
- ``dsm`` (pair, DSM tile): grids its stereo tile's points (the bytes of that
  tile's output);
- ``ortho`` (scene, ortho tile): resamples the raw image onto the map on the
  external DEM (not a task);
- plan and write tasks: no CPU of their own (the calibration's tile figures
  include the plan's share and the COG write), the profile's base memory;
  a writer reads every tile of its product.

What each task reads from and writes to the object store is declared too,
for the S3 requests (:func:`planner.overheads.store_requests`): a tile's raw
windows by their rows (the declared windows, else its padded rows at the
scene's ground sample distance from its footprint) and one DEM block row; a
plan task the headers of its views; a writer the bytes it publishes.

Products whose grids are known exactly (surveyed from the RPCs and the DEM by
the runtime, as ``eochain plan`` does for scenes given by file) are declared
by :func:`surveyed_dag` with the same generators, on those grids.

A group of three or more views (``products.dsm.views``) is one fused DSM on
the union of its pairs' overlaps, planned with its first
:data:`MAX_FUSED_PAIRS` overlapping pairs (the run keeps those of usable
B/H: plan with ``--dem`` on local files to cost exactly those); its
``fusion`` tiles are costed with the ``dsm`` profile (gridding-like work per
output cell) until the calibration measures them.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache

import networkx as nx
from pyproj import Transformer

from planner.calibration import Calibration
from planner.campaign import Campaign, Pair, Scene
from planner.dag import GIB, TaskCost, TaskDeclaration, TaskKey, build_dag
from planner.errors import CampaignError
from planner.geometry.grid import GeoBox, InputWindow, TileGrid, TileIndex, Window, utm_crs
from planner.scene_inputs import M_PER_DEG_LAT, PLEIADES_GSD_M
from planner.stages import MAX_FUSED_PAIRS, SurveyedProduct, dsm_tasks, ortho_tasks, stage_of


@lru_cache(maxsize=64)
def _to_utm(crs: str) -> Transformer:
    return Transformer.from_crs("EPSG:4326", crs, always_xy=True)


def footprint_geobox(
    bbox: tuple[float, float, float, float], crs: str, gsd_m: float
) -> GeoBox:
    """North-up grid at ``gsd_m`` covering a lon/lat bbox projected to ``crs``."""
    x0, y0, x1, y1 = bbox
    lons = [x0, x1, x1, x0, 0.5 * (x0 + x1), 0.5 * (x0 + x1), x0, x1]
    lats = [y0, y0, y1, y1, y0, y1, 0.5 * (y0 + y1), 0.5 * (y0 + y1)]
    xs, ys = _to_utm(crs).transform(lons, lats)
    return GeoBox.from_bounds(crs, min(xs), min(ys), max(xs), max(ys), gsd_m)


def _spans(size: int, tile: int, margin: int) -> list[tuple[int, int, int, int]]:
    """Per tile along one axis: core start/stop and padded (clipped) start/stop.

    The same arithmetic as :meth:`TileGrid.window`/``padded_window``, without
    building window objects: a million-tile DAG would spend most of its time there.
    """
    out = []
    for start in range(0, size, tile):
        stop = min(size, start + tile)
        out.append((start, stop, max(0, start - margin), min(size, stop + margin)))
    return out


def _grid_spans(grid: TileGrid) -> tuple[list[tuple[int, int, int, int]],
                                         list[tuple[int, int, int, int]]]:
    return (_spans(grid.geobox.height, grid.tile_height, grid.margin),
            _spans(grid.geobox.width, grid.tile_width, grid.margin))


@dataclass(frozen=True, slots=True)
class PairGeometry:
    pair: Pair
    crs: str
    dsm_grid: TileGrid


class _CostTable:
    """One shared :class:`TaskCost` per (stage, padded pixel count)."""

    def __init__(self, cal: Calibration, families: tuple[str, ...]) -> None:
        self.cal = cal
        self.speed = {f: cal.speed(f) for f in families}
        self.cache: dict[tuple[str, int], TaskCost] = {}

    def get(self, stage: str, px: int) -> TaskCost:
        """The cost of a task of ``stage`` on ``px`` padded pixels (0: a plan or write task)."""
        key = (stage, px)
        cost = self.cache.get(key)
        if cost is None:
            p = self.cal.profile(stage if stage in self.cal.operations else "dsm")
            ref = p.cpu_s_per_mpx * px / 1e6
            cost = TaskCost(
                cpu_s={f: ref * s for f, s in self.speed.items()},
                threads=p.threads,
                peak_mem_gib=p.mem_base_gib + p.mem_bytes_per_px * px / GIB,
                output_bytes=int(p.out_bytes_per_px * px),
                input_bytes=int(p.in_bytes_per_px * px),
            )
            self.cache[key] = cost
        return cost


def _raw_gsd_m(scene: Scene) -> float:
    """The scene's ground sample distance along its rows, from its footprint and size."""
    return (scene.footprint[3] - scene.footprint[1]) * M_PER_DEG_LAT / scene.rows


def _raw_window(scene: Scene, bbox: tuple[float, float, float, float], margin_px: int
                ) -> Window:
    """Sensor window of a lon/lat bbox, by linear interpolation of the scene footprint."""
    x0, y0, x1, y1 = scene.footprint
    c0 = (bbox[0] - x0) / (x1 - x0) * scene.cols
    c1 = (bbox[2] - x0) / (x1 - x0) * scene.cols
    r0 = (y1 - bbox[3]) / (y1 - y0) * scene.rows
    r1 = (y1 - bbox[1]) / (y1 - y0) * scene.rows
    win = Window(math.floor(r0) - margin_px, math.floor(c0) - margin_px,
                 math.ceil(r1 - r0) + 2 * margin_px, math.ceil(c1 - c0) + 2 * margin_px)
    return win.clip(scene.rows, scene.cols) or Window(0, 0, 0, 0)


class CampaignOperations:
    """The estimated products of a campaign, sharing grids and cost tables."""

    def __init__(self, campaign: Campaign, calibration: Calibration,
                 families: tuple[str, ...], *, with_external: bool = False) -> None:
        self.campaign = campaign
        self.costs = _CostTable(calibration, families)
        self.with_external = with_external
        self.scenes = {s.id: s for s in campaign.scenes}
        dsm = campaign.product("dsm")
        self.pairs: list[PairGeometry] = []
        self.scene_pair: dict[str, PairGeometry] = {}
        t = campaign.tiling
        for pair in campaign.pairs:
            a, b = self.scenes[pair.left].footprint, self.scenes[pair.right].footprint
            inter = (max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3]))
            if not (inter[0] < inter[2] and inter[1] < inter[3]):
                raise CampaignError(f"{campaign.source}: pair {pair.id}: footprints {a} and {b} "
                                    "do not overlap; expected a stereo pair over one area")
            crs = utm_crs(0.5 * (inter[0] + inter[2]), 0.5 * (inter[1] + inter[3]))
            gsd = dsm.gsd_m if dsm else 1.0
            grid = TileGrid(footprint_geobox(inter, crs, gsd), t.tile_px, t.tile_px, t.margin_px)
            geo = PairGeometry(pair, crs, grid)
            self.pairs.append(geo)
            for sid in (pair.left, pair.right):
                self.scene_pair.setdefault(sid, geo)
        #: fused DSMs: (item, grid, pair names) per group of views
        self.groups: list[tuple[str, TileGrid, tuple[str, ...]]] = []
        for group in campaign.view_groups:
            boxes: list[tuple[float, float, float, float]] = []
            names: list[str] = []
            for one, other in itertools.combinations(group, 2):
                fa, fb = self.scenes[one].footprint, self.scenes[other].footprint
                inter = (max(fa[0], fb[0]), max(fa[1], fb[1]), min(fa[2], fb[2]),
                         min(fa[3], fb[3]))
                if inter[0] < inter[2] and inter[1] < inter[3] and len(names) < MAX_FUSED_PAIRS:
                    boxes.append(inter)
                    names.append(f"{one}+{other}")
            if not boxes:
                raise CampaignError(f"{campaign.source}: views {list(group)}: no two footprints "
                                    "overlap; expected views of one area")
            union = (min(x[0] for x in boxes), min(x[1] for x in boxes),
                     max(x[2] for x in boxes), max(x[3] for x in boxes))
            crs = utm_crs(0.5 * (union[0] + union[2]), 0.5 * (union[1] + union[3]))
            grid = TileGrid(footprint_geobox(union, crs, dsm.gsd_m if dsm else 1.0),
                            t.tile_px, t.tile_px, t.margin_px)
            self.groups.append(("+".join(group), grid, tuple(names)))

    def operations(self) -> list[_EstimatedOp]:
        """One operation per product kind asked: ``dsm`` (its pairs and groups of views) and
        ``ortho`` (its scenes)."""
        ops: list[_EstimatedOp] = []
        if self.campaign.product("dsm") is not None:
            ops.append(_EstimatedOp("dsm", self._dsm))
        if self.campaign.product("ortho") is not None:
            ops.append(_EstimatedOp("ortho", self._ortho))
        return ops

    def _geo_bbox(self, geobox: GeoBox) -> tuple[float, float, float, float]:
        inv = Transformer.from_crs(geobox.crs, "EPSG:4326", always_xy=True)
        left, bottom, right, top = geobox.bounds
        xs, ys = inv.transform([left, right, right, left], [bottom, bottom, top, top])
        return min(xs), min(ys), max(xs), max(ys)

    def _dsm(self) -> Iterator[TaskDeclaration]:
        """Each pair's tasks as :func:`planner.stages.dsm_tasks` lays them out."""
        for geo in self.pairs:
            grid = geo.dsm_grid
            views = (self.scenes[geo.pair.left], self.scenes[geo.pair.right])

            def windows(key: TaskKey, grid: TileGrid = grid,
                        views: tuple[Scene, Scene] = views) -> tuple[InputWindow, ...]:
                bbox = self._geo_bbox(grid.tile_geobox(TileIndex(key.row, key.col),
                                                       padded=True))
                return tuple(InputWindow(v.uri or v.id, _raw_window(v, bbox, 0)) for v in views)

            yield from dsm_declarations(geo.pair.id, grid, self.costs,
                                        windows=windows if self.with_external else None,
                                        raw_gsd_m=min(map(_raw_gsd_m, views)))
        for item, grid, names in self.groups:
            views_gsd = (_raw_gsd_m(self.scenes[v]) for n in names for v in n.split("+"))
            yield from dsm_declarations(item, grid, self.costs, names,
                                        raw_gsd_m=min(views_gsd))

    def _ortho(self) -> Iterator[TaskDeclaration]:
        """Each scene's tasks as :func:`planner.stages.ortho_tasks` lays them out (on the DEM)."""
        ortho = self.campaign.product("ortho")
        if ortho is None:
            return
        t = self.campaign.tiling
        for scene in self.campaign.scenes:
            geo = self.scene_pair.get(scene.id)
            x0, y0, x1, y1 = scene.footprint
            crs = geo.crs if geo else utm_crs(0.5 * (x0 + x1), 0.5 * (y0 + y1))
            grid = TileGrid(footprint_geobox(scene.footprint, crs, ortho.gsd_m),
                            t.tile_px, t.tile_px, t.margin_px)

            def windows(key: TaskKey, grid: TileGrid = grid,
                        scene: Scene = scene) -> tuple[InputWindow, ...]:
                bbox = self._geo_bbox(grid.tile_geobox(TileIndex(key.row, key.col),
                                                       padded=True))
                return (InputWindow(scene.uri or scene.id, _raw_window(scene, bbox, 0)),)

            yield from ortho_declarations(scene.id, grid, self.costs,
                                          windows=windows if self.with_external else None,
                                          raw_gsd_m=_raw_gsd_m(scene))


#: A tile's raw input windows (stereo: both views; ortho: its scene), None: not declared.
TileWindows = Callable[[TaskKey], tuple[InputWindow, ...]] | None


def _padded_px(grid: TileGrid) -> list[list[int]]:
    rows, cols = _grid_spans(grid)
    return [[(r1 - r0) * (c1 - c0) for _, _, c0, c1 in cols] for _, _, r0, r1 in rows]


def _raw_rows(grid: TileGrid, raw_gsd_m: float) -> list[int]:
    """Rows of the raw window a tile of each grid row reads (its padded rows at the raw GSD)."""
    rows, _ = _grid_spans(grid)
    scale = abs(grid.geobox.transform[4]) / raw_gsd_m
    return [math.ceil((r1 - r0) * scale - 1e-6) for _, _, r0, r1 in rows]


def _store_reads(key: TaskKey, ext: tuple[InputWindow, ...], views: int,
                 raw_rows: list[int]) -> tuple[int, ...]:
    """Rows of the raw windows a tile reads from the store: its declared windows, else the
    estimate for each of its ``views``, and one block row of the DEM (module
    :mod:`planner.overheads`)."""
    if ext:
        return (*(w.window.height for w in ext), 1)
    return (raw_rows[key.row],) * views + (1,)


def dsm_declarations(item: str, grid: TileGrid, costs: _CostTable, pairs: Sequence[str] = (),
                     *, windows: TileWindows = None,
                     raw_gsd_m: float = PLEIADES_GSD_M) -> Iterator[TaskDeclaration]:
    """A DSM product's declarations on ``grid`` (costs by the tiles' padded pixels).

    Each stereo tile reads a window of both views of its pair (``windows``
    when given, else estimated at ``raw_gsd_m``); the plan task reads the
    headers (RPCs) of the product's views; the writer publishes the tiles' bytes.
    """
    px = _padded_px(grid)
    raw_rows = _raw_rows(grid, raw_gsd_m)
    get = costs.get
    out: dict[TaskKey, int] = {}
    headers = (0,) * (len({v for p in pairs for v in p.split("+")}) or 2)
    for key, inputs, kind in dsm_tasks(item, *grid.shape, pairs):
        stage = stage_of(key.op)
        cost = get(stage, px[key.row][key.col] if kind == "tile" else 0)
        ext: tuple[InputWindow, ...] = ()
        reads: tuple[int, ...] = ()
        if kind == "tile" and stage == "stereo":
            if windows is not None:
                ext = windows(key)
            reads = _store_reads(key, ext, 2, raw_rows)
        elif kind == "plan":
            reads = headers
        out[key] = cost.output_bytes
        yield TaskDeclaration(key, [(k, out[k]) for k in inputs], cost, ext, reads,
                              sum(out[k] for k in inputs) if kind == "write" else 0)


def ortho_declarations(scene: str, grid: TileGrid, costs: _CostTable, *,
                       windows: TileWindows = None,
                       raw_gsd_m: float = PLEIADES_GSD_M) -> Iterator[TaskDeclaration]:
    """A scene's ortho declarations on ``grid`` (costs by the tiles' padded pixels).

    Each tile reads a window of the scene (``windows`` when given, else
    estimated at ``raw_gsd_m``); the plan task reads its header (RPCs); the
    writer publishes the tiles' bytes.
    """
    px = _padded_px(grid)
    raw_rows = _raw_rows(grid, raw_gsd_m)
    get = costs.get
    out: dict[TaskKey, int] = {}
    for key, inputs, kind in ortho_tasks(scene, *grid.shape):
        cost = get("ortho", px[key.row][key.col] if kind == "tile" else 0)
        ext: tuple[InputWindow, ...] = ()
        reads: tuple[int, ...] = ()
        if kind == "tile":
            if windows is not None:
                ext = windows(key)
            reads = _store_reads(key, ext, 1, raw_rows)
        elif kind == "plan":
            reads = (0,)
        out[key] = cost.output_bytes
        yield TaskDeclaration(key, [(k, out[k]) for k in inputs], cost, ext, reads,
                              sum(out[k] for k in inputs) if kind == "write" else 0)


def surveyed_dag(products: Sequence[SurveyedProduct], calibration: Calibration,
                 families: tuple[str, ...], *, with_external: bool = False) -> nx.DiGraph:
    """The task DAG of products on their surveyed grids (the run's DAG, costed).

    ``with_external`` keeps each stereo tile's raw windows on its node (``external``).
    """
    costs = _CostTable(calibration, families)

    def dsm() -> Iterator[TaskDeclaration]:
        for p in products:
            if p.kind == "dsm":
                yield from dsm_declarations(p.item, p.grid, costs, p.pairs,
                                            windows=p.windows.__getitem__ if p.windows else None)

    def ortho() -> Iterator[TaskDeclaration]:
        for p in products:
            if p.kind == "ortho":
                yield from ortho_declarations(p.item, p.grid, costs)

    return build_dag([_EstimatedOp("dsm", dsm), _EstimatedOp("ortho", ortho)],
                     keep_external=with_external)


@dataclass(frozen=True, slots=True)
class _EstimatedOp:
    """An :class:`planner.dag.Operation` backed by a generator method."""

    name: str
    source: Callable[[], Iterator[TaskDeclaration]]

    def declarations(self) -> Iterator[TaskDeclaration]:
        return self.source()


def campaign_dag(campaign: Campaign, calibration: Calibration, families: tuple[str, ...],
                 *, with_external: bool = False) -> nx.DiGraph:
    """The estimated task DAG of a campaign (node costs for ``families``)."""
    ops = CampaignOperations(campaign, calibration, families, with_external=with_external)
    return build_dag(ops.operations(), keep_external=with_external)
