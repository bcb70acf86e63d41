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

0. checks that the destination is writable (a probe write), before any work;
1. surveys the scenes on the driver, in parallel threads (:func:`survey`:
   its raster, RPC and DEM footprint -> the output geobox and tile grid),
   each bounded by ``survey_timeout_s``; a scene that cannot be read
   (corrupt file, no RPC, an endpoint that never answers) becomes a
   :class:`~scheduler.runtime.state.Failure` naming the scene and the
   reason, and the others go on;
2. gives each product its key (:mod:`scheduler.products.manifest`) and skips
   the products the manifest records *and* that pass verification (size,
   checksum when changed); a lost or stale STAC item of a good product is
   rewritten on the driver; a missing or corrupt product is rebuilt;
3. takes a lease on each product left (:mod:`scheduler.products.lease`): a
   product leased by another live driver on the same output is not
   computed here; this run waits for that driver's manifest record, and
   takes the product over if its lease expires;
4. builds the task DAG of its leased products (per scene or pair: plan ->
   tiles -> write, laid out as the planner lays them out, see
   :mod:`scheduler.products.product`; each stage's tasks on the node types
   :meth:`Flow.place` gives it) with the
   planner's depth-first priorities and hands it to the dispatcher; each
   write task publishes COG, STAC item and manifest record in that order;
5. sweeps its own temporary files/objects when done, with those of runs
   known dead (an expired heartbeat, :func:`~scheduler.products.lease.dead_runs`)
   and others' older than :data:`~scheduler.products.store.STALE_TEMP_S`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from ops.terrain.dem import MAX_HOLE_FRACTION
from planner.stages import STAGES
from scheduler.products.kernels import WriteCogTask
from scheduler.products.lease import LeaseBook, dead_runs
from scheduler.products.manifest import MANIFEST_DIR, Manifest, ProductRecord, Verdict
from scheduler.products.product import (
    DsmStep,
    OrthoStep,
    ProductPlan,
    SceneInput,
    plan_dsm_product,
    plan_ortho_product,
    plan_views_dsm_product,
)
from scheduler.products.stac import CampaignCollection, stac_key
from scheduler.products.store import LocalStore, S3Store, open_store
from scheduler.products.survey import SurveyJob, set_network_timeouts, survey
from scheduler.runtime.dispatch import Progress, RunReport
from scheduler.runtime.errors import FlowError
from scheduler.runtime.state import Failure, TaskGraph

if TYPE_CHECKING:
    from scheduler.products.driver import Driver

__all__ = ["Flow", "FlowReport", "SceneInput", "flow_scenes"]


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
    #: products found recorded but missing or corrupt, with the reason, and rebuilt
    rebuilt: tuple[str, ...] = ()
    #: STAC items of good products rewritten (they were missing or stale)
    items_rewritten: tuple[str, ...] = ()
    #: products another driver on the same output computed while this one waited
    by_other_run: tuple[str, ...] = ()
    #: this run's id, in the names of its temporary files/objects
    run_id: str = ""

    @property
    def ok(self) -> bool:
        return not self.failures


