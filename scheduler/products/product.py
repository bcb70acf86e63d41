"""What a flow produces, product by product: survey the inputs, then lay out the tasks.

Each product becomes a small DAG with its identity (a :class:`ProductPlan`),
laid out by :mod:`planner.stages`, the layout the planner costs: the same task
keys (``ortho:S:0_1``), stages and edges, on the grids surveyed here.

* ortho, per scene::

      ortho.plan:S ──> ortho:S:0_0 ──┐
          │        ──> ortho:S:0_1 ──┼──> ortho.write:S (COG + STAC item)
          └──────  ...             ──┘

  the plan task (RPC, DEM around the footprint, sparse-grid step and height
  levels) runs on a worker; its result is shared by every tile of the scene;
  tiles orthorectify on the DEM.
* dsm, per stereo pair: ``stereo.plan -> stereo (tile) -> dsm (tile) ->
  dsm.write``; the pair's stereo plan (output grid, matching frame, pointing
  correction) is computed while surveying, since the grid decides the tiles,
  and travels to the workers once, as the result of the plan task, with the
  DEM the tiles need. A stereo tile's points feed its dsm tile only.
* dsm of three or more views (:func:`plan_views_dsm_product`): per tile,
  each pair's stereo and dsm tasks, then a ``fusion`` task.

A DSM's plan task counts the bytes of its initial heights' grid (what the
runtime holds in flight while the tiles use it): the DEM's, or the coarse
surface's where the terrain tilts (:class:`~ops.stereo.initial_terrain.SurfaceTerrain`,
made on the DEM or, without one, on a flat surface);
a flat surface is a few numbers. The product records what they were
(``initial_heights``, :mod:`scheduler.products.provenance`).

The commands ``eochain ortho`` and ``eochain dsm`` build the same products
(``store=None``) and run them in their process into one file
(:mod:`scheduler.products.one_product`): one path per product, one file for
the same inputs and parameters. A DSM product may also fuse three or more
views (:func:`plan_views_dsm_product`).

Surveying runs on the driver: it reads the image headers, RPCs and the DEM
around the footprints. A scene or pair that fails here is reported by the
flow with the reason; the product key (hash of inputs, the RPC models
used, parameters and kernel version, :mod:`scheduler.products.manifest`)
decides what the manifest already holds.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ops.errors import GeometryError
from ops.ortho.orthorectify import HeightModel, default_geobox, default_nodata
from ops.raster.raster_io import raster_info
from ops.sensor.acquisition import read_acquisition, span
from ops.sensor.footprint import lonlat_bounds
from ops.sensor.rpc import RpcModel
from ops.sensor.rpc_io import find_rpc
from ops.terrain.dem import MAX_HOLE_FRACTION
from planner.geometry.grid import InputWindow, TileGrid, TileIndex
from planner.stages import LaidTask, SurveyedProduct, TaskKey, dsm_tasks, ortho_tasks, stage_of
from scheduler.products.kernels import (
    DSM_BANDS,
    DSM_NODATA,
    DemSource,
    DsmTileTask,
    FusionTileTask,
    OrthoPlanTask,
    OrthoTileTask,
    StereoPlanTask,
    StereoTileTask,
    WriteCogTask,
)
from scheduler.products.manifest import product_key, rpc_identity
from scheduler.products.provenance import dsm_metadata, ortho_metadata, processing_time
from scheduler.products.store import LocalStore, S3Store
from scheduler.runtime.errors import FlowError
from scheduler.runtime.state import Task

if TYPE_CHECKING:
    from ops.stereo.multiview import MultiViewPlan
    from ops.stereo.pair import StereoPlan, Terrain

#: Degrees added around a pair's footprints when reading the DEM (matching context).
DSM_DEM_PAD_DEG = 0.004
#: Estimated bytes of a stereo tile's points per output cell (x, y, height, confidence).
POINT_BYTES_PER_CELL = 28
#: Bytes counted for a task result of a few numbers (a flat surface, a write's record).
SMALL_RESULT_BYTES = 1024
#: Ray resources (``"c7g.large:spot"``) of the node types each stage runs on, by stage.
Placement = Mapping[str, tuple[str, ...]]


@dataclass(frozen=True, slots=True)
class SceneInput:
    """A raw scene: its id (product names, failure reports), image path, and its own DEM if any."""

    id: str
    uri: str
    dem: str | None = None
    #: which RPC to use and the crop's origin (:func:`ops.sensor.rpc_io.find_rpc`)
    rpc: str | None = None
    rpc_origin: tuple[float, float] | None = None


@dataclass(frozen=True, slots=True)
class OrthoStep:
    """Ortho parameters: DEM (unless scenes carry theirs), grid (CRS, GSD), resampling, tiles.

    The defaults of ``eochain ortho`` and of a campaign differ only where the
    command line says so (its ``--tile-size`` default).
    """

    dem: str | None
    gsd_m: float | None = None
    crs: str | None = None
    geoid: str | None = None
    resampling: str = "bicubic"
    tile_px: int = 512
    #: the DEM's vertical reference over what its files say, and the holes it may have
    dem_heights: str | None = None
    dem_max_holes: float = MAX_HOLE_FRACTION


@dataclass(frozen=True, slots=True)
class DsmStep:
    """DSM parameters: the pairs and groups of views (scene ids), initial DEM, grid, tiles."""

    pairs: tuple[tuple[str, str], ...]
    dem: str | None
    gsd_m: float | None = None
    crs: str | None = None
    geoid: str | None = None
    tile_px: int = 512
    #: vertical reference of the output heights: "ellipsoid" or "geoid" (needs ``geoid``)
    heights: str = "ellipsoid"
    #: views acquired further apart than this are refused (:class:`ops.stereo.pair.StereoConfig`)
    max_days_apart: float = 60.0
    dem_heights: str | None = None
    dem_max_holes: float = MAX_HOLE_FRACTION
    #: groups of three or more scene ids, each one DSM of its pairs fused
    views: tuple[tuple[str, ...], ...] = ()

    def __post_init__(self) -> None:
        if self.heights not in ("ellipsoid", "geoid"):
            raise FlowError(f"dsm heights = {self.heights!r}; expected 'ellipsoid' or 'geoid'")
        if self.heights == "geoid" and self.geoid is None:
            raise FlowError("dsm heights = 'geoid' needs a geoid grid (geoid=...)")


@dataclass(frozen=True, slots=True)
class ProductPlan:
    """A product's tasks and identity, and the surveyed grid they were laid out on.

    ``surveyed`` is what the planner needs to declare the same tasks
    (:func:`planner.estimate.surveyed_dag`): the plan of a run is its DAG.
    """

    key: str
    object_key: str
    label: str
    tasks: tuple[Task, ...]
    surveyed: SurveyedProduct

    @property
    def sink(self) -> str:
        return self.tasks[-1].key

    @property
    def writer(self) -> WriteCogTask:
        """The task that writes the product's COG (its last)."""
        fn = self.tasks[-1].fn
        if not isinstance(fn, WriteCogTask):
            raise FlowError(f"{self.label}: its last task is not a COG writer")
        return fn


