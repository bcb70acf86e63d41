"""How one dispatch run is bounded, and the sizes it chooses as it goes (pure).

:class:`DispatchOptions` bounds a run (bytes in flight, calls queued per
actor, attempts, batching); :func:`batch_size`, :func:`queue_depth` and
:func:`in_flight_bound` are the dispatcher's size decisions, functions of
what it has measured (:mod:`scheduler.runtime.dispatch` carries them out);
:func:`local_object_store_bytes` sizes the object store of a local Ray that
``eochain run`` starts for itself, from the same bound.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from scheduler.runtime.errors import GraphError


@dataclass(frozen=True, slots=True)
class DispatchOptions:
    """Bounds and policies of one dispatch run."""

    max_bytes_in_flight: int = 1 << 30
    tasks_per_actor: int = 2
    cpus_per_actor: float = 1.0
    max_attempts: int = 6
    no_worker_timeout_s: float = 120.0
    scratch_root: str | None = None
    #: Seconds before a draining node's deadline by which kept tasks must be done.
    drain_margin_s: float = 15.0
    #: Most tasks one actor call carries (see :func:`batch_size`).
    max_batch: int = 64
    #: Seconds of expected work one actor call carries at most, at the mean task runtime
    #: (a call costs its actor ~5-10 ms of Ray's work between tasks; on 2 cores, 50 ms tasks
    #: with 2 MiB results kept the cores 0.91 busy in tasks at 0.3 s, 0.89 at 0.1 s, 0.85
    #: one task per call; ``python -m benchmarks.campaign_efficiency``, 800 tiles of ~45 ms
    #: and 2 MiB, medians of 3 side by side: share 0.878 at 0.3 s, 0.895-0.899 at 0.6 s,
    #: 0.899 at 1.2 s, where a lost call loses twice the work).
    batch_target_s: float = 0.6
    #: Calls queued per actor while full batches carry less than ``batch_target_s`` (see
    #: :func:`queue_depth`).
    small_task_calls: int = 4

    def __post_init__(self) -> None:
        if self.tasks_per_actor < 1:
            raise GraphError(f"tasks_per_actor = {self.tasks_per_actor}, expected >= 1")
        if self.cpus_per_actor <= 0:
            raise GraphError(f"cpus_per_actor = {self.cpus_per_actor}, expected > 0")
        if self.max_attempts < 1:
            raise GraphError(f"max_attempts = {self.max_attempts}, expected >= 1")
        if not self.drain_margin_s >= 0:
            raise GraphError(f"drain_margin_s = {self.drain_margin_s}, expected >= 0")
        if self.max_batch < 1:
            raise GraphError(f"max_batch = {self.max_batch}, expected >= 1")
        if not self.batch_target_s >= 0:
            raise GraphError(f"batch_target_s = {self.batch_target_s}, expected >= 0")
        if self.small_task_calls < 1:
            raise GraphError(f"small_task_calls = {self.small_task_calls}, expected >= 1")


def batch_size(runtime_sum_s: float, seen: int, options: DispatchOptions,
               tasks_left: int | None = None, calls_open: int = 1) -> int:
    """How many tasks the next actor call carries (pure), from the ``seen`` tasks of its
    kind whose runtimes came back (``runtime_sum_s`` in all).

    One until a runtime has been seen, then as many as fit in
    ``batch_target_s`` at the mean runtime, between 1 and ``max_batch``: no-op
    tiles share one call's cost, a tile of a second goes alone (a batch
    delays its first result by the others' time, and a lost call loses them all).
    At most twice ``seen`` (a slow start): a mean of a few tasks may be far
    off, and the first tiles of a scene are often its empty corners, done in a
    millisecond. Sized by such a mean, the first calls of ``python -m
    benchmarks.campaign_efficiency`` carried ``max_batch`` tiles of 50 ms
    each (3 s of work): their results came back seconds late, holding two
    scenes' tiles in the object store where depth-first order holds one,
    and the first COG write waited for them.
    Near the end of a run no more than half an even share of the
    ``tasks_left`` (not yet started) over the ``calls_open`` calls the actors
    may queue: the last batches shrink and the actors finish together, where
    full batches would leave one actor a batch behind while the others idle
    (and the last product's write waiting for it). Half, because a call
    queued behind a running one was sized before it ran, and runtimes vary
    (an empty tile takes 1 ms, a full one 50): with the whole share, the last
    tile of ``python -m benchmarks.campaign_efficiency`` ended 0.36-0.40 s
    after the other actor's last (2 runs), with half 0.005-0.08 s, in as many
    calls (84-92 against 91-94).
    """
    if seen < 1:
        return 1
    fit = options.batch_target_s / max(runtime_sum_s / seen, 1e-9)
    size = max(1, min(options.max_batch, int(fit), 2 * seen))
    if tasks_left is not None:
        size = min(size, max(1, -(-tasks_left // max(1, 2 * calls_open))))
    return size


#: Share of the cluster's object store that results in flight may fill: beyond it Ray
#: spills them to disk (and reads them back), which costs more than waiting.
OBJECT_STORE_SHARE = 0.7


def in_flight_bound(max_bytes_in_flight: int, object_store_bytes: int) -> int:
    """The bytes-in-flight bound of a run (pure): the option, or less when the object
    stores of the nodes alive hold less (``0``: unknown, the option)."""
    if object_store_bytes <= 0:
        return max_bytes_in_flight
    return max(1, min(max_bytes_in_flight, int(OBJECT_STORE_SHARE * object_store_bytes)))


#: Share of the machine's memory Ray's own default object store takes (Ray's
#: ``DEFAULT_OBJECT_STORE_MEMORY_PROPORTION``), and of ``/dev/shm`` at most.
RAY_MEMORY_SHARE = 0.3
RAY_SHM_SHARE = 0.95
#: Smallest object store Ray accepts (75 MiB), with a margin.
MIN_OBJECT_STORE_BYTES = 80 * 2**20


def local_object_store_bytes(max_bytes_in_flight: int, memory_bytes: int,
                             shm_bytes: int | None) -> int:
    """Object store of a local Ray started for one run (pure): enough that
    :func:`in_flight_bound` leaves the run its ``max_bytes_in_flight``
    (``max_bytes_in_flight / OBJECT_STORE_SHARE``), and no more than Ray's own
    default on this machine (``RAY_MEMORY_SHARE`` of ``memory_bytes``,
    ``RAY_SHM_SHARE`` of the ``shm_bytes`` free in ``/dev/shm``, ``None``:
    unknown); never under Ray's minimum.

    Why: a store smaller than what the dispatcher holds cuts the bound below a
    product's tiles (a 8192 px scene at 1024 px tiles holds 100 tiles of 2 MiB
    until its COG is written): Ray spills them to disk and reads them back, and
    past the bound the tasks start one at a time. ``python -m
    benchmarks.campaign_efficiency`` (800 tiles of 2 MiB, 2 cores, single runs
    side by side, exclusive lock): a 256 MiB store (the former default) spilled
    287 MiB (77 objects) and read them back, held 370 MiB in flight against its
    179 MiB bound, kept the cores 0.66 busy in tasks: CPU share 0.726; the
    179 MiB bound alone on a 1463 MiB store (no spill) 0.791, occupancy 0.65;
    this default (1463 MiB for the 1 GiB bound) 0.899, occupancy 0.94, no
    spill, 443 MiB peak in flight. Earlier: 256 MiB 0.711, 512 MiB 0.871 (2
    runs each), 1 GiB 0.895 (median of 5). Ray maps the store lazily: a larger
    one costs no memory until results fill it.
    """
    need = math.ceil(max_bytes_in_flight / OBJECT_STORE_SHARE)
    cap = int(RAY_MEMORY_SHARE * memory_bytes)
    if shm_bytes is not None:
        cap = min(cap, int(RAY_SHM_SHARE * shm_bytes))
    return max(MIN_OBJECT_STORE_BYTES, min(need, cap))


def queue_depth(batch: int, options: DispatchOptions) -> int:
    """Calls queued per actor (pure): ``tasks_per_actor``, deeper while full batches are short.

    A full batch (``max_batch`` tasks) carries less than ``batch_target_s`` of
    work, and may take less time than the round trip of its status to the
    driver and of the next call back, so with two calls queued an actor would
    idle between them; ``small_task_calls`` keeps it fed. A batch cut at
    ``batch_target_s`` outlasts that round trip: more calls queued would only
    leave work behind on one actor when the others run out of tasks (on 2
    cores, 50 ms tiles four calls deep left one core idle for up to a second at
    the end of a campaign). The bytes-in-flight bound and the priority order
    hold either way.
    """
    if batch < options.max_batch:
        return options.tasks_per_actor
    return max(options.tasks_per_actor, options.small_task_calls)

