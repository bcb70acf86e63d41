"""Task functions of the flow: picklable callables ``fn(ctx, *inputs)`` around plain ops calls.

Their class names start with their stage (:mod:`planner.stages`):
:func:`scheduler.observe.metrics.op_name` of ``StereoTileTask`` is ``stereo_tile``,
of a ``WriteCogTask`` of a DSM ``dsm_write``.

Each is a frozen dataclass holding only small, picklable parameters (paths,
windows, a store value); the heavy, scene-wide state travels as task
*inputs* (ObjectRefs shared by every tile of a scene) or lives in the
worker's cache (the ortho plan per scene, keyed by its product key).

* :class:`OrthoPlanTask` -> :class:`ops.ortho.orthorectify.OrthoPlan` for a scene (RPC,
  DEM read around the footprint, grid step and height levels);
* :class:`OrthoTileTask` (plan) -> the (bands, rows, cols) tile: it declares
  its input window (:func:`ops.ortho.orthorectify.declare_tile_input`), reads exactly
  that window, resamples;
* :class:`StereoPlanTask` -> itself: the stereo plan of a pair or the fused
  plan of several views, the DEM and the output geoid;
  :class:`StereoTileTask` (that) -> one pair's :class:`~ops.stereo.pair.TilePoints`
  of a tile (read, rectify, match, triangulate); :class:`DsmTileTask` (plan,
  points) -> the (3, rows, cols) DSM tile (height, supporting points,
  confidence), or a pair's :class:`~ops.stereo.pair.DsmTile` for a fused product;
  :class:`FusionTileTask` (plan, the pairs' DSM tiles) -> the fused
  (3, rows, cols) tile;
* :class:`WriteCogTask` (tiles...) -> :class:`ProductRecord`: the tiles into a
  scratch COG in the worker's scratch folder, then atomic store publications
  of the COG, its STAC item and its manifest record, in that order; or, in a
  one-product run (``eochain ortho``/``dsm``), :meth:`WriteCogTask.write_file`
  into the command's output.
"""

from __future__ import annotations

import datetime as dt
import time
import uuid
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, cast

import numpy as np
import rasterio
import rasterio.io
from numpy.typing import NDArray
from rasterio.errors import NotGeoreferencedWarning, RasterioError
from rasterio.windows import Window as RioWindow

from ops.ortho.orthorectify import (
    HeightModel,
    OrthoPlan,
    declare_tile_input,
    ortho_tile,
    plan_ortho,
)
from ops.raster.raster_io import CogWriter, raster_info, read_window
from ops.sensor.rpc_io import find_rpc
from ops.terrain.dem import MAX_HOLE_FRACTION, Dem
from planner.geometry.grid import GeoBox, Window
from scheduler.products.manifest import Manifest, ProductRecord
from scheduler.products.provenance import ProductMetadata
from scheduler.products.stac import item_bytes, item_links, make_item, stac_key
from scheduler.products.store import STALE_TEMP_S, LocalStore, S3Store, sha256_file
from scheduler.runtime.actors import ArrayParts, TaskContext
from scheduler.runtime.errors import FlowError

if TYPE_CHECKING:
    # The stereo kernels (and scipy.ndimage under them) load when a DSM task first runs:
    # `eochain ortho` and ortho workers never pay for them.
    from ops.stereo.multiview import MultiViewPlan
    from ops.stereo.pair import (
        DsmTile,
        StereoPlan,
        StereoTileInputs,
        Terrain,
        TilePoints,
        Undulation,
    )

#: Degrees read around an ortho footprint where the DEM has them (~200 m); only the
#: footprint itself must be covered.
ORTHO_DEM_PAD_DEG = 0.002


@dataclass(frozen=True, slots=True)
class DemSource:
    """Where a product's DEM comes from and how to read it (the one DEM reader of ortho)."""

    path: str
    geoid: str | None = None
    #: the DEM's vertical reference over what its files say (:mod:`ops.terrain.vertical`)
    vertical_datum: str | None = None
    max_hole_fraction: float = MAX_HOLE_FRACTION

    def open(self, box: tuple[float, float, float, float]) -> Dem:
        """The DEM around a scene's footprint box, as far as the DEM reaches.

        The box comes from the RPC's whole height range, far wider than the
        terrain's; a DEM cut to the scene (synthetic scenes, user crops) does not
        cover it, and the ortho plan checks coverage at the terrain's real heights.
        """
        return Dem.open(self.path, geoid=self.geoid, bounds_lonlat=box,
                        pad_deg=ORTHO_DEM_PAD_DEG, require_bounds=False,
                        vertical_datum=self.vertical_datum,
                        max_hole_fraction=self.max_hole_fraction)


