"""An actor's preload: imports with the collector paused, then the process frozen; its
kernels' threads."""

from __future__ import annotations

import gc
import subprocess
import sys
from collections.abc import Iterator

import pytest

from scheduler.runtime.actors import import_long_lived, kernel_threads


@pytest.fixture
def unfrozen() -> Iterator[None]:
    """This test process's objects back in the collector's generations afterwards."""
    gc.unfreeze()
    yield
    gc.unfreeze()
    gc.enable()


def test_imports_then_freezes_and_reports_a_module_that_fails(unfrozen: None) -> None:
    failed = import_long_lived(("colorsys", "no_such_module_eochain"))
    assert failed == ["no_such_module_eochain: No module named 'no_such_module_eochain'"]
    assert gc.isenabled()  # paused only while importing
    assert gc.get_freeze_count() > 0


def test_a_collector_the_process_disabled_stays_disabled(unfrozen: None) -> None:
    gc.disable()
    import_long_lived(("colorsys",))
    assert not gc.isenabled()


def test_kernel_threads_follow_the_actor_cpus() -> None:
    assert [kernel_threads(c) for c in (0.25, 1.0, 1.5, 4.0)] == [1, 1, 1, 4]


@pytest.mark.parametrize("numba_first", [False, True])
def test_an_actor_limits_numba_threads_before_or_after_numba_loads(numba_first: bool) -> None:
    """In a fresh process (numba reads its thread count once): two threads on a machine of
    any size, whether numba was loaded before the limit (this thread) or after it (all)."""
    code = ("import numba; " if numba_first else "") + (
        "from scheduler.runtime.actors import limit_kernel_threads; limit_kernel_threads(2); "
        "import numba; print(numba.get_num_threads())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env={"NUMBA_NUM_THREADS": "3", "PATH": ""})
    assert out.stdout.split() == ["2"]
