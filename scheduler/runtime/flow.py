"""The lazy Flow API: describe a campaign, then run it depth-first on Ray.

::

    report = (
        Driver()                                   # local Ray, or Driver(address=...)
        .get_flow(["a.tif", "b.tif"])              # scenes (paths, or planner Scenes)
        .ortho(dem="dem.tif", gsd_m=0.5)           # nothing runs yet
        .write("s3://bucket/campaign")             # ... nor here
        .run()                                     # plan, dispatch, publish, report
    )

Each method returns a new immutable :class:`Flow`. ``run()``:

1. surveys every scene on the driver (its raster, RPC and DEM footprint ->
   the output geobox and tile grid); a scene that cannot be read (corrupt
   file, no RPC) becomes a :class:`~scheduler.runtime.state.Failure` naming
   the scene and the reason, and the others go on;
2. gives each product its key (hash of inputs and parameters) and drops the
   products the manifest already lists (resume, idempotence);
3. builds the task DAG (per scene: plan -> tiles -> write) with the
   planner's depth-first priorities and hands it to the dispatcher;
4. records each product in the manifest as its write task returns, and
   sweeps temporary files/objects when done.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from scheduler.runtime.dispatch import Dispatcher, DispatchOptions, Progress, RunReport, run_serial
from scheduler.runtime.errors import FlowError
from scheduler.runtime.manifest import Manifest, ProductRecord, product_key
from scheduler.runtime.state import Failure, Task, TaskGraph
from scheduler.runtime.store import LocalStore, S3Store, open_store

PRODUCT_OPS = ("ortho",)


@dataclass(frozen=True, slots=True)
class SceneInput:
    """A raw scene: its id (product names, failure reports), image path, and its own DEM if any."""

    id: str
    uri: str
    dem: str | None = None


@dataclass(frozen=True, slots=True)
class OrthoStep:
    dem: str | None
    gsd_m: float | None = None
    crs: str | None = None
    geoid: str | None = None
    resampling: str = "bicubic"
    tile_px: int = 512


@dataclass(frozen=True, slots=True)
class ProductPlan:
    """A product's tasks and identity."""

    key: str
    object_key: str
    label: str
    tasks: tuple[Task, ...]

    @property
    def sink(self) -> str:
        return self.tasks[-1].key


@dataclass(frozen=True, slots=True)
class FlowReport:
    """What a flow run did (counts are products unless said otherwise)."""

    written: tuple[ProductRecord, ...]
    skipped: tuple[str, ...]
    failures: tuple[Failure, ...]
    products_total: int
    dispatch: RunReport | None
    wall_s: float
    swept_temps: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.failures


def _scenes(scenes: Sequence[object]) -> tuple[SceneInput, ...]:
    out: list[SceneInput] = []
    for s in scenes:
        if isinstance(s, SceneInput):
            scene = s
        elif isinstance(s, (str, Path)):
            scene = SceneInput(Path(s).stem, str(s))
        elif hasattr(s, "id") and hasattr(s, "uri"):
            scene = SceneInput(str(s.id), str(s.uri))
        else:
            raise FlowError(f"scene {s!r}: expected a path, a SceneInput or a Scene with id, uri")
        if scene.uri.startswith("s3://"):
            # GDAL reads S3 objects by ranges through /vsis3/ (only the blocks a window needs)
            scene = replace(scene, uri="/vsis3/" + scene.uri[len("s3://"):])
        out.append(scene)
    ids = [s.id for s in out]
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        raise FlowError(f"scene ids {dupes} appear more than once; product names need unique ids")
    if not out:
        raise FlowError("get_flow() got no scenes; expected at least one image")
    return tuple(out)


