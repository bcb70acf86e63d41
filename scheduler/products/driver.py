"""Where flows run, and the run's fleet: :class:`Driver` (a Ray cluster, a new local one, or
in-process), the per-stage queue that sizes the plan's fleet request while a run goes on,
and the settings workers of a remote cluster need.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from scheduler.products.lease import LEASE_TTL_S
from scheduler.products.survey import SURVEY_THREADS, SURVEY_TIMEOUT_S, set_network_timeouts
from scheduler.runtime.dispatch import Dispatcher, DispatchOptions, Progress, RunReport, run_serial
from scheduler.runtime.errors import FlowError
from scheduler.runtime.options import local_object_store_bytes
from scheduler.runtime.state import TaskGraph

if TYPE_CHECKING:
    from scheduler.observe.metrics import CampaignMetrics
    from scheduler.products.flow import Flow
    from scheduler.runtime.pool import ActorPool

__all__ = ["Driver", "Replanner", "StageQueue", "check_reachable", "worker_env"]


class StageQueue:
    """Tasks left per plan stage (``Task.stage``) of one dispatch, each counted done once."""

    def __init__(self, stage_of: Mapping[str, str]) -> None:
        """``stage_of`` maps each task key to its stage."""
        self._stage_of = dict(stage_of)
        self.total: dict[str, int] = {}
        for stage in self._stage_of.values():
            self.total[stage] = self.total.get(stage, 0) + 1
        self.left = dict(self.total)

    @classmethod
    def of(cls, graph: TaskGraph) -> StageQueue:
        return cls({key: task.stage for key, task in graph.tasks.items()})

    def done(self, key: str) -> str | None:
        """Count ``key`` as done; its stage, or ``None`` when it was counted already."""
        stage = self._stage_of.pop(key, None)
        if stage is not None:
            self.left[stage] -= 1
        return stage

    def remaining_fraction(self) -> dict[str, float]:
        return {s: self.left[s] / n for s, n in self.total.items()}


class Replanner(Protocol):
    """A live re-planner (:mod:`scheduler.fleet.replanning`): task times in, a fleet out.

    ``on_task_done`` gets each finished task's stage and run time,
    ``on_interruption`` each interrupted node's pool (type, market);
    ``fleet_for`` the tasks left per stage and the seconds since the dispatch
    began, and answers the nodes to ask for per (instance type, market), or
    ``None`` to keep the current request.
    """

    def on_task_done(self, stage: str, runtime_s: float) -> None: ...

    def on_interruption(self, instance_type: str, market: str) -> None: ...

    def fleet_for(self, remaining_tasks_by_stage: Mapping[str, int],
                  elapsed_s: float) -> Mapping[tuple[str, str], int] | None: ...


@dataclass
class Driver:
    """Where flows run: the Ray cluster at ``address``, a new local one, or in-process.

    ``address=None`` starts (or reuses) a local Ray instance with ``num_cpus`` and an
    object store of ``object_store_bytes`` (``None``: :meth:`local_object_store_bytes`, what
    the dispatch options hold in flight, within Ray's own default for this machine);
    ``address="serial"`` runs in this process without Ray (tests, tiny jobs).
    With ``metrics`` every task is reported to it (Ray: by the dispatcher;
    serial: by :func:`scheduler.observe.metrics_hooks.instrument_graph`).
    With ``plan`` (a ``plan.json`` document, format ``eochain-plan/1``) a Ray
    dispatch asks the autoscaler for the plan's fleet while it runs, shrinks
    the request as stages finish (per stage: the fraction of its tasks not
    yet done, :class:`StageQueue`), withdraws it at the end, and replaces
    a spot pool that keeps being interrupted by the plan's fallback
    (:mod:`scheduler.fleet.autoscaling`). ``say`` is the run's output function
    for those messages (default: a logged warning).
    With a ``replanner`` as well (or one passed to :meth:`dispatch`), each
    finished task's stage and run time and each interrupted node's pool go to
    it, and at each progress step its ``fleet_for`` answer, when not ``None``,
    becomes the request (:meth:`~scheduler.fleet.autoscaling.FleetRequest.replan`).
    :meth:`warm` starts the next dispatch's actors ahead of it (``eochain run``
    calls it before it reads the campaign's scenes); :meth:`cool` ends them if no
    dispatch took them.
    ``survey_threads``/``survey_timeout_s`` bound the survey (see :func:`survey`);
    ``lease_ttl_s``/``lease_poll_s``: how long this driver's product leases last
    unrenewed, and how often it looks for products another driver holds.
    """

    address: str | None = None
    num_cpus: int | None = None
    options: DispatchOptions = field(default_factory=DispatchOptions)
    object_store_bytes: int | None = None
    metrics: CampaignMetrics | None = None
    plan: Mapping[str, Any] | None = None
    say: Callable[[str], None] | None = None
    survey_threads: int = SURVEY_THREADS
    survey_timeout_s: float = SURVEY_TIMEOUT_S
    lease_ttl_s: float = LEASE_TTL_S
    lease_poll_s: float = 1.0
    replanner: Replanner | None = None
    _pool: ActorPool | None = field(default=None, init=False, repr=False, compare=False)

    def get_flow(self, scenes: Sequence[object]) -> Flow:
        from scheduler.products.flow import Flow, flow_scenes

        return Flow(self, flow_scenes(scenes))

    def dispatch(
        self, graph: TaskGraph, progress: Callable[[Progress], None] | None,
        on_result: Callable[[str, object], None], replanner: Replanner | None = None,
    ) -> RunReport:
        replanner = replanner or self.replanner
        if self.address == "serial":
            if self.metrics is not None:
                from scheduler.observe.metrics_hooks import instrument_graph

                graph = instrument_graph(graph, self.metrics, lambda task: "local")
            report = run_serial(graph, self.options, progress)
            for key, value in report.results.items():
                on_result(key, value)
            return report
        from scheduler.fleet.autoscaling import FleetRequest, SpotLosses

        pool, self._pool = self._pool, None
        if self.plan is None:
            if replanner is not None:
                raise FlowError("a replanner needs the plan it re-plans: Driver(plan=...)")
            self.connect()
            return Dispatcher(self.options, self.metrics, SpotLosses(None, say=self.say),
                              pool=pool).run(graph, progress, on_result)
        fleet = FleetRequest(self.plan, say=self.say)
        queue = StageQueue.of(graph)
        self.connect()
        import ray

        def done(key: str, runtime_s: float) -> None:
            stage = queue.done(key)
            if replanner is not None and stage is not None:
                replanner.on_task_done(stage, runtime_s)

        def tick(p: Progress) -> None:
            if progress is not None:
                progress(p)
            if replanner is not None:
                nodes = replanner.fleet_for(dict(queue.left), p.elapsed_s)
                if nodes is not None:
                    fleet.replan(nodes)
            fleet.update(queue.remaining_fraction())

        try:
            fleet.update(queue.remaining_fraction())
            spot = SpotLosses(self.plan, say=self.say, act=fleet.substitute)
            return Dispatcher(self.options, self.metrics, spot, fleet, pool).run(
                graph, tick, on_result, done,
                None if replanner is None else replanner.on_interruption)
        finally:
            if ray.is_initialized():  # a failed run must not keep a fleet up either
                fleet.release()

    def warm(self, preload: tuple[str, ...] = ()) -> None:
        """Connect, and start the next Ray dispatch's actors now: their worker processes
        start, and import the ``preload`` modules (the flow's task functions and kernels,
        :meth:`~scheduler.products.flow.Flow.worker_imports`), while the scenes are surveyed,
        not after. Warm already: the actors import the ``preload`` modules they have not.
        A no-op when serial."""
        if self.address == "serial":
            return
        if self._pool is not None:
            self._pool.add_preload(preload)
            return
        self.connect()
        from scheduler.runtime.pool import ActorPool

        self._pool = ActorPool(self.options, preload)
        self._pool.sync()

    def cool(self) -> None:
        """End the warm actors no dispatch took (a run that found nothing to compute)."""
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None

    def local_object_store_bytes(self) -> int:
        """The object store of the local Ray this driver starts: ``object_store_bytes``, or
        sized by :func:`~scheduler.runtime.options.local_object_store_bytes` from the
        options' bytes in flight and this machine's memory and ``/dev/shm``."""
        if self.object_store_bytes is not None:
            return self.object_store_bytes
        import os
        import shutil

        memory_bytes = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        shm_bytes = shutil.disk_usage("/dev/shm").free if os.path.isdir("/dev/shm") else None
        return local_object_store_bytes(self.options.max_bytes_in_flight, memory_bytes,
                                        shm_bytes)

    def connect(self) -> None:
        """Connect to Ray (start the local instance) now; a no-op when serial or connected."""
        if self.address == "serial":
            return
        from scheduler.ray_private import local_daemon_env, use_loopback

        use_loopback()
        set_network_timeouts()
        import ray

        if ray.is_initialized():
            return
        if self.address is None:
            # "local": a new instance of our own, never a cluster another process left running
            with local_daemon_env():
                ray.init(address="local", num_cpus=self.num_cpus, include_dashboard=False,
                         log_to_driver=False,
                         object_store_memory=self.local_object_store_bytes())
        else:
            check_reachable(self.address)
            env = worker_env()
            ray.init(address=self.address, log_to_driver=False,
                     runtime_env={"env_vars": env} if env else None)


#: Seconds to reach a Ray cluster's address before giving up with an error.
RAY_CONNECT_TIMEOUT_S = 10.0


def check_reachable(address: str, timeout_s: float = RAY_CONNECT_TIMEOUT_S) -> None:
    """Fail within ``timeout_s`` with a clear error unless a gRPC server answers at a Ray
    address.

    ``ray.init`` to a dead or black-holed address retries for minutes; a gRPC channel
    to the GCS tells first (a port that accepts connections and never answers does
    not complete the HTTP/2 handshake). ``auto`` (this machine's cluster) and
    ``ray://`` client addresses are left to Ray.
    """
    host, _, port = address.rpartition(":")
    if address == "auto" or "://" in address or not host or not port.isdigit():
        return
    import socket

    import grpc

    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as exc:
        raise FlowError(f"Ray cluster at {address!r}: no answer within {timeout_s:g} s "
                        f"({exc.strerror or exc}); expected a running head node there (its "
                        "GCS address, as `ray status` on it prints)") from exc
    channel = grpc.insecure_channel(address)
    try:
        grpc.channel_ready_future(channel).result(timeout=timeout_s)
    except grpc.FutureTimeoutError as exc:
        raise FlowError(f"Ray cluster at {address!r}: no answer within {timeout_s:g} s; "
                        "expected a running head node there (its GCS address, as `ray status` "
                        "on it prints)") from exc
    finally:
        channel.close()


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
