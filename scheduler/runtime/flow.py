"""The lazy Flow API: describe a campaign, then run it depth-first on Ray.

::

    report = (
        Driver()                                   # local Ray, or Driver(address=...)
        .get_flow(["a.tif", "b.tif"])              # scenes (paths, or planner Scenes)
        .dsm([("a", "b")], dem="srtm/")            # a DSM per stereo pair (optional)
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
3. builds the task DAG (per scene or pair: plan -> tiles -> write, see
   :mod:`scheduler.runtime.products`) with the
   planner's depth-first priorities and hands it to the dispatcher;
4. records each product in the manifest as its write task returns, and
   sweeps temporary files/objects when done.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from scheduler.runtime.dispatch import Dispatcher, DispatchOptions, Progress, RunReport, run_serial
from scheduler.runtime.errors import FlowError
from scheduler.runtime.manifest import Manifest, ProductRecord
from scheduler.runtime.products import (
    DsmStep,
    OrthoStep,
    ProductPlan,
    SceneInput,
    plan_dsm_product,
    plan_ortho_product,
)
from scheduler.runtime.state import Failure, TaskGraph
from scheduler.runtime.store import open_store

if TYPE_CHECKING:
    from scheduler.metrics import CampaignMetrics

__all__ = ["Driver", "Flow", "FlowReport", "SceneInput", "StageQueue", "task_stage", "worker_env"]


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
    dsm_step: DsmStep | None = None
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

    def dsm(
        self, pairs: Sequence[tuple[str, str]], *, dem: str | Path | None = None,
        gsd_m: float | None = None, crs: str | None = None, geoid: str | Path | None = None,
        tile_px: int = 512,
    ) -> Flow:
        """A DSM per stereo pair, given as (left id, right id) of the flow's scenes."""
        ids = {s.id for s in self.scenes}
        unknown = sorted({i for pair in pairs for i in pair} - ids)
        if unknown:
            raise FlowError(f"dsm(pairs=...) names scenes {unknown} that the flow lacks; "
                            f"its scenes are {sorted(ids)}")
        if tile_px < 64:
            raise FlowError(f"dsm(tile_px={tile_px}): expected at least 64 pixels")
        step = DsmStep(tuple((a, b) for a, b in pairs), None if dem is None else str(dem),
                       gsd_m, crs, None if geoid is None else str(geoid), tile_px)
        return replace(self, dsm_step=step)

    def on(self, *resources: str) -> Flow:
        """Prefer nodes with one of these Ray resources (``"c7g.large:spot"``, from the plan)."""
        return replace(self, resources=tuple(resources))

    def write(self, dest: str | Path) -> Flow:
        """Publish products under ``dest`` (a folder or ``s3://bucket/prefix``)."""
        return replace(self, dest=str(dest))

    # -- planning ---------------------------------------------------------------------------
    def plan(self) -> tuple[list[ProductPlan], list[Failure]]:
        """Survey the scenes and build each product's tasks (runs on the driver)."""
        if self.ortho_step is None and self.dsm_step is None:
            raise FlowError("the flow has no operation; call .ortho(...) or .dsm(...) first")
        if self.dest is None:
            raise FlowError("the flow has no destination; call .write(dest) before .run()")
        store = open_store(self.dest)
        products: list[ProductPlan] = []
        failures: list[Failure] = []
        if self.dsm_step is not None:
            by_id = {s.id: s for s in self.scenes}
            for a, b in self.dsm_step.pairs:
                try:
                    products.append(plan_dsm_product(by_id[a], by_id[b], self.dsm_step, store,
                                                     self.resources))
                except Exception as exc:  # noqa: BLE001 - one bad pair must not stop the others
                    failures.append(Failure(f"{a}+{b}/survey", f"{a}+{b}",
                                            f"{by_id[a].uri}, {by_id[b].uri}: "
                                            f"{type(exc).__name__}: {exc}"))
        ortho = self.ortho_step
        for scene in self.scenes:
            if ortho is None:
                break
            try:
                products.append(plan_ortho_product(scene, ortho, store, self.resources))
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


def task_stage(key: str) -> str:
    """The plan stage of a task key (``"scene/ortho/0001_0002"`` -> ``"ortho"``)."""
    parts = key.split("/")
    return parts[1] if len(parts) > 1 else ""