def plan_ortho_product(
    scene: SceneInput, step: OrthoStep, store: LocalStore | S3Store | None,
    placement: Placement | None = None,
) -> ProductPlan:
    """Survey one scene and build its ortho tasks: plan -> tiles -> write.

    ``store=None``: a one-product run into a file (``eochain ortho``, see
    :mod:`scheduler.products.one_product`); the tasks and the COG are the same.
    ``placement``: the Ray resources of each stage's node types (``Flow.place``).
    """
    dem_path = scene.dem or step.dem
    if dem_path is None:
        raise FlowError(f"scene {scene.id} has no DEM: pass ortho(dem=...) or SceneInput.dem")
    info = raster_info(scene.uri)
    rpc = find_rpc(scene.uri, rpc_source=scene.rpc, origin=scene.rpc_origin)
    box = footprint_box(rpc, info.shape)
    dem_source = DemSource(dem_path, step.geoid, step.dem_heights, step.dem_max_holes)
    dem = dem_source.open(box)
    geobox = default_geobox(rpc, info.shape, HeightModel.from_dem(dem), crs=step.crs,
                            gsd_m=step.gsd_m)
    params = {"crs": step.crs, "gsd_m": step.gsd_m, "resampling": step.resampling,
              "tile_px": step.tile_px, "dem_heights": step.dem_heights,
              "dem_max_holes": step.dem_max_holes,
              "geobox": [geobox.crs, *geobox.transform, geobox.height, geobox.width]}
    key = product_key("ortho", params, _inputs(scene.uri, dem_path, step.geoid),
                      [rpc_identity(rpc)])
    object_key = f"ortho/{scene.id}.tif"
    grid = TileGrid(geobox, step.tile_px, step.tile_px)
    tile_bytes = step.tile_px * step.tile_px * info.count * _itemsize(info.dtype)
    meta = ortho_metadata(crs=geobox.crs, band_descriptions=info.descriptions,
                          image=_location(scene.uri), rpc_source=_location(rpc.source),
                          dem=_location(dem_path),
                          geoid=None if step.geoid is None else _location(step.geoid),
                          acquired=read_acquisition(scene.uri), parameters=params)
    names = tuple(d or f"band {i + 1}" for i, d in enumerate(info.descriptions))
    writer = WriteCogTask(store, object_key, key, "ortho", scene.id, geobox,
                          tuple(grid.window(idx) for idx in grid.tiles()), info.count,
                          info.dtype, default_nodata(info.dtype, info.nodata),
                          descriptions=names, datetime_iso=processing_time().isoformat(),
                          meta=meta)

    def make(laid: LaidTask) -> tuple[Callable[..., object], int]:
        if laid.kind == "plan":
            return (OrthoPlanTask(scene.uri, dem_source, box, geobox, step.resampling,
                                  scene.rpc, scene.rpc_origin), int(dem.heights_m.nbytes))
        if laid.kind == "tile":
            return (OrthoTileTask(scene.uri, grid.window(TileIndex(laid.key.row, laid.key.col))),
                    tile_bytes)
        return writer, SMALL_RESULT_BYTES

    tasks = _lay_out(ortho_tasks(scene.id, *grid.shape), make, scene.id, key, placement)
    return ProductPlan(key, object_key, scene.id, tasks, SurveyedProduct("ortho", scene.id, grid))


