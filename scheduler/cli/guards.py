"""Guards the commands share: finite numbers on the command line, size limits before work.

- :data:`POSITIVE_FINITE` / :data:`NON_NEGATIVE_FINITE`: click types that
  refuse ``nan``, ``inf`` and out-of-range values with the option's name
  (``--deadline inf`` is a usage error, not a solver traceback);
- :data:`allow_large_option`: the ``--allow-large`` flag;
- :func:`check_product_grid` / :func:`check_product_box`: a one-product command (``eochain ortho``,
  ``eochain dsm``) refuses an output grid beyond
  :data:`planner.workload.MAX_PRODUCT_BYTES` or
  :data:`planner.workload.MAX_TASKS` before any pixel is computed
  (``--gsd 0.001`` on a Pléiades crop is about a terabyte), naming the
  estimate; ``--allow-large`` lifts the limit.
"""

from __future__ import annotations

import math
from typing import Any

import click

from planner.workload import (
    MAX_PRODUCT_BYTES,
    MAX_TASKS,
    Workload,
    bbox_workload,
    check_workload,
    grid_workload,
)


class FiniteFloat(click.ParamType[float]):
    """A finite float above ``minimum`` (``strict``: not equal to it)."""

    name = "number"

    def __init__(self, minimum: float = 0.0, strict: bool = True) -> None:
        self.minimum, self.strict = minimum, strict

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> float:
        if isinstance(value, float) and math.isfinite(value):
            number = value
        else:
            try:
                number = float(value)
            except (TypeError, ValueError):
                self.fail(f"{str(value)[:60]!r} is not a number", param, ctx)
        bound = f"> {self.minimum:g}" if self.strict else f">= {self.minimum:g}"
        if (not math.isfinite(number) or number < self.minimum
                or (self.strict and number == self.minimum)):
            self.fail(f"{str(value)[:60]!r}, expected a finite number {bound}", param, ctx)
        return number


POSITIVE_FINITE = FiniteFloat(0.0, strict=True)
NON_NEGATIVE_FINITE = FiniteFloat(0.0, strict=False)

allow_large_option = click.option(
    "--allow-large", is_flag=True,
    help="Do the work even when its estimated size is beyond the stated limits.")


def check_product_grid(what: str, rows: int, cols: int, tile_px: int, *, bands: int = 1,
                       allow_large: bool = False) -> None:
    """Refuse a ``rows`` x ``cols`` product beyond the one-product limits (SizeLimitError)."""
    _check_product(grid_workload(what, rows, cols, tile_px), bands, allow_large)


def check_product_box(what: str, bbox: tuple[float, float, float, float], gsd_m: float,
                      tile_px: int, *, bands: int = 1, allow_large: bool = False) -> None:
    """Refuse a product over a lon/lat box at ``gsd_m`` beyond the one-product limits."""
    _check_product(bbox_workload(what, bbox, gsd_m, tile_px), bands, allow_large)


def _check_product(work: Workload, bands: int, allow_large: bool) -> None:
    check_workload(Workload(work.what, work.tasks, work.output_px * bands),
                   max_tasks=MAX_TASKS, max_bytes=MAX_PRODUCT_BYTES, allow_large=allow_large,
                   hint="check --gsd and --tile-size")