def flow_scenes(scenes: Sequence[object]) -> tuple[SceneInput, ...]:
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
    #: Ray resources of the node types each stage runs on (:meth:`place`)
    placement: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def ortho(
        self, *, dem: str | Path | None = None, gsd_m: float | None = None, crs: str | None = None,
        geoid: str | Path | None = None, resampling: str = "bicubic", tile_px: int = 512,
        dem_heights: str | None = None, dem_max_holes: float = MAX_HOLE_FRACTION,
    ) -> Flow:
        """Orthorectify every scene (RPC + DEM) on its UTM grid at ``gsd_m``.

        ``dem`` serves every scene that does not name its own (``SceneInput.dem``);
        ``dem_heights``/``dem_max_holes``: as ``eochain ortho --dem-heights/--dem-max-holes``.
        """
        if tile_px < 16:
            raise FlowError(f"ortho(tile_px={tile_px}): expected at least 16 pixels")
        step = OrthoStep(None if dem is None else str(dem), gsd_m, crs, None if geoid is None else str(geoid),
                         resampling, tile_px, dem_heights, dem_max_holes)
        return replace(self, ortho_step=step)

    def dsm(
        self, pairs: Sequence[tuple[str, str]], *, dem: str | Path | None = None,
        gsd_m: float | None = None, crs: str | None = None, geoid: str | Path | None = None,
        tile_px: int = 512, heights: str = "ellipsoid", max_days_apart: float = 60.0,
        dem_heights: str | None = None, dem_max_holes: float = MAX_HOLE_FRACTION,
        views: Sequence[Sequence[str]] = (),
    ) -> Flow:
        """A DSM per stereo pair, given as (left id, right id) of the flow's scenes, and one
        per group of three or more ``views`` (scene ids), its pairs fused per cell.

        ``heights``, ``max_days_apart``, ``dem_heights``, ``dem_max_holes``: as the
        ``eochain dsm`` options of those names (``heights="geoid"`` needs ``geoid``).
        """
        ids = {s.id for s in self.scenes}
        unknown = sorted({i for group in (*pairs, *views) for i in group} - ids)
        if unknown:
            raise FlowError(f"dsm(pairs=..., views=...) names scenes {unknown} that the flow "
                            f"lacks; its scenes are {sorted(ids)}")
        small = [list(g) for g in views if len(set(g)) < 3 or len(set(g)) != len(g)]
        if small:
            raise FlowError(f"dsm(views={small}): expected groups of three or more distinct "
                            "scene ids (a pair goes in pairs)")
        if tile_px < 64:
            raise FlowError(f"dsm(tile_px={tile_px}): expected at least 64 pixels")
        step = DsmStep(tuple((a, b) for a, b in pairs), None if dem is None else str(dem),
                       gsd_m, crs, None if geoid is None else str(geoid), tile_px, heights,
                       max_days_apart, dem_heights, dem_max_holes,
                       tuple(tuple(g) for g in views))
        return replace(self, dsm_step=step)

    def place(self, resources_by_stage: Mapping[str, Sequence[str]]) -> Flow:
        """Run each stage's tasks on nodes with one of its Ray resources (``"c7g.large:spot"``).

        Stages are those of :data:`planner.stages.STAGES`; a product's plan and
        write tasks go with their stage (``stereo.plan`` with stereo, ``dsm.write``
        with dsm); a stage not named runs anywhere.
        """
        unknown = sorted(set(resources_by_stage) - set(STAGES))
        if unknown:
            raise FlowError(f"place(): stages {unknown} are not stages; expected some of "
                            f"{', '.join(STAGES)}")
        return replace(self, placement={stage: tuple(r) for stage, r in
                                        resources_by_stage.items() if r})

    def write(self, dest: str | Path) -> Flow:
        """Publish products under ``dest`` (a folder or ``s3://bucket/prefix``)."""
        return replace(self, dest=str(dest))

    def worker_imports(self) -> tuple[str, ...]:
        """The modules this flow's tasks load on a worker (task functions, their kernels): a
        warm worker imports them before its first task (:meth:`Driver.warm`)."""
        modules = ["scheduler.products.kernels"]  # the ortho kernels come with it
        if self.dsm_step is not None:
            modules += ["ops.stereo.pair", "ops.stereo.multiview"]
        return tuple(modules)

    # -- planning ---------------------------------------------------------------------------
    def plan(self, store: LocalStore | S3Store | None = None,
             ) -> tuple[list[ProductPlan], list[Failure]]:
        """Survey the scenes in parallel and build each product's tasks (on the driver)."""
        if self.dest is None:
            raise FlowError("the flow has no destination; call .write(dest) before .run()")
        return self._survey(store if store is not None else open_store(self.dest))

    def survey(self) -> tuple[list[ProductPlan], list[Failure]]:
        """The products' tasks as :meth:`run` would build them, writing nothing: what
        ``eochain plan`` costs (:func:`planner.estimate.surveyed_dag`)."""
        return self._survey(None)

    def _survey(self, store: LocalStore | S3Store | None
                ) -> tuple[list[ProductPlan], list[Failure]]:
        if self.ortho_step is None and self.dsm_step is None:
            raise FlowError("the flow has no operation; call .ortho(...) or .dsm(...) first")
        jobs: list[SurveyJob] = []
        if self.dsm_step is not None:
            by_id = {s.id: s for s in self.scenes}
            dsm = self.dsm_step
            for a, b in dsm.pairs:
                left, right = by_id[a], by_id[b]
                jobs.append(SurveyJob(
                    f"{a}+{b}", f"{left.uri}, {right.uri}",
                    lambda left=left, right=right: plan_dsm_product(  # type: ignore[misc]
                        left, right, dsm, store, self.placement)))
            for group in dsm.views:
                views = [by_id[i] for i in group]
                jobs.append(SurveyJob(
                    "+".join(group), ", ".join(v.uri for v in views),
                    lambda views=views: plan_views_dsm_product(  # type: ignore[misc]
                        views, dsm, store, self.placement)))
        ortho = self.ortho_step
        if ortho is not None:
            for scene in self.scenes:
                jobs.append(SurveyJob(
                    scene.id, scene.uri,
                    lambda scene=scene: plan_ortho_product(  # type: ignore[misc]
                        scene, ortho, store, self.placement)))
        return survey(jobs, self.driver.survey_threads, self.driver.survey_timeout_s)

    def run(self, progress: Callable[[Progress], None] | None = None) -> FlowReport:
        """Run the campaign; products already in the manifest (and verified) are not recomputed."""
        start = time.perf_counter()
        if self.dest is None:
            raise FlowError("the flow has no destination; call .write(dest) before .run()")
        set_network_timeouts()
        store = open_store(self.dest)
        store.check_writable()
        products, failures = self.plan(store)
        check_outputs_not_inputs(store, products, self.scenes)
        n_survey_failures = len(failures)
        manifest = Manifest(store)
        skipped: list[str] = []
        rebuilt: list[str] = []
        items: list[str] = []
        todo: list[ProductPlan] = []
        for p, verdict in zip(products, verify_all(manifest, [p.key for p in products]),
                              strict=True):
            if verdict.product_ok and verdict.record is not None:
                skipped.append(p.object_key)
                if not verdict.item_ok:
                    _rewrite_item(store, p, verdict.record)
                    items.append(f"{stac_key(p.object_key)}: {verdict.reason}")
            else:
                if verdict.record is not None:
                    rebuilt.append(f"{p.object_key}: {verdict.reason}")
                todo.append(p)
        written: list[ProductRecord] = []
        collection = CampaignCollection.load(store)  # the store's collection.json, up to date

        def on_result(key: str, value: object) -> None:
            if isinstance(value, ProductRecord):
                written.append(value)  # the write task published it with its record
                collection.add(value)

        report: RunReport | None = None
        by_other: list[str] = []
        with LeaseBook(store, store.run_id, self.driver.lease_ttl_s) as leases:
            pending = todo
            while pending:
                mine: list[ProductPlan] = []
                for p in pending:
                    if not leases.acquire(p.key):
                        continue
                    if manifest.verify(p.key).product_ok:  # published while we looked
                        leases.release(p.key)
                        by_other.append(p.object_key)
                    else:
                        mine.append(p)
                done_now = {p.key for p in mine} | set(_done(manifest, pending, mine, by_other))
                if mine:
                    graph = TaskGraph.build([t for p in mine for t in p.tasks])
                    one = self.driver.dispatch(graph, progress, on_result)
                    report = one if report is None else merge_reports(report, one)
                    failures.extend(one.failures)
                    for p in mine:
                        leases.release(p.key)
                pending = [p for p in pending if p.key not in done_now
                           and p.object_key not in by_other]
                if pending and not mine:
                    time.sleep(self.driver.lease_poll_s)  # others hold them: wait for records
        collection.publish()  # with the run's last products
        swept: tuple[str, ...] = tuple(store.sweep_temps(dead_runs=dead_runs(store)))
        return FlowReport(tuple(sorted(written, key=lambda r: r.object_key)),
                          tuple(sorted(skipped + by_other)), tuple(failures),
                          len(products) + n_survey_failures, report,
                          time.perf_counter() - start, swept, tuple(rebuilt), tuple(items),
                          tuple(sorted(by_other)), store.run_id)


