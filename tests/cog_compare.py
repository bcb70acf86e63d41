"""Two COGs are the same product: same TIFF structure, tags and GDAL header, same pixels tile
by tile, in the same order in the file; only their deflate streams may differ.

Why not the bytes: ISA-L, which encodes the tiles (:mod:`ops.raster.cog_blocks`), has written
another valid stream for the same tile. A two-worker ``make test`` run
(``test_ray_workers_publish_to_s3``, session 15) found the last tile of a Ray-written ortho
18,344 bytes long against 18,338 from the serial run; rerunning that comparison 27 times
beside busy loops found it once more (17,978 bytes), 4 times on a quiet machine never. That
pair's streams decompress to the same 1 MiB of predicted samples, and the serial bytes are what
ISA-L writes for them in any other process here: re-encoded thousands of times, on threads,
after other data, with the heap (MALLOC_PERTURB_) or the stack filled with garbage, the tile
never differed. Yet an ``eochain ortho`` run of the 8000 px benchmark scene (in process,
its kernel calls recorded) wrote one full-resolution tile whose stream, of the same length,
took match distance 31,764 where six plain runs took 31,766, for four runs of 258 zeros.
ISA-L does not promise identical streams (intel/isa-l issue 140), so a product written by
another run is compared by what it holds.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

from ops.raster.cog_layout import Tag, read_ifd

TILE_OFFSETS, TILE_BYTE_COUNTS = 324, 325
_INTS = {3: "H", 4: "I", 16: "Q"}  # SHORT, LONG, LONG8: the types tile offsets and sizes take


@dataclass(frozen=True)
class _Ifd:
    tags: dict[int, Tag]
    offsets: tuple[int, ...]
    counts: tuple[int, ...]


def _ints(tag: Tag) -> tuple[int, ...]:
    values: tuple[int, ...] = struct.unpack(f"<{tag.count}{_INTS[tag.type]}", tag.value)
    return values


def _ifds(data: bytes, name: str) -> tuple[bytes, list[_Ifd]]:
    """The header bytes before the first IFD (GDAL's ghost header) and the IFDs."""
    if data[:4] != b"II*\x00":
        raise AssertionError(f"{name}: not a little-endian classic TIFF "
                             f"(starts {data[:4]!r}; the products compared here are)")
    off = struct.unpack_from("<I", data, 4)[0]
    head = data[:off]
    ifds = []
    while off:
        fields = read_ifd(data, off)
        tags = {tag.code: tag for tag in fields}
        ifds.append(_Ifd(tags, _ints(tags[TILE_OFFSETS]), _ints(tags[TILE_BYTE_COUNTS])))
        off = struct.unpack_from("<I", data, off + 2 + 12 * len(fields))[0]
    return head, ifds


def assert_same_cog(a: bytes | Path, b: bytes | Path) -> None:
    """Fail, naming the first difference, unless ``a`` and ``b`` are the same product."""
    da = a.read_bytes() if isinstance(a, Path) else a
    db = b.read_bytes() if isinstance(b, Path) else b
    na, nb = (str(a) if isinstance(a, Path) else "first",
              str(b) if isinstance(b, Path) else "second")
    head_a, ifds_a = _ifds(da, na)
    head_b, ifds_b = _ifds(db, nb)
    assert head_a == head_b, f"{na} and {nb}: different headers before the first IFD"
    assert len(ifds_a) == len(ifds_b), f"{na}: {len(ifds_a)} IFDs, {nb}: {len(ifds_b)}"
    order_a = sorted((o, k, t) for k, ifd in enumerate(ifds_a) for t, o in enumerate(ifd.offsets))
    order_b = sorted((o, k, t) for k, ifd in enumerate(ifds_b) for t, o in enumerate(ifd.offsets))
    assert [kt[1:] for kt in order_a] == [kt[1:] for kt in order_b], \
        f"{na} and {nb}: tiles in another order in the file"
    for k, (x, y) in enumerate(zip(ifds_a, ifds_b, strict=True)):
        fixed_x = {t: v for t, v in x.tags.items() if t not in (TILE_OFFSETS, TILE_BYTE_COUNTS)}
        fixed_y = {t: v for t, v in y.tags.items() if t not in (TILE_OFFSETS, TILE_BYTE_COUNTS)}
        for tag in sorted(fixed_x.keys() | fixed_y.keys()):
            assert fixed_x.get(tag) == fixed_y.get(tag), f"IFD {k}: tag {tag} differs"
        for t, (oa, ca, ob, cb) in enumerate(zip(x.offsets, x.counts, y.offsets, y.counts,
                                                 strict=True)):
            # GDAL's COG block leader (the size, before the tile) in both
            for data, o, c, name in ((da, oa, ca, na), (db, ob, cb, nb)):
                if c:
                    assert struct.unpack_from("<I", data, o - 4)[0] == c, \
                        f"{name}: IFD {k} tile {t} without its size before it"
            assert zlib.decompress(da[oa:oa + ca]) == zlib.decompress(db[ob:ob + cb]), \
                f"IFD {k} tile {t}: different pixels"
