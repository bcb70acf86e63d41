"""What a dispatch run tells its caller: progress snapshots while it runs, a report at the end.

Shared by the Ray dispatcher (:mod:`scheduler.runtime.dispatch`) and the
in-process executor (:mod:`scheduler.runtime.serial`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from scheduler.fleet.departures import Departure
from scheduler.runtime.state import DispatchState, Failure


@dataclass(frozen=True, slots=True)
class Progress:
    """A snapshot for progress bars: tasks, tiles and products done, elapsed time."""

    tasks_done: int
    tasks_total: int
    tiles_done: int
    tiles_total: int
    products_done: int
    products_total: int
    elapsed_s: float
    bytes_in_flight: int
    retries: int



@dataclass(frozen=True, slots=True)
class NodeDrain:
    """What the dispatcher did when it saw a node draining (``seen_at_s``: epoch seconds)."""

    node_id: str
    seen_at_s: float
    seconds_left: float
    kept: tuple[str, ...]
    handed_back: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class RunReport:
    """What a dispatch run did: results of sink tasks, failures, effort and memory."""

    results: Mapping[str, object]
    failures: tuple[Failure, ...]
    task_runs: int
    retries: int
    recomputed: int
    peak_bytes_in_flight: int
    wall_s: float
    runs_by_key: Mapping[str, int] = field(default_factory=dict)
    #: CPU seconds the task functions used in the actors (process CPU time per task)
    cpu_s: float = 0.0
    #: CPUs of the largest actor pool of the run (0 for the serial executor)
    actor_cpus: float = 0.0
    #: When the first task started in an actor and when the last result was read, epoch s
    first_task_at_s: float = 0.0
    ended_at_s: float = 0.0
    #: Seconds the task functions ran in the actors (wall, summed over tasks)
    busy_s: float = 0.0
    #: The nodes that left during the run, with their causes
    departures: tuple[Departure, ...] = ()
    #: Tasks that ran outside the zone holding their inputs (it had no live node that might
    #: run them), and the input bytes all tasks read from nodes of another zone (both 0 for
    #: the serial executor and for a cluster without zone resources)
    cross_zone_tasks: int = 0
    cross_zone_bytes: int = 0

    @property
    def cpu_share(self) -> float:
        """CPU seconds of the tasks over the actors' CPUs x the time since the first task."""
        busy_s = self.ended_at_s - self.first_task_at_s
        if self.actor_cpus <= 0 or busy_s <= 0:
            return 0.0
        return self.cpu_s / (self.actor_cpus * busy_s)

    @property
    def ok(self) -> bool:
        return not self.failures


ProgressFn = Callable[[Progress], None]


def progress_of(state: DispatchState, products_total: int, products_done: int, start: float,
                retries: int) -> Progress:
    """The progress of a run now (``start``: its ``time.perf_counter()`` at the start)."""
    return Progress(state.completed, len(state.state), state.tiles_completed, state.tiles_total,
                    products_done, products_total,
                    time.perf_counter() - start, state.bytes_in_flight, retries)

