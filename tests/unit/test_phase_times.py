"""The phase recorder: exclusive times, nothing recorded when off, no nesting of recorders."""

from __future__ import annotations

import time

import pytest

from ops.phase_times import phase, record_phases

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