def _done(manifest: Manifest, pending: Sequence[ProductPlan], mine: Sequence[ProductPlan],
          by_other: list[str]) -> list[str]:
    """Keys of pending products (not ours) that another driver has published meanwhile."""
    ours = {p.key for p in mine}
    keys = []
    for p in pending:
        if p.key not in ours and p.object_key not in by_other \
                and manifest.verify(p.key).product_ok:
            by_other.append(p.object_key)
            keys.append(p.key)
    return keys


def _location(uri: str) -> str:
    """One spelling of a location: ``s3://b/k`` for ``/vsis3/b/k``, a resolved local path."""
    if uri.startswith("/vsis3/"):
        return "s3://" + uri[len("/vsis3/"):]
    if "://" in uri or uri.startswith("/vsi"):
        return uri
    return str(Path(uri).resolve())


def check_outputs_not_inputs(store: LocalStore | S3Store, products: Sequence[ProductPlan],
                             scenes: Sequence[SceneInput]) -> None:
    """Refuse a destination where a product or its STAC item would overwrite an input
    (a scene's image or DEM), before anything is written."""
    inputs = {_location(u): u for s in scenes for u in (s.uri, s.dem) if u}
    for p in products:
        for key in (p.object_key, stac_key(p.object_key)):
            clash = inputs.get(_location(store.uri(key)))
            if clash is not None:
                raise FlowError(f"{store.uri(key)}: product {p.label} would overwrite the input "
                                f"{clash}; write to another destination")


