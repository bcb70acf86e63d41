"""Errors raised by the runtime: one root, each subclass also a matching builtin.

A message names the task, product or store key, the bad value and what was expected.
"""

from __future__ import annotations


class RuntimeFailure(Exception):
    """Root of every error raised by ``scheduler.runtime``."""


class GraphError(RuntimeFailure, ValueError):
    """A task graph handed to the dispatcher is inconsistent (unknown input, cycle)."""


class StoreError(RuntimeFailure, OSError):
    """An object store cannot read, write or commit the named key."""


class ManifestError(RuntimeFailure, ValueError):
    """A manifest entry is malformed or does not match its product."""


class FlowError(RuntimeFailure, ValueError):
    """A flow is built wrongly (no scenes, a write before any operation, a bad option)."""



class MetadataError(RuntimeFailure, ValueError):
    """A product's CRS or provenance cannot be stated as asked (unknown CRS, height reference)."""
