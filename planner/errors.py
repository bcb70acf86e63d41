"""Errors raised by ``planner``: one root, each subclass also a matching builtin."""

from __future__ import annotations


class PlannerError(Exception):
    """Root of every error raised by the planner package."""


class GridError(PlannerError, ValueError):
    """A geobox, tile grid or window is invalid."""
