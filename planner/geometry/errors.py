"""Errors of the geometry layer (a :class:`~planner.errors.PlannerError`, so ops need not import it)."""

from __future__ import annotations

from planner.errors import PlannerError


class GridError(PlannerError, ValueError):
    """A geobox, tile grid or window is invalid."""
