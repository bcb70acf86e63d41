"""Where a command's time goes: wall and CPU seconds per named phase, when asked.

Kernels mark their phases with ``with phase("matching"): ...``. Nothing is
recorded (one global read per call) unless a caller opened
:func:`record_phases`; then each phase accumulates its *exclusive* time:
a phase opened inside another pauses the outer one, so the shares add up
to the recorded span and a rectification run by the planner counts as
rectification, not as planning. CPU seconds are the process's (every
thread), so a phase that runs OpenCV or numba on several cores shows CPU
above its wall time.

Single-threaded recording only: phases are opened and closed by the thread
that opened :func:`record_phases` (the DSM command runs its tiles in order).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

__all__ = ["PhaseTimes", "phase", "record_phases"]


@dataclass(slots=True)
class PhaseTimes:
    """Exclusive wall and CPU seconds per phase, and how many times each ran."""

    wall_s: dict[str, float] = field(default_factory=dict)
    cpu_s: dict[str, float] = field(default_factory=dict)
    calls: dict[str, int] = field(default_factory=dict)
    _stack: list[str] = field(default_factory=list)
    _since: tuple[float, float] = (0.0, 0.0)

    def _charge(self) -> None:
        """Charge the time since the last switch to the innermost open phase."""
        now = (time.perf_counter(), time.process_time())
        if self._stack:
            name = self._stack[-1]
            self.wall_s[name] = self.wall_s.get(name, 0.0) + now[0] - self._since[0]
            self.cpu_s[name] = self.cpu_s.get(name, 0.0) + now[1] - self._since[1]
        self._since = now

    def enter(self, name: str) -> None:
        self._charge()
        self._stack.append(name)
        self.calls[name] = self.calls.get(name, 0) + 1

    def leave(self) -> None:
        self._charge()
        self._stack.pop()


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