class StageQueue:
    """Products left per stage (an operation: ``ortho``, ``dsm``), from a graph's sink tasks."""

    def __init__(self, sinks: Sequence[str]) -> None:
        self.total: dict[str, int] = {}
        for key in sinks:
            stage = task_stage(key)
            self.total[stage] = self.total.get(stage, 0) + 1
        self.left = dict(self.total)
        self._pending = set(sinks)

    @classmethod
    def of(cls, graph: TaskGraph) -> StageQueue:
        return cls(graph.sinks())

    def done(self, key: str) -> None:
        """Count the sink ``key`` as done (once; other keys are ignored)."""
        if key in self._pending:
            self._pending.discard(key)
            self.left[task_stage(key)] -= 1

    def remaining_fraction(self) -> dict[str, float]:
        return {s: self.left[s] / n for s, n in self.total.items()}


@dataclass
class Driver:
    """Where flows run: the Ray cluster at ``address``, a new local one, or in-process.

    ``address=None`` starts (or reuses) a local Ray instance with ``num_cpus``;
    ``address="serial"`` runs in this process without Ray (tests, tiny jobs).
    With ``metrics`` every task is reported to it (Ray: by the dispatcher;
    serial: by :func:`scheduler.metrics_hooks.instrument_graph`).
    With ``plan`` (a ``plan.json`` document, format ``eochain-plan/1``) a Ray
    dispatch asks the autoscaler for the plan's fleet while it runs, shrinks
    the request as stages finish (per stage: the fraction of its products not
    yet written, :class:`StageQueue`), withdraws it at the end, and replaces
    a spot pool that keeps being interrupted by the plan's fallback
    (:mod:`scheduler.runtime.fleet`). ``say`` is the run's output function
    for those messages (default: a logged warning); ``fleet_cpus_per_node``
    replaces each type's vCPUs in the request (the shrunk nodes of
    :func:`scheduler.cluster_config.render_fake_multinode_config`).
    """

    address: str | None = None
    num_cpus: int | None = None
    options: DispatchOptions = field(default_factory=DispatchOptions)
    object_store_bytes: int = 256 * 1024 * 1024
    metrics: CampaignMetrics | None = None
    plan: Mapping[str, Any] | None = None
    say: Callable[[str], None] | None = None
    fleet_cpus_per_node: float | None = None

    def get_flow(self, scenes: Sequence[object]) -> Flow:
        return Flow(self, _scenes(scenes))

    def dispatch(
        self, graph: TaskGraph, progress: Callable[[Progress], None] | None,
        on_result: Callable[[str, object], None],
    ) -> RunReport:
        if self.address == "serial":
            if self.metrics is not None:
                from scheduler.metrics_hooks import instrument_graph

                graph = instrument_graph(graph, self.metrics, lambda task: "local")
            report = run_serial(graph, self.options, progress)
            for key, value in report.results.items():
                on_result(key, value)
            return report
        from scheduler.runtime.fleet import FleetRequest, SpotLosses

        if self.plan is None:
            self.connect()
            return Dispatcher(self.options, self.metrics, SpotLosses(None, say=self.say)).run(
                graph, progress, on_result)
        fleet = FleetRequest(self.plan, cpus_per_node=self.fleet_cpus_per_node, say=self.say)
        queue = StageQueue.of(graph)
        self.connect()
        import ray

        def done(key: str, value: object) -> None:
            queue.done(key)
            on_result(key, value)

        def tick(p: Progress) -> None:
            if progress is not None:
                progress(p)
            fleet.update(queue.remaining_fraction())

        try:
            fleet.update(queue.remaining_fraction())
            spot = SpotLosses(self.plan, say=self.say, act=fleet.substitute)
            return Dispatcher(self.options, self.metrics, spot).run(graph, tick, done)
        finally:
            if ray.is_initialized():  # a failed run must not keep a fleet up either
                fleet.release()

    def connect(self) -> None:
        """Connect to Ray (start the local instance) now; a no-op when serial or connected."""
        if self.address == "serial":
            return
        from scheduler.runtime.cluster import use_loopback

        use_loopback()
        import ray

        if ray.is_initialized():
            return
        if self.address is None:
            # "local": a new instance of our own, never a cluster another process left running
            ray.init(address="local", num_cpus=self.num_cpus, include_dashboard=False,
                     log_to_driver=False,
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
