"""The scheduler's error root: every error the scheduler raises derives from :class:`SchedulerError`.

Each layer keeps its own ``errors.py`` (``scheduler.cloud.errors``,
``scheduler.runtime.errors``, ``scheduler.observe.errors``) whose root
derives from this one, so ``except SchedulerError`` catches them all.
"""

from __future__ import annotations


class SchedulerError(Exception):
    """Root of every error raised by the scheduler."""
