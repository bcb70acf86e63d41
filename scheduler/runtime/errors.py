"""Errors raised by the runtime: one root, each subclass also a matching builtin.

A message names the task, product or store key, the bad value and what was expected.
"""

from __future__ import annotations

from scheduler.errors import SchedulerError


class RuntimeFailure(SchedulerError):
    """Root of every error raised by ``scheduler.runtime``."""


class GraphError(RuntimeFailure, ValueError):
    """A task graph handed to the dispatcher is inconsistent (unknown input, cycle)."""


class FlowError(RuntimeFailure, ValueError):
    """A flow is built wrongly (no scenes, a write before any operation, a bad option)."""
