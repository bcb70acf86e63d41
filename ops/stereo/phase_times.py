"""Where a command's time goes: wall and CPU seconds per named phase, when asked.

Kernels mark their phases with ``with phase("matching"): ...``. Nothing is
recorded (one global read per call) unless a caller opened
:func:`record_phases`; then each phase accumulates its *exclusive* time:
a phase opened inside another pauses the outer one, so the shares add up
to the recorded span and a rectification run by the planner counts as
rectification, not as planning.

Threads: each thread has its own stack of open phases (a one-product run
computes its tiles on several threads), and a phase's seconds are summed
over the threads that ran it: thread-seconds, which add up to the
recording's span times the threads busy in it. CPU seconds are the
thread's own (``time.thread_time``): work a phase hands to threads of a
library's pool (OpenCV's, numba's) is in the whole process's CPU time, not
in the phase's; a run on one core (one thread, no pools) charges it all.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

__all__ = ["PhaseTimes", "phase", "record_phases"]


@dataclass(slots=True)
class _ThreadPhases:
    """One thread's open phases and when its innermost one was last charged."""

    stack: list[str] = field(default_factory=list)
    since: tuple[float, float] = (0.0, 0.0)


@dataclass(slots=True)
class PhaseTimes:
    """Exclusive wall and CPU seconds per phase (summed over threads), and calls of each."""

    wall_s: dict[str, float] = field(default_factory=dict)
    cpu_s: dict[str, float] = field(default_factory=dict)
    calls: dict[str, int] = field(default_factory=dict)
    _threads: dict[int, _ThreadPhases] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _charge(self, mine: _ThreadPhases) -> None:
        """Charge this thread's time since its last switch to its innermost open phase."""
        now = (time.perf_counter(), time.thread_time())
        if mine.stack:
            name = mine.stack[-1]
            self.wall_s[name] = self.wall_s.get(name, 0.0) + now[0] - mine.since[0]
            self.cpu_s[name] = self.cpu_s.get(name, 0.0) + now[1] - mine.since[1]
        mine.since = now

    def enter(self, name: str) -> None:
        with self._lock:
            mine = self._threads.setdefault(threading.get_ident(), _ThreadPhases())
            self._charge(mine)
            mine.stack.append(name)
            self.calls[name] = self.calls.get(name, 0) + 1

    def leave(self) -> None:
        with self._lock:
            mine = self._threads[threading.get_ident()]
            self._charge(mine)
            mine.stack.pop()


_recording: PhaseTimes | None = None


@contextmanager
def record_phases(outer: str = "other") -> Iterator[PhaseTimes]:
    """Record the phases run inside the block; time in no phase goes to ``outer``."""
    global _recording
    if _recording is not None:
        raise RuntimeError("phases are already being recorded; record_phases does not nest")
    times = PhaseTimes()
    times.enter(outer)
    _recording = times
    try:
        yield times
    finally:
        _recording = None
        times.leave()


@contextmanager
def phase(name: str) -> Iterator[None]:
    """Mark a phase of the running command (free when nothing records)."""
    times = _recording
    if times is None:
        yield
        return
    times.enter(name)
    try:
        yield
    finally:
        times.leave()