@dataclass(frozen=True, slots=True)
class OrthoPlanTask:
    """Plan the ortho of one scene on the output grid ``geobox``."""

    image: str
    dem: DemSource
    dem_box: tuple[float, float, float, float]
    geobox: GeoBox
    resampling: str = "bicubic"
    #: which RPC and crop origin (:func:`ops.sensor.rpc_io.find_rpc`'s ``rpc_source``, ``origin``)
    rpc_source: str | None = None
    rpc_origin: tuple[float, float] | None = None

    def __call__(self, ctx: TaskContext) -> OrthoPlan:
        info = raster_info(self.image)
        rpc = find_rpc(self.image, rpc_source=self.rpc_source, origin=self.rpc_origin)
        dem = self.dem.open(self.dem_box)
        heights = HeightModel.from_dem(dem)
        return plan_ortho(rpc, heights, self.geobox, info.shape, band_count=info.count,
                          dtype=info.dtype, src_nodata=info.nodata, resampling=self.resampling)


@dataclass(frozen=True, slots=True)
class OrthoTileTask:
    """One output tile of a scene's ortho, reading only its declared input window."""

    image: str
    window: Window

    def __call__(self, ctx: TaskContext, plan: OrthoPlan) -> NDArray[np.generic]:
        src_window = declare_tile_input(plan, self.window)
        block = None if src_window is None else read_cached(ctx, self.image, src_window)
        return ortho_tile(plan, self.window, block, src_window)


#: Open datasets a worker keeps (its cache), oldest closed first.
MAX_OPEN_DATASETS = 16


def read_cached(ctx: TaskContext, path: str, window: Window) -> NDArray[np.generic]:
    """Every band of ``window`` of ``path``, through a dataset the worker keeps open.

    The next tile of the same image skips the open (for ``/vsis3/`` a HEAD and
    a header GET); errors are those of :func:`ops.raster.raster_io.read_window`,
    which a failed read falls back to so the message names file and window.
    """
    key = f"dataset:{path}"
    src = cast("rasterio.io.DatasetReader | None", ctx.cache.get(key))
    if src is None:
        try:
            with warnings.catch_warnings():
                # a raw sensor image has no geotransform: that is normal, not worth a warning
                warnings.simplefilter("ignore", NotGeoreferencedWarning)
                src = rasterio.open(path)
        except RasterioError:
            return read_window(path, window)
        datasets = [k for k in ctx.cache if k.startswith("dataset:")]
        for old in datasets[: max(0, len(datasets) - MAX_OPEN_DATASETS + 1)]:
            ctx.cache.pop(old).close()  # type: ignore[attr-defined]
        ctx.cache[key] = src
    if window.clip(src.height, src.width) != window:
        return read_window(path, window)  # raises, naming the file and the window
    try:
        data: NDArray[np.generic] = src.read(
            window=RioWindow(window.col_off, window.row_off, window.width, window.height)
        )
    except RasterioError:
        ctx.cache.pop(key, None)
        src.close()
        return read_window(path, window)
    return data


#: DSM product bands and nodata (``eochain dsm`` and campaigns).
DSM_NODATA = -32768.0
DSM_BANDS: tuple[str | None, ...] = (
    "height (m)", "supporting points (0 = interpolated)", "matching confidence (NCC)")
#: Key of a worker's cache holding why DSM tiles came out empty (a set of reasons), for
#: the message of a one-product run whose DSM is empty.
EMPTY_TILE_REASONS = "dsm:empty-tile-reasons"


@dataclass(frozen=True, slots=True, eq=False)
class StereoPlanTask:
    """Hand a DSM's plan (computed while surveying), its DEM and output geoid to the tiles.

    The plan is a pair's :class:`~ops.stereo.pair.StereoPlan` or several pairs'
    :class:`~ops.stereo.multiview.MultiViewPlan`; ``geoid``: heights above it
    instead of the ellipsoid.
    """

    plan: StereoPlan | MultiViewPlan
    dem: Terrain
    geoid: Undulation | None = None

    def __call__(self, ctx: TaskContext) -> StereoPlanTask:
        return self

    def pair_plan(self, pair: int | None) -> StereoPlan:
        """The stereo plan of pair ``pair`` of a fused product, or of the product's one pair."""
        from ops.stereo.multiview import MultiViewPlan

        plan = self.plan
        if isinstance(plan, MultiViewPlan):
            if pair is None or not 0 <= pair < len(plan.plans):
                raise FlowError(f"pair {pair!r} of a DSM fused over {len(plan.plans)} pairs; "
                                f"expected an index in 0..{len(plan.plans) - 1}")
            return plan.plans[pair]
        if pair is not None:
            raise FlowError(f"pair {pair} of a one-pair DSM; expected no pair index")
        return plan