def _lay_out(layout: Iterable[LaidTask], make: Callable[[LaidTask], tuple[Callable[..., object], int]],
             label: str, key: str, placement: Placement | None) -> tuple[Task, ...]:
    """The runtime tasks of a product's layout: ``make`` gives each its function and bytes."""
    tasks = []
    for laid in layout:
        fn, out_bytes = make(laid)
        stage = stage_of(laid.key.op)
        tasks.append(Task(str(laid.key), fn, tuple(str(k) for k in laid.inputs), out_bytes,
                          label, key if laid.kind == "write" else None,
                          tuple((placement or {}).get(stage, ())), laid.kind, stage))
    return tuple(tasks)


def footprint_box(rpc: RpcModel, shape: tuple[int, int]) -> tuple[float, float, float, float]:
    """Lon/lat box of the image at the RPC's lowest and highest heights (GeometryError if none)."""
    h, w = shape
    rows = np.array([-0.5, -0.5, h - 0.5, h - 0.5, h / 2])
    cols = np.array([-0.5, w - 0.5, -0.5, w - 0.5, w / 2])
    lons, lats = [], []
    for height in (rpc.height_off - rpc.height_scale, rpc.height_off + rpc.height_scale):
        lon, lat = rpc.localize(rows, cols, np.full(rows.shape, height), check=False)
        lons.append(lon)
        lats.append(lat)
    lon_all, lat_all = np.concatenate(lons), np.concatenate(lats)
    ok = np.isfinite(lon_all) & np.isfinite(lat_all)
    if not ok.any():
        raise GeometryError(f"{rpc.source}: cannot localise the image corners with its RPC; "
                            "expected an RPC that maps the image's corners to the ground")
    return lonlat_bounds(lon_all[ok], lat_all[ok], pad_deg=0.0)