@dataclass(frozen=True, slots=True)
class Flow:
    """An immutable description of a campaign; see the module docstring."""

    driver: Driver
    scenes: tuple[SceneInput, ...]
    ortho_step: OrthoStep | None = None
    dest: str | None = None
    resources: tuple[str, ...] = ()

    def ortho(
        self, *, dem: str | Path | None = None, gsd_m: float | None = None, crs: str | None = None,
        geoid: str | Path | None = None, resampling: str = "bicubic", tile_px: int = 512,
    ) -> Flow:
        """Orthorectify every scene (RPC + DEM) on its UTM grid at ``gsd_m``.

        ``dem`` serves every scene that does not name its own (``SceneInput.dem``).
        """
        if tile_px < 16:
            raise FlowError(f"ortho(tile_px={tile_px}): expected at least 16 pixels")
        step = OrthoStep(None if dem is None else str(dem), gsd_m, crs, None if geoid is None else str(geoid),
                         resampling, tile_px)
        return replace(self, ortho_step=step)

    def on(self, *resources: str) -> Flow:
        """Prefer nodes with one of these Ray resources (``"c7g.large:spot"``, from the plan)."""
        return replace(self, resources=tuple(resources))

    def write(self, dest: str | Path) -> Flow:
        """Publish products under ``dest`` (a folder or ``s3://bucket/prefix``)."""
        return replace(self, dest=str(dest))

    # -- planning ---------------------------------------------------------------------------
    def plan(self) -> tuple[list[ProductPlan], list[Failure]]:
        """Survey the scenes and build each product's tasks (runs on the driver)."""
        if self.ortho_step is None:
            raise FlowError("the flow has no operation; call .ortho(...) before .run()")
        if self.dest is None:
            raise FlowError("the flow has no destination; call .write(dest) before .run()")
        store = open_store(self.dest)
        products: list[ProductPlan] = []
        failures: list[Failure] = []
        for scene in self.scenes:
            try:
                products.append(plan_ortho_product(scene, self.ortho_step, store,
                                                   self.resources))
            except Exception as exc:  # noqa: BLE001 - one bad scene must not stop the others
                failures.append(Failure(f"{scene.id}/survey", scene.id,
                                        f"{scene.uri}: {type(exc).__name__}: {exc}"))
        return products, failures

    def run(self, progress: Callable[[Progress], None] | None = None) -> FlowReport:
        """Run the campaign; products already in the manifest are not recomputed."""
        start = time.perf_counter()
        products, failures = self.plan()
        n_survey_failures = len(failures)
        store = open_store(str(self.dest))
        manifest = Manifest(store)
        done = manifest.done_keys()
        todo = [p for p in products if p.key not in done]
        skipped = tuple(sorted(p.object_key for p in products if p.key in done))
        written: list[ProductRecord] = []

        def on_result(key: str, value: object) -> None:
            if isinstance(value, ProductRecord):
                manifest.record(value)
                written.append(value)

        report: RunReport | None = None
        if todo:
            tasks = [t for p in todo for t in p.tasks]
            graph = TaskGraph.build(tasks)
            report = self.driver.dispatch(graph, progress, on_result)
            failures.extend(report.failures)
        swept: tuple[str, ...] = tuple(store.sweep_temps())
        return FlowReport(tuple(sorted(written, key=lambda r: r.object_key)), skipped,
                          tuple(failures), len(products) + n_survey_failures, report,
                          time.perf_counter() - start, swept)


