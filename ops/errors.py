"""Errors raised by ``ops``: one root, each subclass also a matching builtin.

A message names the file or key, the bad value, and what was expected.
"""

from __future__ import annotations


class OpsError(Exception):
    """Root of every error raised by the ops package."""


class RpcFormatError(OpsError, ValueError):
    """An RPC model is missing, malformed or truncated in the named file."""


class RpcFitError(OpsError, ValueError):
    """An image's RPC does not describe its pixels (unknown crop origin, outside the box, a map)."""


class RpcConflictError(OpsError, ValueError):
    """An image has several RPC sources that disagree, and none was chosen."""


class RpcDomainError(OpsError, ValueError):
    """A point lies outside an RPC model's validity box, or a denominator vanishes."""


class DemError(OpsError, ValueError):
    """A DEM or geoid grid cannot be read or used as asked."""


class DemCoverageError(DemError):
    """The DEM does not cover the requested area."""


class RasterReadError(OpsError, OSError):
    """A raster file cannot be opened or read."""


class GeometryError(OpsError, ValueError):
    """An output grid, footprint or window is inconsistent."""


class RasterWriteError(OpsError, OSError):
    """A raster product cannot be written at the named destination."""


class StereoError(OpsError, ValueError):
    """A stereo pair cannot give a surface: no overlap, no texture, incompatible views."""


class AcquisitionError(OpsError, ValueError):
    """An image's metadata states an acquisition time that cannot be read."""