@dataclass(frozen=True, slots=True)
class StereoTileTask:
    """One pair's stereo step of a DSM tile: read the views' declared windows, match,
    triangulate (``pair``: its index in a fused product, None for a one-pair DSM)."""

    inputs: StereoTileInputs
    pair: int | None = None

    def __call__(self, ctx: TaskContext, planned: StereoPlanTask) -> TilePoints:
        from ops.stereo.pair import run_stereo_tile

        return run_stereo_tile(planned.pair_plan(self.pair), self.inputs.tile, planned.dem,
                               planned.geoid, self.inputs)


@dataclass(frozen=True, slots=True)
class DsmTileTask:
    """One pair's DSM tile from its stereo tile's points: rasterise, filter, fill.

    A one-pair DSM's tile is the product's (3, rows, cols) tile; a pair of a
    fused product (``pair`` set) hands its :class:`~ops.stereo.pair.DsmTile` to fusion.
    """

    tile: GeoBox
    pair: int | None = None

    def __call__(self, ctx: TaskContext, planned: StereoPlanTask, points: TilePoints
                 ) -> NDArray[np.float32] | DsmTile:
        from ops.stereo.pair import grid_tile_points

        t = grid_tile_points(planned.pair_plan(self.pair), self.tile, points, planned.dem)
        return t if self.pair is not None else dsm_bands(ctx, t)


@dataclass(frozen=True, slots=True)
class FusionTileTask:
    """One tile of a fused DSM: the pairs' DSM tiles fused per cell."""

    tile: GeoBox

    def __call__(self, ctx: TaskContext, planned: StereoPlanTask, *pair_tiles: DsmTile
                 ) -> NDArray[np.float32]:
        from ops.stereo.multiview import MultiViewPlan, fuse_pair_tiles

        if not isinstance(planned.plan, MultiViewPlan):
            raise FlowError("a fusion tile of a one-pair DSM; expected a fused product's plan")
        fused, _ = fuse_pair_tiles(planned.plan, pair_tiles)
        return dsm_bands(ctx, fused)


def dsm_bands(ctx: TaskContext, t: DsmTile) -> NDArray[np.float32]:
    """A DSM tile as the product's bands; why it is empty goes to the worker's cache."""
    if t.reason:
        reasons = cast("set[str]", ctx.cache.setdefault(EMPTY_TILE_REASONS, set()))
        reasons.add(t.reason)
    valid = np.isfinite(t.height_m)
    return np.stack([
        np.where(valid, t.height_m, DSM_NODATA),
        t.count.astype(np.float32),
        np.where(np.isfinite(t.confidence), t.confidence, DSM_NODATA),
    ]).astype(np.float32)


#: Scratch folders of workers on this host (see :class:`scheduler.runtime.actors.TileWorker`).
SCRATCH_GLOB = "eochain-worker-*/*.tif"


def sweep_stale_scratch(scratch_dir: Path, max_age_s: float = STALE_TEMP_S) -> list[Path]:
    """Remove scratch COGs older than ``max_age_s`` in this host's worker folders.

    A worker killed while assembling a COG (a lost node whose disk survives, an
    actor killed by Ray) leaves its scratch file behind; a live one is rewritten
    continuously and is never that old. Scratch names carry the run id.
    """
    cutoff = time.time() - max_age_s
    removed = []
    for path in scratch_dir.parent.glob(SCRATCH_GLOB):
        try:
            if path.stat().st_mtime < cutoff:
                path.unlink()
                removed.append(path)
        except OSError:
            continue  # gone meanwhile, or another user's
    return removed


