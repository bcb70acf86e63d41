"""Byte layout of a Cloud-Optimized GeoTIFF, as GDAL's COG driver lays it out.

::

    header (II*, or II+ for BigTIFF) -> first IFD
    ghost header  "GDAL_STRUCTURAL_METADATA_SIZE=... LAYOUT=IFDS_BEFORE_DATA
                   BLOCK_ORDER=ROW_MAJOR BLOCK_LEADER=SIZE_AS_UINT4
                   BLOCK_TRAILER=LAST_4_BYTES_REPEATED ..."
    IFD full resolution, its out-of-line values
    IFD overview 1 (NewSubfileType=1) ... IFD overview n, their values
    tiles of overview n, row-major ... tiles of overview 1 ... tiles of full resolution
    each tile: uint32 size | deflate data | its last 4 bytes again

The georeferencing (GeoKeys, pixel scale, tie point, GDAL metadata with band
descriptions, nodata) is not encoded here: :func:`template_tags` lets GDAL
write a 1 x 1 GeoTIFF with the same CRS and transform and copies its tags,
so every CRS GDAL can write is written exactly as GDAL writes it.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import rasterio
from rasterio.errors import RasterioError
from rasterio.io import MemoryFile

from ops.errors import RasterWriteError
from planner.geometry.grid import GeoBox

GHOST_HEADER_BODY = (
    b"LAYOUT=IFDS_BEFORE_DATA\nBLOCK_ORDER=ROW_MAJOR\nBLOCK_LEADER=SIZE_AS_UINT4\n"
    b"BLOCK_TRAILER=LAST_4_BYTES_REPEATED\nKNOWN_INCOMPATIBLE_EDITION=NO\n "
)
#: Tags copied from GDAL's own GeoTIFF: pixel scale, tie point, transformation,
#: GeoKey directory, double and ASCII params, GDAL metadata, GDAL nodata.
GEO_TAGS = (33550, 33922, 34264, 34735, 34736, 34737, 42112, 42113)
_NODATA_TAG = 42113
_TYPE_SIZE = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8,
              16: 8, 17: 8, 18: 8}
_SHORT, _LONG, _LONG8 = 3, 4, 16
_SAMPLE_FORMAT = {"u": 1, "i": 2, "f": 3}


@dataclass(frozen=True, slots=True)
class Tag:
    """One TIFF field: its code, type, count and little-endian value bytes."""

    code: int
    type: int
    count: int
    value: bytes


@dataclass(frozen=True, slots=True)
class LevelLayout:
    """One resolution level: its size and where its tiles' data lie in the file."""

    width: int
    height: int
    offsets: tuple[int, ...]
    byte_counts: tuple[int, ...]


def _shorts(*values: int) -> Tag:
    return Tag(0, _SHORT, len(values), struct.pack(f"<{len(values)}H", *values))


def _with(code: int, tag: Tag) -> Tag:
    return Tag(code, tag.type, tag.count, tag.value)


def template_tags(geobox: GeoBox, *, crs: str, count: int, dtype: str, nodata: float | None,
                  descriptions: tuple[str | None, ...] | None,
                  units: tuple[str | None, ...] | None, tags: Mapping[str, str]) -> list[Tag]:
    """GDAL's GeoTIFF tags for this CRS, transform, nodata, band descriptions, units and tags."""
    profile: dict[str, Any] = {
        "driver": "GTiff", "width": 1, "height": 1, "count": count, "dtype": dtype,
        "crs": crs, "transform": rasterio.Affine(*geobox.transform), "nodata": nodata,
    }
    try:
        with MemoryFile() as mem:
            with mem.open(**profile) as dst:
                for band, text in enumerate(descriptions or (), start=1):
                    if text:
                        dst.set_band_description(band, text)
                if units is not None:
                    dst.units = tuple(u or "" for u in units)
                if tags:
                    dst.update_tags(**tags)
            raw = mem.read()
    except RasterioError as exc:
        raise RasterWriteError(f"GDAL cannot write the georeferencing (CRS {crs!r}): {exc}"
                               ) from exc
    return [tag for tag in read_ifd(raw, _first_ifd(raw)) if tag.code in GEO_TAGS]


def _first_ifd(raw: bytes) -> int:
    if raw[:4] != b"II*\x00":
        raise RasterWriteError("GDAL's template GeoTIFF is not a little-endian classic TIFF")
    return int(struct.unpack_from("<I", raw, 4)[0])


def read_ifd(raw: bytes, offset: int) -> list[Tag]:
    """The fields of the classic-TIFF IFD at ``offset`` (values resolved)."""
    (n,) = struct.unpack_from("<H", raw, offset)
    tags = []
    for k in range(n):
        code, typ, count, inline = struct.unpack_from("<HHI4s", raw, offset + 2 + 12 * k)
        size = _TYPE_SIZE[typ] * count
        if size <= 4:
            value = inline[:size]
        else:
            (pos,) = struct.unpack("<I", inline)
            value = raw[pos:pos + size]
        tags.append(Tag(code, typ, count, value))
    return tags


