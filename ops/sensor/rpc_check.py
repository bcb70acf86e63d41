"""Does an RPC model describe this image? Checks made before any pixel is mapped.

An RPC describes the pixels of one *product*; eochain applies it to a file,
which may be the product, a crop of it (crop origin stated by the file's
geotransform, see :mod:`ops.sensor.rpc_io`), or something else. A wrong pairing
gives a plausible ortho kilometres away, so :func:`check_rpc_fits` refuses
three cases, each with the reason and the fix:

* **Crop of unknown origin.** The image states no origin, the model comes
  from a sidecar (not from the image's own metadata), and the image spans
  less than :data:`FULL_PRODUCT_MIN_FRACTION` of the rows or columns the
  model describes: it is a crop of the product (its geotransform stripped,
  or saved as PNG), and where it sits in the product is unknown. A model
  describes ``min(2 * LINE_SCALE, 2 * LINE_OFF + 1)`` rows (the box, or twice
  the distance to its centre when the box is padded, as DigitalGlobe's are);
  likewise columns. A cropped RPC (offsets at the crop's centre) or a stated
  origin resolves it.
* **Outside the box.** The image's pixels, placed at their origin in the
  product, reach beyond the model's validity box (``OFF +- SCALE``) by more
  than :data:`BOX_TOLERANCE_FRACTION` of the scale (and a pixel): a wrong
  origin, or the wrong product's RPC.
* **A map given as raw.** The image is georeferenced (a CRS and a
  geotransform): an ortho or map product. Its corners, taken to lon/lat and
  projected through the model at its mean height, must land on its own
  corners within :data:`MAP_CORNER_TOLERANCE_FRACTION` of the image diagonal
  (a product whose RPC was fitted to its map grid passes); otherwise it is
  an ortho given where a raw sensor image is expected.

:func:`rpc_disagreement_px` compares two models of one image: the largest
pixel distance between their projections of a 5 x 5 x 3 grid of ground
points over the first model's box (the sources then conflict beyond
:data:`SOURCES_AGREE_PX`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ops.errors import RpcFitError
from ops.raster.crs import lonlat_transformer
from ops.sensor.rpc import FloatArray, RpcModel, rpc00b_terms

#: A crop without origin may span at most this share of the product's rows or columns.
FULL_PRODUCT_MIN_FRACTION = 0.9
#: Pixels may reach past the model's box by this share of its scale (and one pixel): real
#: boxes are not always fitted over the whole product (SkySat's misses 26 columns).
BOX_TOLERANCE_FRACTION = 0.1
#: A georeferenced image's corners may land this share of its diagonal off (and 5 px).
MAP_CORNER_TOLERANCE_FRACTION = 0.01
#: Two RPC sources of one image agree when their projections differ by at most this.
SOURCES_AGREE_PX = 0.01

Transform6 = tuple[float, float, float, float, float, float]


@dataclass(frozen=True, slots=True)
class ImageFrame:
    """What an image file says about its pixel grid.

    ``origin`` is the crop origin (row, col) in the product when the file
    states one (a no-CRS unit-pixel translation geotransform), else None.
    ``crs`` (WKT) and ``transform`` are the file's map georeferencing, if any.
    """

    path: str
    height: int
    width: int
    origin: tuple[float, float] | None
    crs: str | None
    transform: Transform6

    def __post_init__(self) -> None:
        if self.height < 1 or self.width < 1:
            raise RpcFitError(f"{self.path}: image size {self.height} x {self.width}, "
                              "expected at least 1 x 1 pixels")


def product_extent(model: RpcModel) -> tuple[float, float]:
    """(rows, cols) of the product a model describes (see the module docstring)."""
    rows = min(2.0 * abs(model.line_scale), 2.0 * model.line_off + 1.0)
    cols = min(2.0 * abs(model.samp_scale), 2.0 * model.samp_off + 1.0)
    return rows, cols


def check_rpc_fits(model: RpcModel, frame: ImageFrame, *, from_sidecar: bool,
                   origin_stated: bool) -> None:
    """Raise RpcFitError when ``model`` (origin attached) cannot describe ``frame``'s pixels.

    ``from_sidecar``: the model comes from a file other than the image;
    ``origin_stated``: the crop origin was stated (by the file or the user).
    """
    if frame.crs is not None:
        _check_map_corners(model, frame, frame.crs)
    if from_sidecar and not origin_stated:
        _check_not_a_crop(model, frame)
    _check_inside_box(model, frame)


def _check_not_a_crop(model: RpcModel, frame: ImageFrame) -> None:
    rows, cols = product_extent(model)
    if frame.height >= FULL_PRODUCT_MIN_FRACTION * rows and (
        frame.width >= FULL_PRODUCT_MIN_FRACTION * cols
    ):
        return
    raise RpcFitError(
        f"{frame.path}: image of {frame.height} x {frame.width} px states no crop origin "
        f"(no unit-pixel geotransform), but its RPC {model.source} describes a product of "
        f"about {rows:.0f} x {cols:.0f} px: it is a crop whose place in the product is "
        "unknown, and the ortho would land in the wrong place. Keep the crop's "
        "geotransform origin (gdal_translate -srcwin keeps it as a TIFF), state the "
        "origin (--rpc-origin ROW,COL), or give an RPC cropped to this image"
    )


def _check_inside_box(model: RpcModel, frame: ImageFrame) -> None:
    for axis, first, count, off, scale in (
        ("rows", model.row_origin, frame.height, model.line_off, abs(model.line_scale)),
        ("columns", model.col_origin, frame.width, model.samp_off, abs(model.samp_scale)),
    ):
        lo, hi = first - 0.5, first + count - 0.5  # pixel edges, in product pixels
        slack = BOX_TOLERANCE_FRACTION * scale + 1.0
        if lo >= off - scale - slack and hi <= off + scale + slack:
            continue
        raise RpcFitError(
            f"{frame.path}: its {axis} {lo + 0.5:.0f}..{hi - 0.5:.0f} (product pixels, crop "
            f"origin {model.row_origin:g}, {model.col_origin:g}) reach outside the validity "
            f"box {off - scale:.0f}..{off + scale:.0f} of its RPC {model.source}; expected "
            "the image inside the product the RPC describes (wrong crop origin, or another "
            "product's RPC?)"
        )


def _check_map_corners(model: RpcModel, frame: ImageFrame, crs: str) -> None:
    a, b, c, d, e, f = frame.transform
    rows = np.array([0.0, 0.0, frame.height - 1.0, frame.height - 1.0])
    cols = np.array([0.0, frame.width - 1.0, 0.0, frame.width - 1.0])
    x = a * (cols + 0.5) + b * (rows + 0.5) + c
    y = d * (cols + 0.5) + e * (rows + 0.5) + f
    lon, lat = lonlat_transformer(crs).transform(x, y)
    got_r, got_c = _project_few(model, np.asarray(lon), np.asarray(lat),
                                np.full(4, model.height_off))
    off_px = float(np.nanmax(np.hypot(got_r - rows, got_c - cols))) if np.isfinite(
        got_r).any() else math.inf
    limit = MAP_CORNER_TOLERANCE_FRACTION * math.hypot(frame.height, frame.width) + 5.0
    if off_px <= limit:
        return
    raise RpcFitError(
        f"{frame.path}: image is georeferenced (a map CRS and geotransform: an ortho or "
        f"map product), and its RPC {model.source} puts its corners {off_px:.0f} px from "
        "where they are; expected a raw sensor image (the RPC describes the raw product, "
        "not this map)"
    )


def rpc_disagreement_px(a: RpcModel, b: RpcModel) -> float:
    """Largest (row, col) distance between two models' projections over ``a``'s box."""
    t = np.linspace(-1.0, 1.0, 5)
    lon_n, lat_n, h_n = np.meshgrid(t, t, np.array([-1.0, 0.0, 1.0]), indexing="ij")
    lon = a.lon_off + a.lon_scale * lon_n.ravel()
    lat = a.lat_off + a.lat_scale * lat_n.ravel()
    h = a.height_off + a.height_scale * h_n.ravel()
    ra, ca = _project_few(a, lon, lat, h)
    rb, cb = _project_few(b, lon, lat, h)
    with np.errstate(all="ignore"):
        diff = np.hypot(ra - rb, ca - cb)
    return math.inf if not np.isfinite(diff).all() else float(diff.max())


def _project_few(model: RpcModel, lon: FloatArray, lat: FloatArray, h: FloatArray
                 ) -> tuple[FloatArray, FloatArray]:
    """:meth:`RpcModel.project` (no checks) in plain numpy: for a few points, starting the
    parallel kernel's threads costs more than the arithmetic."""
    lon_n, lat_n, h_n = model.normalise(lon, lat, h, check=False)
    terms = np.stack(rpc00b_terms(lon_n, lat_n, h_n))
    with np.errstate(all="ignore"):
        row = (np.asarray(model.line_num) @ terms) / (np.asarray(model.line_den) @ terms)
        col = (np.asarray(model.samp_num) @ terms) / (np.asarray(model.samp_den) @ terms)
    return (row * model.line_scale + model.line_off - model.row_origin,
            col * model.samp_scale + model.samp_off - model.col_origin)