#: Threads verifying recorded products at the start of a run (S3: a few requests each).
VERIFY_THREADS = 16


def verify_all(manifest: Manifest, keys: Sequence[str]) -> list[Verdict]:
    """:meth:`Manifest.verify` of each key, in parallel; keys without a record cost nothing
    beyond one listing of the manifest."""
    recorded = set(manifest.store.list_keys(MANIFEST_DIR + "/"))
    absent = Verdict(None, False, False, "not recorded")
    with ThreadPoolExecutor(VERIFY_THREADS, thread_name_prefix="eochain-verify") as pool:
        return list(pool.map(
            lambda k: manifest.verify(k) if Manifest.record_key(k) in recorded else absent, keys))


def _rewrite_item(store: LocalStore | S3Store, product: ProductPlan, record: ProductRecord) -> None:
    writer = product.tasks[-1].fn
    if not isinstance(writer, WriteCogTask):
        raise FlowError(f"{product.label}: its last task is not a COG writer")
    store.put_bytes(stac_key(product.object_key), writer.item_bytes(record.sha256))


def merge_reports(a: RunReport, b: RunReport) -> RunReport:
    """One report for two dispatch rounds of a run: sums, the larger peak and pool, the
    first start and last end, the departures of both."""
    runs = dict(a.runs_by_key)
    for k, n in b.runs_by_key.items():
        runs[k] = runs.get(k, 0) + n
    starts = [r.first_task_at_s for r in (a, b) if r.first_task_at_s]
    return RunReport({**a.results, **b.results}, a.failures + b.failures,
                     a.task_runs + b.task_runs, a.retries + b.retries,
                     a.recomputed + b.recomputed,
                     max(a.peak_bytes_in_flight, b.peak_bytes_in_flight), a.wall_s + b.wall_s,
                     runs, cpu_s=a.cpu_s + b.cpu_s, actor_cpus=max(a.actor_cpus, b.actor_cpus),
                     first_task_at_s=min(starts, default=0.0),
                     ended_at_s=max(a.ended_at_s, b.ended_at_s), busy_s=a.busy_s + b.busy_s,
                     departures=a.departures + b.departures)
