"""Errors of metrics and the cost report: one root, each also a matching builtin."""

from __future__ import annotations

from scheduler.errors import SchedulerError


class ObserveError(SchedulerError):
    """Root of the errors raised while observing a run."""


class MetricsError(ObserveError, ValueError):
    """A metrics call with an impossible value (negative time, unknown node...)."""


class CostReportError(ObserveError, ValueError):
    """A ledger the report cannot read."""
