"""Per-block work of the COG writer: TIFF predictors, 2x2 overview averaging, deflate.

A block is a (rows, cols, bands) array: pixel-interleaved, the order of a
TIFF tile's bytes. Everything here runs outside the GIL (numba ``nogil``,
numpy's array arithmetic, ISA-L's deflate), so the writer's threads encode
blocks in parallel while the caller computes the next tile. ISA-L does not
promise one stream per input (a tile has been encoded otherwise in a Ray
worker and in one ``eochain ortho`` run than in every other run, the same
samples either way: ``tests/cog_compare.py``), so two writes of a product
hold the same pixels, not always the same bytes.

Overview averaging (GDAL's AVERAGE for a factor of 2): an overview pixel is
the mean of the valid pixels among the (up to) 2 x 2 pixels below it that lie
inside the image; valid means not nodata (and not NaN for floats); with no
valid pixel it is nodata. Integers round half up (floor(mean + 0.5)),
floats are averaged in float64. Each level is computed from the level above
it, as GDAL's COG driver does.
"""

from __future__ import annotations

import math
from typing import Any

import numba
import numpy as np
from isal import isal_zlib
from numpy.typing import NDArray

#: TIFF predictor per numpy kind: horizontal differencing (2) for integers,
#: floating-point byte-plane differencing (3) for floats.
PREDICTOR = {"u": 2, "i": 2, "f": 3}


