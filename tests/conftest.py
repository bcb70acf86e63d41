"""Shared fixtures: where the real sample data lives, and a scratch folder.

The real Pléiades crops, DEMs and RPC fixtures are never copied into the
repository: they are read from ``$EOCHAIN_SHARED_DATA`` or ``../shared/data``
beside the checkout, and tests that need them skip with the reason otherwise.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import settings

REPO = Path(__file__).resolve().parents[1]

# Property tests judge correctness, not speed: no per-example deadline (timing lives in
# benchmarks/), and a fixed example budget so the suite's length stays predictable.
settings.register_profile("eochain", deadline=None, max_examples=60, print_blob=True)
settings.load_profile("eochain")


def shared_data_dir() -> Path | None:
    """The shared sample-data folder, or None when this machine has none."""
    env = os.environ.get("EOCHAIN_SHARED_DATA")
    candidates = [Path(env)] if env else []
    candidates.append(REPO.parent / "shared" / "data")
    for path in candidates:
        if path.is_dir():
            return path
    return None


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real sample data folder; skips the test with the reason where absent."""
    path = shared_data_dir()
    if path is None:
        pytest.skip(
            "real sample data not found: set EOCHAIN_SHARED_DATA or place it at "
            f"{REPO.parent / 'shared' / 'data'}"
        )
    return path
