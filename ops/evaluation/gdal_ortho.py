"""GDAL's RPC warper on an eochain output grid: the accuracy reference and the speed baseline.

``gdalwarp -rpc -to RPC_DEM=dem.tif -r bilinear`` is what users of the field
compare an ortho against. The rasterio wheel ships GDAL but not the
``gdalwarp`` CLI, so this calls the same warper through
``rasterio.warp.reproject`` with ``rpcs=`` and ``RPC_DEM=``:

* the RPC handed to GDAL is :meth:`RpcModel.to_rasterio` (crop origin folded
  in), so GDAL warps the crop file itself;
* the DEM handed to GDAL is the very grid eochain samples (ellipsoidal
  heights of :class:`ops.terrain.dem.Dem`, geoid folded in) written as a float32
  GeoTIFF, so both sample the same heights bilinearly;
* ``tolerance`` is GDAL's approximation error threshold in input pixels
  (gdalwarp's ``-et``, default 0.125): 0 evaluates the exact transformer at
  every pixel (accuracy reference), 0.125 is what a default gdalwarp does
  (speed baseline).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio
import rasterio.warp
from numpy.typing import NDArray
from rasterio.enums import Resampling

from ops.ortho.heights import DemLike
from ops.sensor.rpc import RpcModel
from planner.geometry.grid import GeoBox

GDAL_RESAMPLING = {"bilinear": Resampling.bilinear, "bicubic": Resampling.cubic}


def write_dem_geotiff(dem: DemLike, path: str | Path) -> Path:
    """The DEM's ellipsoidal node heights as a float32 GeoTIFF GDAL can use as RPC_DEM."""
    path = Path(path)
    heights = np.asarray(dem.heights_m, dtype=np.float32)
    with rasterio.open(
        path, "w", driver="GTiff", height=heights.shape[0], width=heights.shape[1], count=1,
        dtype="float32", crs=dem.crs, transform=rasterio.Affine(*dem.transform), nodata=np.nan,
    ) as dst:
        dst.write(heights, 1)
    return path


def gdal_ortho(
    image: str | Path,
    rpc: RpcModel,
    dem_tif: str | Path,
    geobox: GeoBox,
    *,
    resampling: str = "bilinear",
    tolerance: float = 0.0,
    num_threads: int = 1,
    dst_nodata: float = 0.0,
) -> NDArray[np.generic]:
    """GDAL's RPC ortho of ``image`` on ``geobox`` as (bands, rows, cols)."""
    with rasterio.open(image) as src:
        source = src.read()
    out = np.full((source.shape[0], geobox.height, geobox.width), dst_nodata, dtype=source.dtype)
    rasterio.warp.reproject(
        source=source,
        destination=out,
        rpcs=rpc.to_rasterio(),
        src_crs="EPSG:4326",
        dst_transform=rasterio.Affine(*geobox.transform),
        dst_crs=geobox.crs,
        dst_nodata=dst_nodata,
        resampling=GDAL_RESAMPLING[resampling],
        num_threads=num_threads,
        tolerance=tolerance,
        RPC_DEM=str(dem_tif),
        RPC_DEMINTERPOLATION="bilinear",
        XSCALE=1, YSCALE=1,
    )
    return out
