"""Footprint-based operations: the plan-time declarations of a campaign's tasks.

No RPC is read at plan time. Each pair's DSM grid covers the intersection of
its two lon/lat footprints, in the UTM zone of its centre, at the DSM GSD;
each scene's ortho grid covers its footprint at the ortho GSD in the same
CRS. Three operations declare the tasks:

- ``stereo`` (pair, DSM tile): matches the two views for the tile's core
  window plus margin; reads raw windows of both scenes (estimated by linear
  interpolation of the footprint, i.e. an affine stand-in for the RPCs).
- ``dsm`` (pair, DSM tile): grids the point clouds; reads every stereo tile
  whose core overlaps its padded window, the bytes of that overlap.
- ``ortho`` (scene, ortho tile): resamples the raw image onto the map; reads
  the DSM tiles under its padded window when the campaign makes the scene's
  DSM, else only the raw image (and an external DEM, not a task).

Grids are north-up and share one CRS per pair, so tile overlaps are
separable: rows and columns are matched independently.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import lru_cache

import networkx as nx
from pyproj import Transformer

from planner.calibration import Calibration
from planner.campaign import Campaign, Pair, Scene
from planner.dag import GIB, TaskCost, TaskDeclaration, TaskKey, build_dag
from planner.errors import CampaignError
from planner.grid import GeoBox, InputWindow, TileGrid, TileIndex, Window, utm_crs


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


def _overlaps(start: int, stop: int, tile: int, n_tiles: int) -> list[tuple[int, int]]:
    """(tile index, overlap length) of 1-D core tiles under ``[start, stop)``."""
    out = []
    for t in range(max(0, start // tile), min(n_tiles - 1, (stop - 1) // tile) + 1):
        n = min(stop, (t + 1) * tile) - max(start, t * tile)
        if n > 0:
            out.append((t, n))
    return out


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
    """One shared :class:`TaskCost` per (operation, padded pixel count)."""

    def __init__(self, cal: Calibration, families: tuple[str, ...]) -> None:
        self.cal = cal
        self.speed = {f: cal.speed(f) for f in families}
        self.cache: dict[tuple[str, int], TaskCost] = {}

    def get(self, op: str, px: int) -> TaskCost:
        key = (op, px)
        cost = self.cache.get(key)
        if cost is None:
            p = self.cal.profile(op)
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
    """The three estimated operations of a campaign, sharing grids and cost tables."""

    def __init__(self, campaign: Campaign, calibration: Calibration,
                 families: tuple[str, ...], *, with_external: bool = False) -> None:
        self.campaign = campaign
        self.costs = _CostTable(calibration, families)
        self.with_external = with_external
        self.key_cache: dict[tuple[str, str], list[list[TaskKey]]] = {}
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

    def _keys(self, op: str, item: str, n_rows: int, n_cols: int) -> list[list[TaskKey]]:
        """One shared key object per task: graphs of a million tasks hold each key once."""
        cached = self.key_cache.get((op, item))
        if cached is None:
            cached = [[TaskKey(op, item, i, j) for j in range(n_cols)] for i in range(n_rows)]
            self.key_cache[op, item] = cached
        return cached

    def operations(self) -> list[_EstimatedOp]:
        ops: list[_EstimatedOp] = []
        if self.campaign.product("dsm") is not None:
            ops += [_EstimatedOp("stereo", self._stereo), _EstimatedOp("dsm", self._dsm)]
        if self.campaign.product("ortho") is not None:
            ops.append(_EstimatedOp("ortho", self._ortho))
        return ops

    def _geo_bbox(self, geobox: GeoBox) -> tuple[float, float, float, float]:
        inv = Transformer.from_crs(geobox.crs, "EPSG:4326", always_xy=True)
        left, bottom, right, top = geobox.bounds
        xs, ys = inv.transform([left, right, right, left], [bottom, bottom, top, top])
        return min(xs), min(ys), max(xs), max(ys)

    def _stereo(self) -> Iterator[TaskDeclaration]:
        for geo in self.pairs:
            grid = geo.dsm_grid
            pid = geo.pair.id
            ext: tuple[InputWindow, ...] = ()
            rows, cols = _grid_spans(grid)
            get = self.costs.get
            keys = self._keys("stereo", pid, *grid.shape)
            for i, (_, _, pr0, pr1) in enumerate(rows):
                for j, (_, _, pc0, pc1) in enumerate(cols):
                    if self.with_external:
                        bbox = self._geo_bbox(grid.tile_geobox(TileIndex(i, j), padded=True))
                        ext = tuple(InputWindow(self.scenes[s].uri or s,
                                                _raw_window(self.scenes[s], bbox, 0))
                                    for s in (geo.pair.left, geo.pair.right))
                    yield TaskDeclaration(keys[i][j], (),
                                          get("stereo", (pr1 - pr0) * (pc1 - pc0)), ext)

    def _dsm(self) -> Iterator[TaskDeclaration]:
        per_px = self.costs.cal.profile("stereo").out_bytes_per_px
        for geo in self.pairs:
            grid = geo.dsm_grid
            pid = geo.pair.id
            n_rows, n_cols = grid.shape
            rows, cols = _grid_spans(grid)
            row_in = [_overlaps(a, b, grid.tile_height, n_rows) for _, _, a, b in rows]
            col_in = [_overlaps(a, b, grid.tile_width, n_cols) for _, _, a, b in cols]
            get = self.costs.get
            keys = self._keys("stereo", pid, n_rows, n_cols)
            dsm_keys = self._keys("dsm", pid, n_rows, n_cols)
            for i, (_, _, pr0, pr1) in enumerate(rows):
                for j, (_, _, pc0, pc1) in enumerate(cols):
                    inputs = [(keys[r][c], int(per_px * nr * nc))
                              for r, nr in row_in[i] for c, nc in col_in[j]]
                    yield TaskDeclaration(dsm_keys[i][j], inputs,
                                          get("dsm", (pr1 - pr0) * (pc1 - pc0)))

    def _ortho(self) -> Iterator[TaskDeclaration]:
        ortho = self.campaign.product("ortho")
        dsm = self.campaign.product("dsm")
        if ortho is None:
            return
        t = self.campaign.tiling
        dsm_per_px = self.costs.cal.profile("dsm").out_bytes_per_px
        for scene in self.campaign.scenes:
            geo = self.scene_pair.get(scene.id)
            x0, y0, x1, y1 = scene.footprint
            crs = geo.crs if geo else utm_crs(0.5 * (x0 + x1), 0.5 * (y0 + y1))
            grid = TileGrid(footprint_geobox(scene.footprint, crs, ortho.gsd_m),
                            t.tile_px, t.tile_px, t.margin_px)
            rows, cols = _grid_spans(grid)
            # Separable map from ortho pixel rows/cols to DSM rows/cols (same CRS, north-up).
            row_ranges: list[list[tuple[int, int]]] = []
            col_ranges: list[list[tuple[int, int]]] = []
            if geo is not None and dsm is not None:
                dg = geo.dsm_grid
                d_rows, d_cols = dg.shape
                ga, gd = grid.geobox.transform, dg.geobox.transform
                for _, _, p0, p1 in rows:
                    r0 = math.floor((ga[5] + ga[4] * p0 - gd[5]) / gd[4])
                    r1 = math.ceil((ga[5] + ga[4] * p1 - gd[5]) / gd[4])
                    row_ranges.append(_overlaps(max(r0, 0), min(r1, dg.geobox.height),
                                                dg.tile_height, d_rows))
                for _, _, p0, p1 in cols:
                    c0 = math.floor((ga[2] + ga[0] * p0 - gd[2]) / gd[0])
                    c1 = math.ceil((ga[2] + ga[0] * p1 - gd[2]) / gd[0])
                    col_ranges.append(_overlaps(max(c0, 0), min(c1, dg.geobox.width),
                                                dg.tile_width, d_cols))
            pid = geo.pair.id if geo else ""
            ext: tuple[InputWindow, ...] = ()
            get = self.costs.get
            keys = (self._keys("dsm", pid, *geo.dsm_grid.shape) if row_ranges and geo
                    else [])
            for i, (_, _, pr0, pr1) in enumerate(rows):
                for j, (_, _, pc0, pc1) in enumerate(cols):
                    inputs: list[tuple[TaskKey, int]] = []
                    if row_ranges:
                        inputs = [(keys[r][c], int(dsm_per_px * nr * nc))
                                  for r, nr in row_ranges[i] for c, nc in col_ranges[j]]
                    if self.with_external:
                        bbox = self._geo_bbox(grid.tile_geobox(TileIndex(i, j), padded=True))
                        ext = (InputWindow(scene.uri or scene.id, _raw_window(scene, bbox, 0)),)
                    yield TaskDeclaration(TaskKey("ortho", scene.id, i, j), inputs,
                                          get("ortho", (pr1 - pr0) * (pc1 - pc0)), ext)


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
