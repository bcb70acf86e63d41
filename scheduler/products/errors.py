"""Errors of products: their store, manifest and metadata. One root, each also a matching builtin.

A message names the product or store key, the bad value and what was expected.
"""

from __future__ import annotations

from scheduler.errors import SchedulerError


class ProductError(SchedulerError):
    """Root of the errors raised by ``scheduler.products``."""


class StoreError(ProductError, OSError):
    """An object store cannot read, write or commit the named key."""


class ManifestError(ProductError, ValueError):
    """A manifest entry is malformed or does not match its product."""


class MetadataError(ProductError, ValueError):
    """A product's CRS or provenance cannot be stated as asked (unknown CRS, height reference)."""
