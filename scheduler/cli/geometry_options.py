"""Command-line options that settle what ops refuses to guess: RPC source and DEM heights.

``ops`` refuses an RPC that may not describe its image and a DEM whose
heights would be used in the wrong reference (:mod:`ops.sensor.rpc_check`,
:mod:`ops.terrain.vertical`); these options are how a user answers:

* ``--rpc embedded|sidecar|PATH``: which RPC source to use when the image's
  own metadata and a sidecar disagree (default: all, and they must agree);
* ``--rpc-origin ROW,COL``: the image's first pixel in the product, for a
  crop whose geotransform origin was lost;
* ``--dem-heights ellipsoid|egm96|egm2008``: the DEM's vertical reference,
  over what its files say (SRTM is EGM96 and then needs ``--geoid``);
* ``--dem-max-holes FRACTION``: the share of nodata holes under the footprint
  that may be filled by interpolation (default 0.2; 1 allows any).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, TypeVar

import click

from ops.terrain.dem import MAX_HOLE_FRACTION
from ops.terrain.vertical import VERTICAL_DATUMS

F = TypeVar("F", bound=Callable[..., Any])


class _RowCol(click.ParamType[tuple[float, float]]):
    """``ROW,COL``: two finite numbers."""

    name = "ROW,COL"

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> tuple[float, float]:
        if isinstance(value, tuple):
            return value
        parts = str(value).split(",")
        try:
            row, col = (float(p) for p in parts)
        except ValueError:
            self.fail(f"{str(value)[:40]!r}: expected ROW,COL, two numbers such as 5000,20500",
                      param, ctx)
        if not (math.isfinite(row) and math.isfinite(col)):
            self.fail(f"{str(value)[:40]!r}: expected two finite numbers", param, ctx)
        return row, col


class _Fraction(click.ParamType[float]):
    name = "FRACTION"

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> float:
        try:
            out = float(value)
        except (TypeError, ValueError):
            self.fail(f"{str(value)[:40]!r}: expected a number in 0..1", param, ctx)
        if not (math.isfinite(out) and 0.0 <= out <= 1.0):
            self.fail(f"{str(value)[:40]!r}: expected a number in 0..1", param, ctx)
        return out


def rpc_source_options(fn: F) -> F:
    """``--rpc`` and ``--rpc-origin`` (parameters ``rpc_source``, ``rpc_origin``)."""
    fn = click.option(
        "--rpc-origin", "rpc_origin", type=_RowCol(), default=None,
        help="The image's first pixel (row, col) in the product its RPC describes, for a "
             "crop saved without its geotransform origin.")(fn)
    return click.option(
        "--rpc", "rpc_source", default=None, metavar="embedded|sidecar|PATH",
        help="RPC to use when the image's own and a sidecar's disagree: 'embedded', "
             "'sidecar', or an RPC file.")(fn)


def dem_reference_options(fn: F) -> F:
    """``--dem-heights`` and ``--dem-max-holes`` (``dem_heights``, ``dem_max_holes``)."""
    fn = click.option(
        "--dem-max-holes", "dem_max_holes", type=_Fraction(), default=MAX_HOLE_FRACTION,
        show_default=True,
        help="Largest share of nodata holes under the footprint filled by interpolation.")(fn)
    return click.option(
        "--dem-heights", "dem_heights", type=click.Choice(VERTICAL_DATUMS), default=None,
        help="Vertical reference of the DEM's heights, over what its files say "
             "(SRTM: egm96, which needs --geoid).")(fn)