def plan_ortho_product(
    scene: SceneInput, step: OrthoStep, store: LocalStore | S3Store,
    resources: tuple[str, ...] = (),
) -> ProductPlan:
    """Survey one scene and build its ortho tasks: plan -> tiles -> write."""
    from ops.ortho import HeightModel, default_geobox, default_nodata
    from ops.raster_io import raster_info
    from ops.rpc_io import find_rpc
    from planner.grid import TileGrid
    from scheduler.cmd_ortho import footprint_box
    from scheduler.runtime.kernels import OrthoPlanTask, OrthoTileTask, WriteCogTask, open_dem

    dem_path = scene.dem or step.dem
    if dem_path is None:
        raise FlowError(f"scene {scene.id} has no DEM: pass ortho(dem=...) or SceneInput.dem")
    info = raster_info(scene.uri)
    rpc = find_rpc(scene.uri)
    box = footprint_box(rpc, info.shape)
    dem = open_dem(dem_path, step.geoid, box)
    geobox = default_geobox(rpc, info.shape, HeightModel.from_dem(dem), crs=step.crs,
                            gsd_m=step.gsd_m)
    params = {"gsd_m": step.gsd_m, "crs": step.crs, "resampling": step.resampling,
              "tile_px": step.tile_px, "geobox": [geobox.crs, *geobox.transform,
                                                  geobox.height, geobox.width]}
    inputs = [str(Path(scene.uri).resolve()), dem_path] + ([step.geoid] if step.geoid else [])
    key = product_key("ortho", params, inputs)
    object_key = f"ortho/{scene.id}.tif"
    grid = TileGrid(geobox, step.tile_px, step.tile_px)
    tile_bytes = step.tile_px * step.tile_px * info.count * _itemsize(info.dtype)
    plan_key = f"{scene.id}/ortho/plan"
    tasks: list[Task] = [Task(plan_key, OrthoPlanTask(scene.uri, dem_path, step.geoid, box,
                                                     geobox, step.resampling),
                              out_bytes=dem.heights_m.nbytes, label=scene.id)]
    windows = []
    for idx in grid.tiles():
        window = grid.window(idx)
        windows.append(window)
        tasks.append(Task(f"{scene.id}/ortho/{idx.row:04d}_{idx.col:04d}",
                          OrthoTileTask(scene.uri, window), (plan_key,), tile_bytes, scene.id))
    tile_keys = tuple(t.key for t in tasks[1:])
    writer = WriteCogTask(store, object_key, key, "ortho", scene.id, geobox, tuple(windows),
                          info.count, info.dtype, default_nodata(info.dtype, info.nodata))
    tasks.append(Task(f"{scene.id}/ortho/write", writer, tile_keys, 1024, scene.id, key))
    if resources:
        tasks = [replace(t, resources=resources) for t in tasks]
    return ProductPlan(key, object_key, scene.id, tuple(tasks))


def _itemsize(dtype: str) -> int:
    import numpy as np

    return int(np.dtype(dtype).itemsize)


@dataclass
class Driver:
    """Where flows run: the Ray cluster at ``address``, a new local one, or in-process.

    ``address=None`` starts (or reuses) a local Ray instance with ``num_cpus``;
    ``address="serial"`` runs in this process without Ray (tests, tiny jobs).
    """

    address: str | None = None
    num_cpus: int | None = None
    options: DispatchOptions = field(default_factory=DispatchOptions)
    object_store_bytes: int = 256 * 1024 * 1024

    def get_flow(self, scenes: Sequence[object]) -> Flow:
        return Flow(self, _scenes(scenes))

    def dispatch(
        self, graph: TaskGraph, progress: Callable[[Progress], None] | None,
        on_result: Callable[[str, object], None],
    ) -> RunReport:
        if self.address == "serial":
            report = run_serial(graph, self.options, progress)
            for key, value in report.results.items():
                on_result(key, value)
            return report
        self._connect()
        return Dispatcher(self.options).run(graph, progress, on_result)

    def _connect(self) -> None:
        from scheduler.runtime.cluster import use_loopback

        use_loopback()
        import ray

        if ray.is_initialized():
            return
        if self.address is None:
            ray.init(num_cpus=self.num_cpus, include_dashboard=False, log_to_driver=False,
                     object_store_memory=self.object_store_bytes)
        else:
            env = worker_env()
            ray.init(address=self.address, log_to_driver=False,
                     runtime_env={"env_vars": env} if env else None)


#: Settings (never credentials) the driver hands to workers of a remote cluster: where S3 is
#: and how GDAL reaches it. Credentials come from each node's own chain (instance profile).
WORKER_ENV_PREFIXES = ("GDAL_", "CPL_", "VSI_")
WORKER_ENV_KEYS = ("AWS_S3_ENDPOINT", "AWS_HTTPS", "AWS_VIRTUAL_HOSTING", "AWS_ENDPOINT_URL",
                   "AWS_ENDPOINT_URL_S3", "AWS_DEFAULT_REGION", "AWS_REGION")


def worker_env() -> dict[str, str]:
    """The non-secret S3/GDAL settings of this process, for the workers' environment."""
    import os

    return {k: v for k, v in os.environ.items()
            if k in WORKER_ENV_KEYS or k.startswith(WORKER_ENV_PREFIXES)}