def _location(path: str) -> str:
    """A local path made absolute (how provenance names inputs); other URIs as given."""
    if "://" in path or path.startswith(("/vsi", "<")):
        return path
    return str(Path(path).resolve())


def _itemsize(dtype: str) -> int:
    return int(np.dtype(dtype).itemsize)


def _inputs(*paths: str | None) -> list[str]:
    return [str(Path(p).resolve()) if "://" not in p and not p.startswith("/vsi") else p
            for p in paths if p]


def _terrain_bytes(terrain: Terrain) -> int:
    """Bytes of a DSM's initial heights as its plan task hands them to the tiles: the
    grid of a DEM or of the images' coarse surface; a flat surface is a few numbers."""
    from ops.stereo.initial_terrain import SurfaceTerrain
    from ops.terrain.dem import Dem

    grid = terrain.dem if isinstance(terrain, SurfaceTerrain) else terrain
    return int(grid.heights_m.nbytes) if isinstance(grid, Dem) else SMALL_RESULT_BYTES


def _initial_heights(terrain: Terrain) -> str:
    """What a DSM's initial heights were, as its provenance states it: the DEM (its path is
    the provenance's ``dem``), or the surface the images gave and why (the flat surface:
    its height and search range, in metres above the ellipsoid)."""
    from ops.stereo.initial_terrain import ConstantTerrain, SurfaceTerrain

    if isinstance(terrain, SurfaceTerrain):
        return f"from the images, {terrain.source}"
    if isinstance(terrain, ConstantTerrain):
        return (f"from the images, flat at {terrain.height_m:.1f} m, search {terrain.low_m:.1f}"
                f" to {terrain.high_m:.1f} m: {terrain.source}")
    return "DEM"


def plan_dsm_product(
    left: SceneInput, right: SceneInput, step: DsmStep, store: LocalStore | S3Store | None,
    placement: Placement | None = None,
) -> ProductPlan:
    """Survey one stereo pair and build its DSM tasks: plan -> stereo -> dsm -> write."""
    return plan_views_dsm_product((left, right), step, store, placement)


