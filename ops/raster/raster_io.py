"""Raster I/O for kernels: metadata, windowed reads, atomic Cloud-Optimized GeoTIFF writes.

Reading follows "plan what to read, then read it": a kernel declares a
:class:`planner.geometry.grid.Window` and :func:`read_window` reads exactly that,
every band, as a (bands, rows, cols) array. Failures (missing file, not a
raster, a truncated TIFF whose strips cannot be decoded) become
:class:`ops.errors.RasterReadError` naming the file and the window.

Writing streams tiles into a COG without a second pass over the image.
:class:`CogWriter` receives tiles in any order and cuts them into 512 px
blocks. A block is encoded (TIFF predictor, deflate) on a thread pool as
soon as all its pixels have arrived, while the caller computes the next
tile, and averaged 2x2 into its overview block, which is encoded in turn
once its children are: the overview pyramid (down to one block) is built
from the blocks in memory, never read back from the file. Encoded blocks
are appended, in row-major order per level, to hidden scratch files beside
the destination; on a clean exit the COG is assembled (GDAL's layout, see
:mod:`ops.raster.cog_layout`) in a hidden file and renamed onto the destination.
On an exception every scratch file is removed and the destination is left
as it was: a reader never sees a partial product. Memory: the blocks not
yet complete plus encoded blocks waiting for their turn, which for tiles
written row by row (as :func:`ops.ortho.orthorectify.orthorectify` does) is about one
row of tiles.

Codec, measured by ``python -m benchmarks.ortho --size 8000 --parts codecs``
(``codecs`` in ``benchmarks/results/ortho.json``: the 324 full blocks of a
92.7 Mpx uint16 ortho, one thread; the figures below from session 8's machine,
where the file now holds those of a slower one: ISA-L level 1 at 319 MB/s,
GDAL's DEFLATE at 61 MB/s, the same sizes): DEFLATE with the horizontal predictor (2; the
floating-point predictor 3 for floats), encoded by ISA-L at level 1, 575
MB/s for 81.7 MB (its level 2 makes 79.8 MB, 2.4 % less, at 480 MB/s: the
whole ``eochain ortho`` spends 0.1 s more of its ~2.3 s on one core for it;
level 0 makes 108 MB, no faster), where GDAL's default DEFLATE (libdeflate level 6) makes
78.6 MB at 73 MB/s and zlib's level 6 78.7 MB at 25 MB/s; GDAL's ZSTD level
1 makes 83.3 MB at 385 MB/s, its LZW 91.7 MB at 52 MB/s. DEFLATE is the zlib
format every TIFF reader decodes (GDAL >= 1.x, QGIS, geotiff.js, rio-tiler);
ZSTD needs a reader built with libzstd.

Overviews are GDAL's AVERAGE (:mod:`ops.raster.cog_blocks`): identical to GDAL's
COG driver wherever each level halves exactly. Where a level has an odd
size, GDAL spreads the ratio (e.g. 9591/4796 pixels) along the row while
eochain averages the aligned 2x2 pixels, the last overview pixel covering
the last pixel alone.
"""

from __future__ import annotations

import os
import shutil
import struct
import uuid
import warnings
from collections import deque
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO, Self

import numpy as np
import rasterio
from numpy.typing import NDArray
from rasterio.errors import NotGeoreferencedWarning, RasterioError
from rasterio.windows import Window as RioWindow

from ops.errors import GeometryError, RasterReadError, RasterWriteError
from ops.raster.cog_blocks import PREDICTOR, average_into, encode_block
from ops.raster.cog_layout import (
    LevelLayout,
    Tag,
    encode_header,
    header_size,
    level_tags,
    template_tags,
)
from planner.geometry.grid import GeoBox, Window

COG_BLOCK_PX = 512


@dataclass(frozen=True, slots=True)
class RasterInfo:
    """What a kernel needs to know about a raster before reading it."""

    path: str
    height: int
    width: int
    count: int
    dtype: str
    nodata: float | None
    descriptions: tuple[str | None, ...]

    @property
    def shape(self) -> tuple[int, int]:
        return self.height, self.width