def level_tags(level: LevelLayout, *, overview: bool, bands: int, dtype: np.dtype[Any],
               predictor: int, block_px: int, geo: list[Tag], bigtiff: bool) -> list[Tag]:
    """Every field of one level's IFD, sorted by code."""
    kind = dtype.kind
    offsets = (Tag(324, _LONG8, len(level.offsets), struct.pack(f"<{len(level.offsets)}Q",
                                                                *level.offsets))
               if bigtiff else
               Tag(324, _LONG, len(level.offsets), struct.pack(f"<{len(level.offsets)}I",
                                                               *level.offsets)))
    tags = [
        _with(256, _long(level.width)), _with(257, _long(level.height)),
        _with(258, _shorts(*[dtype.itemsize * 8] * bands)), _with(259, _shorts(8)),
        _with(262, _shorts(1)), _with(277, _shorts(bands)), _with(284, _shorts(1)),
        _with(317, _shorts(predictor)), _with(322, _shorts(block_px)),
        _with(323, _shorts(block_px)), offsets,
        Tag(325, _LONG, len(level.byte_counts),
            struct.pack(f"<{len(level.byte_counts)}I", *level.byte_counts)),
        _with(339, _shorts(*[_SAMPLE_FORMAT[kind]] * bands)),
    ]
    if bands > 1:
        tags.append(_with(338, _shorts(*[0] * (bands - 1))))
    if overview:
        tags.append(_with(254, _long(1)))
        tags += [tag for tag in geo if tag.code == _NODATA_TAG]
    else:
        tags += geo
    return sorted(tags, key=lambda tag: tag.code)


def _long(value: int) -> Tag:
    return Tag(0, _LONG, 1, struct.pack("<I", value))


def _ifd_size(tags: list[Tag], bigtiff: bool) -> int:
    """Bytes of an IFD and its out-of-line values (each padded to an even length)."""
    entry, head, inline = (20, 8 + 8, 8) if bigtiff else (12, 2 + 4, 4)
    extra = sum(len(t.value) + len(t.value) % 2 for t in tags if len(t.value) > inline)
    return head + entry * len(tags) + extra


def _encode_ifd(tags: list[Tag], offset: int, next_ifd: int, bigtiff: bool) -> bytes:
    entry_fmt, count_fmt, inline = ("<HHQ", "<Q", 8) if bigtiff else ("<HHI", "<H", 4)
    n = len(tags)
    head = struct.pack(count_fmt, n)
    values_at = offset + len(head) + (20 if bigtiff else 12) * n + (8 if bigtiff else 4)
    entries, values = [], []
    for tag in tags:
        entries.append(struct.pack(entry_fmt, tag.code, tag.type, tag.count))
        if len(tag.value) <= inline:
            entries.append(tag.value.ljust(inline, b"\0"))
        else:
            entries.append(struct.pack("<Q" if bigtiff else "<I", values_at))
            padded = tag.value + b"\0" * (len(tag.value) % 2)
            values.append(padded)
            values_at += len(padded)
    tail = struct.pack("<Q" if bigtiff else "<I", next_ifd)
    return head + b"".join(entries) + tail + b"".join(values)


def header_size(levels_tags: list[list[Tag]], bigtiff: bool) -> int:
    """Bytes before the first tile: header, ghost header and every IFD."""
    return _prefix_size(bigtiff) + sum(_ifd_size(tags, bigtiff) for tags in levels_tags)


def _ghost() -> bytes:
    body = GHOST_HEADER_BODY
    return b"GDAL_STRUCTURAL_METADATA_SIZE=%06d bytes\n" % len(body) + body


def _prefix_size(bigtiff: bool) -> int:
    size = (16 if bigtiff else 8) + len(_ghost())
    return size + size % 2


def encode_header(levels_tags: list[list[Tag]], bigtiff: bool) -> bytes:
    """Header, ghost header and the IFDs (full resolution first), chained."""
    prefix = _prefix_size(bigtiff)
    first = (struct.pack("<2sHHHQ", b"II", 43, 8, 0, prefix) if bigtiff
             else struct.pack("<2sHI", b"II", 42, prefix))
    out = [(first + _ghost()).ljust(prefix, b"\0")]
    offset = prefix
    for k, tags in enumerate(levels_tags):
        size = _ifd_size(tags, bigtiff)
        next_ifd = offset + size if k + 1 < len(levels_tags) else 0
        out.append(_encode_ifd(tags, offset, next_ifd, bigtiff))
        offset += size
    return b"".join(out)