def plan_views_dsm_product(
    views: Sequence[SceneInput], step: DsmStep, store: LocalStore | S3Store | None,
    placement: Placement | None = None, view_pairs: Sequence[tuple[int, int]] | None = None,
) -> ProductPlan:
    """Survey two or more views and build their DSM tasks (:func:`planner.stages.dsm_tasks`).

    Two views without ``view_pairs``: the pair's DSM. Otherwise the pairs
    ``view_pairs`` (indices into ``views``; default: every usable pair) fused
    per cell (:mod:`ops.stereo.multiview`). The initial heights come from a coarse pass
    of the first two views on the DEM (without one, on a flat surface) where the terrain
    tilts, else from that prior (:mod:`ops.stereo.initial_terrain`). ``store=None``:
    a one-product run into a file (``eochain dsm``).
    """
    from ops.stereo.initial_terrain import estimate_terrain
    from ops.stereo.multiview import plan_multiview
    from ops.stereo.pair import (
        StereoConfig,
        declare_stereo_inputs,
        input_windows,
        open_view,
        plan_stereo,
    )
    from ops.terrain.dem import Dem
    from ops.terrain.geoid import Geoid

    if len(views) < 2:
        raise FlowError(f"a DSM needs two or more views, got {len(views)}")
    product_id = "+".join(v.id for v in views)
    dem_path = views[0].dem or step.dem
    opened = [open_view(v.uri) for v in views]
    geoid = Geoid.open(step.geoid) if step.geoid is not None else None
    config = StereoConfig(max_days_apart=step.max_days_apart)
    given: Dem | None = None
    if dem_path is not None:
        boxes = [footprint_box(v.rpc, v.shape) for v in opened]
        box = (min(b[0] for b in boxes), min(b[1] for b in boxes),
               max(b[2] for b in boxes), max(b[3] for b in boxes))
        given = Dem.open(dem_path, geoid=geoid, bounds_lonlat=box, pad_deg=DSM_DEM_PAD_DEG,
                         require_bounds=False, vertical_datum=step.dem_heights,
                         max_hole_fraction=step.dem_max_holes)
    dem: Terrain = estimate_terrain(opened[0], opened[1], config, given)
    plan: StereoPlan | MultiViewPlan
    pair_names: tuple[str, ...] = ()
    if len(opened) == 2 and view_pairs is None:
        plan = plan_stereo(opened[0], opened[1], dem, crs=step.crs, gsd_m=step.gsd_m,
                           config=config)
    else:
        plan = plan_multiview(opened, dem, crs=step.crs, gsd_m=step.gsd_m, config=config,
                              pairs=view_pairs)
        pair_names = tuple(f"{views[i].id}+{views[j].id}" for i, j in plan.pairs)
    geobox = plan.geobox
    params = {"crs": step.crs, "gsd_m": step.gsd_m, "tile_px": step.tile_px,
              "max_days_apart": step.max_days_apart,
              "pairs": None if view_pairs is None else ",".join(f"{i}-{j}" for i, j in view_pairs),
              "dem_heights": step.dem_heights, "dem_max_holes": step.dem_max_holes,
              "geobox": [geobox.crs, *geobox.transform, geobox.height, geobox.width]}
    key = product_key("dsm", {**params, "heights": step.heights},
                      _inputs(*(v.uri for v in views), dem_path, step.geoid),
                      [rpc_identity(v.rpc) for v in opened])
    object_key = f"dsm/{product_id}.tif"
    grid = TileGrid(geobox, step.tile_px, step.tile_px)
    out_geoid = geoid if step.heights == "geoid" else None
    dem_bytes = _terrain_bytes(dem)
    meta = dsm_metadata(horizontal_crs=geobox.crs, heights=step.heights,
                        band_descriptions=DSM_BANDS, images=[_location(v.uri) for v in views],
                        rpc_sources=[_location(v.rpc.source) for v in opened],
                        dem=None if dem_path is None else _location(dem_path),
                        initial_heights=_initial_heights(dem),
                        geoid=None if step.geoid is None else _location(step.geoid),
                        parameters=params,
                        acquired=span([read_acquisition(v.uri) for v in views]))
    writer = WriteCogTask(store, object_key, key, "dsm", product_id, geobox,
                          tuple(grid.window(idx) for idx in grid.tiles()), 3, "float32",
                          DSM_NODATA, descriptions=DSM_BANDS,
                          datetime_iso=processing_time().isoformat(), meta=meta)
    tile_cells = step.tile_px * step.tile_px
    pair_of = {f"{product_id}/{name}": k for k, name in enumerate(pair_names)}
    planned = StereoPlanTask(plan, dem, out_geoid)
    windows: dict[TaskKey, tuple[InputWindow, ...]] = {}

    def make(laid: LaidTask) -> tuple[Callable[..., object], int]:
        k = laid.key
        if laid.kind == "plan":
            return planned, dem_bytes
        if laid.kind == "write":
            return writer, SMALL_RESULT_BYTES
        tile = grid.tile_geobox(TileIndex(k.row, k.col))
        pair = pair_of.get(k.item)
        if k.op == "stereo":
            # declared here, so that the plan knows what each stereo tile reads
            pair_plan = planned.pair_plan(pair)
            inputs = declare_stereo_inputs(pair_plan, tile, dem)
            windows[k] = input_windows(pair_plan, inputs)
            return StereoTileTask(inputs, pair), POINT_BYTES_PER_CELL * tile_cells
        if k.op == "dsm":
            return DsmTileTask(tile, pair), 3 * 4 * tile_cells
        return FusionTileTask(tile), 3 * 4 * tile_cells

    tasks = _lay_out(dsm_tasks(product_id, *grid.shape, pair_names), make, product_id, key,
                     placement)
    return ProductPlan(key, object_key, product_id, tasks,
                       SurveyedProduct("dsm", product_id, grid, pair_names, windows))