def raster_info(path: str | Path) -> RasterInfo:
    """Shape, band count, dtype, nodata and band descriptions of a raster file."""
    try:
        with warnings.catch_warnings():
            # a raw sensor image has no geotransform: that is normal, not worth a warning
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            src = rasterio.open(path)
        with src:
            return RasterInfo(
                str(path),
                src.height,
                src.width,
                src.count,
                str(src.dtypes[0]),
                None if src.nodata is None else float(src.nodata),
                tuple(src.descriptions),
            )
    except RasterioError as exc:
        raise RasterReadError(f"{path}: cannot open as a raster ({exc}); expected a GeoTIFF") from exc


class WindowReader:
    """A raster opened once for many windowed reads (``with WindowReader(path) as src``)."""

    def __init__(self, path: str | Path) -> None:
        self.path = path
        self._src: rasterio.io.DatasetReader | None = None

    def __enter__(self) -> Self:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", NotGeoreferencedWarning)  # raw images have none
                self._src = rasterio.open(self.path)
        except RasterioError as exc:
            raise RasterReadError(
                f"{self.path}: cannot open as a raster ({exc}); expected a GeoTIFF") from exc
        return self

    def __exit__(self, *exc: object) -> None:
        if self._src is not None:
            self._src.close()
            self._src = None

    def read(self, window: Window) -> NDArray[np.generic]:
        """Every band of ``window`` (inside the raster) as a (bands, rows, cols) array."""
        src = self._src
        if src is None:
            raise RasterReadError(f"{self.path}: read() outside the reader's `with` block")
        if window.clip(src.height, src.width) != window:
            raise GeometryError(
                f"{self.path}: window {window} is not inside the {src.height}x{src.width} raster"
            )
        try:
            data: NDArray[np.generic] = src.read(
                window=RioWindow(window.col_off, window.row_off, window.width, window.height)
            )
        except RasterioError as exc:
            raise RasterReadError(
                f"{self.path}: cannot read window {window} ({exc}); the file may be truncated "
                "or corrupt"
            ) from exc
        return data


def read_window(path: str | Path, window: Window) -> NDArray[np.generic]:
    """Every band of ``window`` (inside the raster) as a (bands, rows, cols) array."""
    with WindowReader(path) as src:
        return src.read(window)


def _scratch_path(dest: Path, tag: str) -> Path:
    return dest.with_name(f".{dest.name}.{tag}-{uuid.uuid4().hex[:8]}.tmp.tif")


#: ISA-L deflate level of every block (0-3); see the module docstring.
DEFLATE_LEVEL = 1
#: Largest file a classic TIFF addresses (32-bit offsets); larger COGs are BigTIFF.
CLASSIC_TIFF_MAX_BYTES = 2**32 - 1


