"""The phase recorder: exclusive times, nothing recorded when off, no nesting of recorders."""

from __future__ import annotations

import threading
import time

import pytest

from ops.stereo.phase_times import phase, record_phases

pytestmark = pytest.mark.unit


def test_an_inner_phase_pauses_the_outer_one() -> None:
    with record_phases("rest") as times, phase("outer"):
        with phase("inner"):
            time.sleep(0.05)
        with phase("inner"):
            pass
    assert set(times.wall_s) == {"rest", "outer", "inner"}
    assert times.calls == {"rest": 1, "outer": 1, "inner": 2}
    assert times.wall_s["inner"] >= 0.05
    # the outer phase's own time excludes its inner phase's sleep
    assert times.wall_s["outer"] < times.wall_s["inner"]


def test_phases_outside_a_recording_are_not_recorded() -> None:
    with phase("alone"):
        pass
    with record_phases() as times:
        pass
    with phase("after"):
        pass
    assert set(times.wall_s) == {"other"}


def test_a_phase_that_raises_is_still_closed() -> None:
    with record_phases() as times:
        with pytest.raises(ZeroDivisionError), phase("failing"):
            _ = 1 / 0
        with phase("next"):
            pass
    assert times.calls == {"other": 1, "failing": 1, "next": 1}


def test_recordings_do_not_nest() -> None:
    with (record_phases(), pytest.raises(RuntimeError, match="already being recorded"),
          record_phases()):
        pass


def test_each_thread_has_its_own_phases_and_their_times_add_up() -> None:
    """Two threads in overlapping phases: neither closes the other's, thread-seconds add."""
    barrier = threading.Barrier(2)

    def work(name: str) -> None:
        with phase("tile"):
            barrier.wait(timeout=30)  # both threads are inside "tile" now
            with phase(name):
                time.sleep(0.05)
            barrier.wait(timeout=30)

    with record_phases() as times:
        threads = [threading.Thread(target=work, args=(n,)) for n in ("a", "b")]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert times.calls == {"other": 1, "tile": 2, "a": 1, "b": 1}
    assert times.wall_s["a"] >= 0.05 and times.wall_s["b"] >= 0.05
    assert all(v >= 0.0 for v in (*times.wall_s.values(), *times.cpu_s.values()))
