"""Errors raised by ``planner``: one root, each subclass also a matching builtin."""

from __future__ import annotations


class PlannerError(Exception):
    """Root of every error raised by the planner package."""


class ConfigError(PlannerError, ValueError):
    """A configuration file cannot be read strictly: size, encoding, duplicate key, alias, depth."""


class CampaignError(PlannerError, ValueError):
    """A campaign file is malformed: a key is missing, unknown or has a bad value."""


class DagError(PlannerError, ValueError):
    """The task graph is not a DAG (a cycle) or an input has no producer (dangling)."""


class CatalogError(PlannerError, ValueError):
    """A price catalog or calibration table is malformed, or lacks a type or region."""


class InfeasiblePlanError(PlannerError, ValueError):
    """No placement satisfies the campaign; the message names the binding constraint."""


class SizeLimitError(PlannerError, ValueError):
    """The work asked for exceeds a stated limit; the message gives the estimate."""


class SolverError(PlannerError, RuntimeError):
    """The LP solver failed or returned a status other than optimal or infeasible."""


class PlanError(PlannerError, ValueError):
    """A plan document (``plan.json``) is malformed: not an object, a key missing or bad, or
    another format version; the message names the file and the key."""
