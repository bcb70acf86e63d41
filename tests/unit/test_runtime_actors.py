"""An actor's preload: imports with the collector paused, then the process frozen."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from scheduler.runtime.actors import import_long_lived


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
