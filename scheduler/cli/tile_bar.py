"""The progress bar of a one-product command (``eochain ortho``, ``eochain dsm``)."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from typing import Any


class _NoBar:
    """What ``-q`` gets: a bar that counts nothing."""

    def update(self, n: int = 1) -> None:
        """Nothing to show."""


def tile_bar(total: int, desc: str, quiet: bool) -> AbstractContextManager[Any]:
    """tqdm's bar over a command's ``total`` tiles (rate and ETA); with ``quiet``, none.

    tqdm is imported only for a bar: 6-10 ms of a command's start here, after the
    kernels' imports (``python -X importtime``).
    """
    if quiet:
        return nullcontext(_NoBar())
    from tqdm import tqdm

    return tqdm(total=total, unit="tile", desc=desc)