def overview_shapes(height: int, width: int, block_px: int = COG_BLOCK_PX
                    ) -> list[tuple[int, int]]:
    """(height, width) of full resolution then each overview, halving down to one block."""
    shapes = [(height, width)]
    while max(shapes[-1]) > block_px:
        h, w = shapes[-1]
        shapes.append(((h + 1) // 2, (w + 1) // 2))
    return shapes


class _Level:
    """One resolution level's blocks: being filled, being encoded, or in its scratch file."""

    def __init__(self, index: int, height: int, width: int, path: Path) -> None:
        self.index, self.height, self.width, self.path = index, height, width, path
        self.block_rows = -(-height // COG_BLOCK_PX)
        self.block_cols = -(-width // COG_BLOCK_PX)
        self.buffers: dict[int, NDArray[Any]] = {}
        self.received: dict[int, int] = {}  # band-pixels (full resolution) or children done
        self.submitted: set[int] = set()
        self.encoded: dict[int, bytes] = {}
        self.next_block = 0
        self.offsets: list[int] = []
        self.byte_counts: list[int] = []
        self.size = 0
        self.file: BinaryIO = open(path, "wb")  # noqa: SIM115 (the writer closes it)

    @property
    def n_blocks(self) -> int:
        return self.block_rows * self.block_cols

    def valid_shape(self, flat: int) -> tuple[int, int]:
        """Rows and columns of block ``flat`` that lie inside the level."""
        r, c = divmod(flat, self.block_cols)
        return (min(COG_BLOCK_PX, self.height - r * COG_BLOCK_PX),
                min(COG_BLOCK_PX, self.width - c * COG_BLOCK_PX))

    def children(self, flat: int, child: _Level) -> int:
        """How many blocks of the level below average into block ``flat``."""
        r, c = divmod(flat, self.block_cols)
        return min(2, child.block_rows - 2 * r) * min(2, child.block_cols - 2 * c)

    def flush(self) -> None:
        """Append the encoded blocks next in row-major order: size, data, last 4 bytes."""
        while self.next_block in self.encoded:
            data = self.encoded.pop(self.next_block)
            self.file.write(struct.pack("<I", len(data)))
            self.file.write(data)
            self.file.write(data[-4:])
            self.offsets.append(self.size + 4)
            self.byte_counts.append(len(data))
            self.size += len(data) + 8
            self.next_block += 1


class CogWriter:
    """Write a product tile by tile, then publish it atomically as a COG.

    Use as a context manager::

        with CogWriter(dest, geobox, count=1, dtype="uint16", nodata=0) as out:
            out.write(window, tile)          # (bands, rows, cols), any order

    Each pixel is written at most once; pixels never written are nodata (0
    without nodata). ``workers`` threads encode blocks (default: as many as
    the cores this process may run on).
    """

    def __init__(
        self,
        dest: str | Path,
        geobox: GeoBox,
        *,
        count: int,
        dtype: str,
        nodata: float | None,
        descriptions: tuple[str | None, ...] | None = None,
        crs: str | None = None,
        units: tuple[str | None, ...] | None = None,
        tags: Mapping[str, str] | None = None,
        deflate_level: int = DEFLATE_LEVEL,
        workers: int | None = None,
    ) -> None:
        self.dest = Path(dest)
        # what the file states beyond the grid: a 3D/compound CRS (the geobox's CRS
        # promoted to heights), band units and the product's EOCHAIN_* tags
        self.crs = crs or geobox.crs
        self.units = units
        self.tags = dict(tags or {})
        self.geobox = geobox
        self.count = count
        self.dtype = np.dtype(dtype).newbyteorder("<")
        self.nodata = nodata
        self.descriptions = descriptions
        self.deflate_level = deflate_level
        if self.dtype.kind not in PREDICTOR:
            raise RasterWriteError(
                f"{self.dest}: dtype {self.dtype.name}, expected an integer or float type")
        if not 0 <= deflate_level <= 3:
            raise RasterWriteError(
                f"{self.dest}: deflate level {deflate_level}, expected 0 to 3 (ISA-L levels)")
        self.workers = workers or len(os.sched_getaffinity(0))
        self._cog = _scratch_path(self.dest, "cog")
        self._levels: list[_Level] = []
        self._pool: ThreadPoolExecutor | None = None
        self._inflight: deque[tuple[_Level, int, Future[bytes]]] = deque()
        # Block buffers are recycled: fresh 512 px arrays cost page faults.
        self._free: list[NDArray[Any]] = []
        self._max_inflight = 2 * self.workers + 2

    def __enter__(self) -> Self:
        if not self.dest.parent.is_dir():
            raise RasterWriteError(
                f"{self.dest}: the folder {self.dest.parent} does not exist; create it first"
            )
        try:
            for k, (h, w) in enumerate(overview_shapes(*self.geobox.shape)):
                self._levels.append(_Level(k, h, w, _scratch_path(self.dest, f"L{k}")))
        except OSError as exc:
            self._discard()
            raise RasterWriteError(f"{self.dest}: cannot create a scratch file ({exc})") from exc
        self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="cog")
        return self

    def write(self, window: Window, data: NDArray[np.generic], band: int | None = None) -> None:
        """Write a (bands, rows, cols) tile at ``window`` of the geobox; with ``band``, a
        (1, rows, cols) tile of that band alone (0-based; a block is complete once
        every band of its pixels has arrived).

        A tile may arrive in pieces, each written once: a tile that travelled
        between processes in row bands is written band by band, without first
        joining it into one array.
        """
        if self._pool is None:
            raise RasterWriteError(f"{self.dest}: write() outside the writer's `with` block")
        if band is not None and not 0 <= band < self.count:
            raise GeometryError(
                f"{self.dest}: band {band} written, expected 0 to {self.count - 1}")
        bands = self.count if band is None else 1
        expected = (bands, window.height, window.width)
        if data.shape != expected:
            raise GeometryError(
                f"{self.dest}: tile of shape {data.shape} for window {window}, expected {expected}"
            )
        if window.clip(*self.geobox.shape) != window:
            raise GeometryError(
                f"{self.dest}: window {window} is not inside the {self.geobox.height}x"
                f"{self.geobox.width} product"
            )
        level, b = self._levels[0], COG_BLOCK_PX
        for br in range(window.row_off // b, (window.row_stop - 1) // b + 1):
            r0, r1 = max(window.row_off, br * b), min(window.row_stop, (br + 1) * b)
            for bc in range(window.col_off // b, (window.col_stop - 1) // b + 1):
                c0, c1 = max(window.col_off, bc * b), min(window.col_stop, (bc + 1) * b)
                flat = br * level.block_cols + bc
                if flat in level.submitted:
                    raise RasterWriteError(
                        f"{self.dest}: window {window} writes pixels of block ({br}, {bc}) "
                        "again; expected each pixel written once"
                    )
                part = data[:, r0 - window.row_off:r1 - window.row_off,
                            c0 - window.col_off:c1 - window.col_off]
                block = self._buffer(level, flat)
                target = block[r0 - br * b:r1 - br * b, c0 - bc * b:c1 - bc * b]
                if band is None:
                    target[...] = np.moveaxis(part, 0, -1)
                else:
                    target[..., band] = part[0]
                # band-pixels: each band of each pixel written once
                level.received[flat] = level.received.get(flat, 0) + (r1 - r0) * (c1 - c0) * bands
                rows, cols = level.valid_shape(flat)
                if level.received[flat] >= rows * cols * self.count:
                    self._submit(level, flat)
        # Back-pressure: a few blocks per worker in flight bound the memory.
        self._collect(wait=False)
        while len(self._inflight) > self._max_inflight:
            self._collect(wait=True)

    def _buffer(self, level: _Level, flat: int) -> NDArray[Any]:
        block = level.buffers.get(flat)
        if block is None:
            fill = 0 if self.nodata is None else self.nodata
            if self._free:
                block = self._free.pop()
                block.fill(fill)
            else:
                block = np.full((COG_BLOCK_PX, COG_BLOCK_PX, self.count), fill, dtype=self.dtype)
            level.buffers[flat] = block
        return block

    def _submit(self, level: _Level, flat: int) -> None:
        """Hand a complete block to the pool, which averages it into its parent and encodes it."""
        if self._pool is None:
            raise RasterWriteError(f"{self.dest}: block submitted after the writer closed")
        block = self._buffer(level, flat)
        del level.buffers[flat]
        level.received.pop(flat, None)
        level.submitted.add(flat)
        parent = None
        if level.index + 1 < len(self._levels):
            up = self._levels[level.index + 1]
            r, c = divmod(flat, level.block_cols)
            half = COG_BLOCK_PX // 2
            parent = (self._buffer(up, (r // 2) * up.block_cols + c // 2),
                      (r % 2) * half, (c % 2) * half)
        future = self._pool.submit(self._encode, block, level.valid_shape(flat), parent)
        future.add_done_callback(lambda _: self._recycle(block))
        self._inflight.append((level, flat, future))

    def _recycle(self, block: NDArray[Any]) -> None:
        if len(self._free) < self._max_inflight:
            self._free.append(block)

    def _encode(self, block: NDArray[Any], shape: tuple[int, int],
                parent: tuple[NDArray[Any], int, int] | None) -> bytes:
        # Runs on a pool thread; parents' quarters are disjoint, so no lock is needed.
        if parent is not None:
            target, r0, c0 = parent
            average_into(block, shape[0], shape[1], target, r0, c0, self.nodata)
        return encode_block(block, self.deflate_level)  # the block is spent after this

    def _collect(self, *, wait: bool) -> None:
        """Record finished encodings (first waiting for the oldest if asked), flush in order."""
        if wait and self._inflight:
            self._inflight[0][2].result()
        pending: deque[tuple[_Level, int, Future[bytes]]] = deque()
        while self._inflight:
            level, flat, future = self._inflight.popleft()
            if not future.done():
                pending.append((level, flat, future))
                continue
            level.encoded[flat] = future.result()
            if level.index + 1 < len(self._levels):
                up = self._levels[level.index + 1]
                r, c = divmod(flat, level.block_cols)
                parent = (r // 2) * up.block_cols + c // 2
                up.received[parent] = up.received.get(parent, 0) + 1
                if up.received[parent] == up.children(parent, level):
                    self._submit(up, parent)
        self._inflight.extend(pending)
        for level in self._levels:
            level.flush()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if exc_type is None and self._pool is not None:
                self._finish_levels()
                self._publish()
        finally:
            if self._pool is not None:
                self._pool.shutdown(wait=True, cancel_futures=True)
                self._pool = None
            self._discard()

    def _finish_levels(self) -> None:
        """Encode the blocks never fully written (nodata elsewhere), level by level."""
        for level in self._levels:
            for flat in range(level.n_blocks):
                if flat not in level.submitted:
                    self._submit(level, flat)
            while self._inflight:
                self._collect(wait=True)
            if level.next_block != level.n_blocks:
                raise RasterWriteError(
                    f"{self.dest}: level {level.index} has {level.next_block} of "
                    f"{level.n_blocks} blocks written (internal error)"
                )

    def _publish(self) -> None:
        geo = template_tags(self.geobox, crs=self.crs, count=self.count, dtype=self.dtype.name,
                            nodata=self.nodata, descriptions=self.descriptions,
                            units=self.units, tags=self.tags)
        levels = self._levels

        def ifds(bases: list[int], bigtiff: bool) -> list[list[Tag]]:
            return [
                level_tags(
                    LevelLayout(lv.width, lv.height, tuple(base + off for off in lv.offsets),
                                tuple(lv.byte_counts)),
                    overview=lv.index > 0, bands=self.count, dtype=self.dtype,
                    predictor=PREDICTOR[self.dtype.kind], block_px=COG_BLOCK_PX, geo=geo,
                    bigtiff=bigtiff)
                for lv, base in zip(levels, bases, strict=True)
            ]

        zeros = [0] * len(levels)
        data_bytes = sum(lv.size for lv in levels)
        bigtiff = header_size(ifds(zeros, False), False) + data_bytes > CLASSIC_TIFF_MAX_BYTES
        start = header_size(ifds(zeros, bigtiff), bigtiff)
        bases, at = zeros[:], start
        for lv in reversed(levels):  # the smallest overview's tiles come first
            bases[lv.index] = at
            at += lv.size
        header = encode_header(ifds(bases, bigtiff), bigtiff)
        if len(header) != start:
            raise RasterWriteError(f"{self.dest}: COG header of {len(header)} bytes, expected "
                                   f"{start} (internal layout error)")
        try:
            with open(self._cog, "wb") as out:
                out.write(header)
                for lv in reversed(levels):
                    lv.file.flush()
                    _append_file(lv.path, out)
        except OSError as exc:
            raise RasterWriteError(f"{self.dest}: cannot write the COG ({exc})") from exc
        os.replace(self._cog, self.dest)

    def _discard(self) -> None:
        for level in self._levels:
            level.file.close()
            level.path.unlink(missing_ok=True)
        self._cog.unlink(missing_ok=True)


def _append_file(path: Path, out: BinaryIO) -> None:
    """Copy the file at ``path`` to the end of ``out``, inside the kernel where it can."""
    out.flush()
    start = out.tell()
    with open(path, "rb") as src:
        size = os.fstat(src.fileno()).st_size
        done = 0
        try:
            while done < size:
                n = os.copy_file_range(src.fileno(), out.fileno(), size - done, done,
                                       start + done)
                if n == 0:
                    break
                done += n
        except OSError:
            pass  # another file system: copy through user space below
        if done < size:
            src.seek(done)
            out.seek(start + done)
            shutil.copyfileobj(src, out, 16 << 20)
    out.seek(start + size)


def write_cog(
    dest: str | Path,
    data: NDArray[np.generic],
    geobox: GeoBox,
    *,
    nodata: float | None,
    descriptions: tuple[str | None, ...] | None = None,
) -> None:
    """Write a whole (bands, rows, cols) array as a COG, atomically."""
    if data.ndim != 3 or data.shape[1:] != geobox.shape:
        raise GeometryError(
            f"{dest}: array of shape {data.shape}, expected (bands, {geobox.height}, "
            f"{geobox.width})"
        )
    with CogWriter(
        dest, geobox, count=data.shape[0], dtype=data.dtype.name, nodata=nodata,
        descriptions=descriptions,
    ) as out:
        out.write(Window(0, 0, geobox.height, geobox.width), data)