@dataclass(frozen=True, slots=True)
class WriteCogTask:
    """Assemble the tiles of a product into a COG and publish it with its STAC item."""

    #: None: a one-product run that writes a file (:meth:`write_file`), not a store
    store: LocalStore | S3Store | None
    object_key: str
    product_key: str
    op: str
    label: str
    geobox: GeoBox
    windows: tuple[Window, ...]
    count: int
    dtype: str
    nodata: float | None
    descriptions: tuple[str | None, ...] | None = None
    datetime_iso: str = "1970-01-01T00:00:00+00:00"
    #: CRS with heights, band units, acquisition and provenance (file tags and STAC item)
    meta: ProductMetadata | None = None
    #: the tiles may come as :class:`ArrayParts`: written piece by piece, never joined
    takes_array_parts: ClassVar[bool] = True

    def __call__(self, ctx: TaskContext, *tiles: NDArray[np.generic] | ArrayParts
                 ) -> ProductRecord:
        if self.store is None:
            raise FlowError(f"{self.label}: this {self.op} product goes to a file, not a store; "
                            "expected it run by scheduler.products.one_product")
        sweep_stale_scratch(Path(ctx.scratch_dir))
        scratch = Path(ctx.scratch_dir) / f"{self.store.run_id}.{uuid.uuid4().hex[:12]}.tif"
        try:
            self.write_file(scratch, tiles, ctx.threads)
            digest = sha256_file(scratch)
            nbytes = scratch.stat().st_size
            self.store.move_file(self.object_key, scratch)
        finally:
            scratch.unlink(missing_ok=True)
        return self.publish_record(digest, nbytes)

    def write_file(self, path: Path, tiles: Iterable[NDArray[np.generic] | ArrayParts],
                   threads: int | None = None) -> None:
        """The product's COG at ``path`` (atomically), from its tiles in window order,
        its blocks encoded on ``threads`` threads (None: one per core of this process).

        An actor passes its CPUs (:attr:`TaskContext.threads`): the node's other actors
        hold the other cores, and a pool per core in each of them would run 16 encoders
        per write on a 16-core node. A write that runs while nothing else waits (the
        run's last) is lent the idle actors' CPUs too
        (:func:`~scheduler.runtime.dispatch.lent_threads`).

        ``tiles`` may be a generator: a one-product run streams them in as they are
        computed (:mod:`scheduler.products.one_product`). A tile in
        :class:`ArrayParts` (from another actor, through Ray's object store) is
        written band by band from its pieces, where they lie.
        """
        meta = self.meta
        with CogWriter(path, self.geobox, count=self.count, dtype=self.dtype,
                       nodata=self.nodata, descriptions=self.descriptions,
                       crs=None if meta is None else meta.file_crs,
                       units=None if meta is None else meta.band_units,
                       tags=None if meta is None else meta.tags(), workers=threads) as out:
            for window, tile in zip(self.windows, tiles, strict=True):
                if not isinstance(tile, ArrayParts):
                    out.write(window, tile)
                    continue
                for band, row, rows in tile.band_rows():
                    out.write(Window(window.row_off + row, window.col_off, rows.shape[1],
                                     window.width), rows, band=band)

    def publish_record(self, digest: str, nbytes: int) -> ProductRecord:
        """Publish the STAC item and the manifest record of the product just published.

        Both follow the COG within this task, so a reader sees the COG without them for
        the time of two small writes (a lost node in between: the next run rebuilds).
        """
        if self.store is None:
            raise FlowError(f"{self.label}: no store to publish {self.object_key} to")
        stat = self.store.stat(self.object_key)
        item_key = stac_key(self.object_key)
        self.store.put_bytes(item_key, self.item_bytes(digest))
        record = ProductRecord(self.product_key, self.object_key,
                               self.store.uri(self.object_key), self.op, self.label, digest,
                               nbytes, item_key, "" if stat is None else stat.version)
        Manifest(self.store).record(record)
        return record

    def item_bytes(self, digest: str) -> bytes:
        """The product's STAC item (also rewritten alone when a resumed run finds it lost)."""
        if self.store is None:
            raise FlowError(f"{self.label}: no store to describe {self.object_key} in")
        item = make_item(
            Path(self.object_key).stem, Path(self.object_key).name, self.geobox,
            dtype=self.dtype, nodata=self.nodata, band_names=[
                d or f"band{i + 1}" for i, d in enumerate(self.descriptions or (None,) * self.count)
            ],
            datetime=dt.datetime.fromisoformat(self.datetime_iso),
            properties={"eochain:product_key": self.product_key, "eochain:op": self.op,
                        "eochain:sha256": digest},
            meta=self.meta, links=item_links(self.store, self.object_key),
        )
        return item_bytes(item)
