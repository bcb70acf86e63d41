"""What several benchmarks share: where the real sample data is."""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def shared_data() -> Path:
    """The shared sample-data folder (``$EOCHAIN_SHARED_DATA`` or ``../shared/data``).

    A benchmark on real data cannot run without it: exit with the reason.
    """
    env = os.environ.get("EOCHAIN_SHARED_DATA")
    path = Path(env) if env else REPO.parent / "shared" / "data"
    if not path.is_dir():
        raise SystemExit(f"shared sample data not found at {path}; set EOCHAIN_SHARED_DATA")
    return path