@numba.njit(cache=True, nogil=True)
def _average_2x2_int(child: Any, rows: int, cols: int, parent: Any, r0: int, c0: int,
                     nodata: int, has_nodata: bool) -> None:
    """Integer average of the valid pixels of each 2x2, rounded half up: (2 s + n) // 2 n."""
    bands = child.shape[2]
    for b in range(bands):
        for i in range(0, rows, 2):
            i1 = min(i + 1, rows - 1)
            for j in range(0, cols, 2):
                j1 = min(j + 1, cols - 1)
                # Pixels past the edge repeat (i, j) with weight 0.
                v0 = np.int64(child[i, j, b])
                v1 = np.int64(child[i, j1, b])
                v2 = np.int64(child[i1, j, b])
                v3 = np.int64(child[i1, j1, b])
                w1 = np.int64(j1 > j)
                w2 = np.int64(i1 > i)
                w3 = w1 * w2
                if has_nodata:
                    w0 = np.int64(v0 != nodata)
                    w1 *= np.int64(v1 != nodata)
                    w2 *= np.int64(v2 != nodata)
                    w3 *= np.int64(v3 != nodata)
                else:
                    w0 = np.int64(1)
                n = w0 + w1 + w2 + w3
                total = v0 * w0 + v1 * w1 + v2 * w2 + v3 * w3
                if n == 4:
                    parent[r0 + i // 2, c0 + j // 2, b] = (total + 2) >> 2
                elif n == 0:
                    parent[r0 + i // 2, c0 + j // 2, b] = nodata
                else:
                    parent[r0 + i // 2, c0 + j // 2, b] = (2 * total + n) // (2 * n)


@numba.njit(cache=True, nogil=True)
def _average_2x2_int_even(child: Any, parent: Any, r0: int, c0: int, nodata: int) -> None:
    """:func:`_average_2x2_int` with nodata over one band of a whole block of even sides,
    as (rows, cols) arrays.

    Every 2x2 lies inside; the mean of the valid pixels is floor((2 s + n) / 2 n):
    (s + 2) >> 2 for four valid pixels (an arithmetic shift floors, negative sums
    too), else computed in float64 (exact for samples of up to 32 bits:
    |2 s + n| < 2**35, and a non-integer quotient is at least 1/8 from an
    integer). A band at a time, so that a one-band block's rows are contiguous
    (a (rows, cols, bands) block's are strided by a band count known only at
    run time): 0.31 -> 0.16 ms for a block of the 8000 px benchmark's ortho
    against the float64 division for every pixel of the 3-D block (same results).
    """
    rows, cols = child.shape
    for i in range(0, rows, 2):
        top = child[i]
        bottom = child[i + 1]
        out = parent[r0 + i // 2]
        for jj in range(cols // 2):
            v0 = np.int64(top[2 * jj])
            v1 = np.int64(top[2 * jj + 1])
            v2 = np.int64(bottom[2 * jj])
            v3 = np.int64(bottom[2 * jj + 1])
            w0 = np.int64(v0 != nodata)
            w1 = np.int64(v1 != nodata)
            w2 = np.int64(v2 != nodata)
            w3 = np.int64(v3 != nodata)
            n = w0 + w1 + w2 + w3
            total = v0 * w0 + v1 * w1 + v2 * w2 + v3 * w3
            if n == 4:
                out[c0 + jj] = (total + 2) >> 2
            elif n == 0:
                out[c0 + jj] = nodata
            else:
                out[c0 + jj] = math.floor((2.0 * total + n) / (2.0 * n))


@numba.njit(cache=True, nogil=True)
def _average_2x2_float(child: Any, rows: int, cols: int, parent: Any, r0: int, c0: int,
                       nodata: float, has_nodata: bool) -> None:
    """Float average (in float64) of 2x2 valid pixels; NaN is never valid."""
    bands = child.shape[2]
    for i in range(0, rows, 2):
        i1 = min(i + 2, rows)
        for j in range(0, cols, 2):
            j1 = min(j + 2, cols)
            for b in range(bands):
                total = 0.0
                n = 0
                for ii in range(i, i1):
                    for jj in range(j, j1):
                        v = np.float64(child[ii, jj, b])
                        if not (math.isnan(v) or (has_nodata and v == nodata)):
                            total += v
                            n += 1
                parent[r0 + i // 2, c0 + j // 2, b] = nodata if n == 0 else total / n


def average_into(child: NDArray[Any], rows: int, cols: int, parent: NDArray[Any],
                 r0: int, c0: int, nodata: float | None) -> None:
    """Write the 2x2 average of ``child[:rows, :cols]`` at ``parent[r0:, c0:]``."""
    if child.dtype.kind in "iu":
        fill = 0 if nodata is None else int(nodata)
        if (nodata is not None and child.dtype.itemsize <= 4 and (rows, cols) == child.shape[:2]
                and rows % 2 == cols % 2 == 0):
            for b in range(child.shape[2]):
                _average_2x2_int_even(child[:, :, b], parent[:, :, b], r0, c0, fill)
        else:
            _average_2x2_int(child, rows, cols, parent, r0, c0, fill, nodata is not None)
    else:
        _average_2x2_float(child, rows, cols, parent, r0, c0,
                           math.nan if nodata is None else float(nodata), nodata is not None)


def predict(block: NDArray[Any]) -> NDArray[Any]:
    """The block's bytes after the TIFF predictor of its dtype (:data:`PREDICTOR`).

    Integer blocks are differenced in place (and returned); float blocks are
    left as they are and a new array is returned.
    """
    rows, cols, bands = block.shape
    if block.dtype.kind in "iu":
        flat = block.reshape(rows, cols * bands)
        # differences modulo 2**bits, as TIFF decoders add them back; numpy's
        # vectorised subtraction into a temporary is 7x the in-place compiled loop;
        # 64 rows at a time keep the temporary in malloc's reused heap (no page faults)
        for r in range(0, rows, 64):
            part = flat[r:r + 64]
            part[:, bands:] = np.subtract(part[:, bands:], part[:, :-bands])
        return flat
    # Predictor 3 (libtiff fpDiff): each row's samples split into byte planes,
    # most significant first, then bytewise differences with a stride of `bands`.
    size = block.dtype.itemsize
    planes = (block.astype(block.dtype.newbyteorder("<"), copy=False)
              .view(np.uint8).reshape(rows, cols * bands, size)[:, :, ::-1]
              .transpose(0, 2, 1).reshape(rows, size * cols * bands))
    out8 = planes.copy()
    out8[:, bands:] -= planes[:, :-bands]
    return out8


def encode_block(block: NDArray[Any], level: int) -> bytes:
    """One TIFF tile: predictor (in place for integers), then deflate at ISA-L ``level``."""
    data: bytes = isal_zlib.compress(np.ascontiguousarray(predict(block)), level)
    return data
