"""Realistic defects added to a synthetic stereo scene, for measuring a DSM pipeline.

A generated scene (:mod:`ops.synthetic.scene`) is ideal: exact RPCs, identical
radiometry, Lambertian texture everywhere. Real pairs are not, and each
defect below is one a production matcher must survive:

* **pointing error**: the image content of a view is shifted by a constant
  (rows, cols) offset against its RPC (bicubic resampling), as a satellite's
  attitude error displaces a whole scene. Across the epipolar lines it must
  be corrected; along them it becomes a height bias of the pair.
* **radiometric difference**: a view's values go through a gain, an offset
  and a gamma (different sun-sensor geometry, different calibration).
* **shadows**: ground regions (disks in UTM) darkened in every view by
  ``shadow_factor``: same ground, same darkness (views seconds apart), with
  the noise unchanged, so their signal-to-noise ratio drops.
* **water / uniform areas**: ground regions whose value is a constant plus
  noise drawn independently per view: nothing to match, any height found
  there is invented.
* **vegetation**: ground regions whose texture is half the true texture plus
  fine noise drawn independently per view (half the image's standard deviation) (canopies move and are not
  Lambertian): matchable but noisy.
* **occlusions** come with the scene (buildings); ``SceneSpec`` sets how many.

Regions are disks of ``region_radius_m`` centred at seeded random ground
points; each image pixel is classified by the ground point its line of
sight hits (:func:`ops.synthetic.scene.intersect_rays`), so a region sits on the
same ground in every view. The defective views are written beside the
scene's (``view_K_defects.tif``, same profile, tags and RPC).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import rasterio
from numpy.typing import NDArray

from ops.errors import GeometryError
from ops.synthetic.scene import SyntheticScene, intersect_rays

FloatArray = NDArray[np.float64]

#: Region kinds, in the order of the integer labels of :func:`region_labels`.
KINDS = ("shadow", "water", "vegetation")
#: Standard deviation of a view's own fine texture over vegetation, in units of the image's.
VEGETATION_NOISE = 0.5


@dataclass(frozen=True, slots=True)
class DefectSpec:
    """Which defects, how strong; the same spec and seed give the same views."""

    pointing_px: tuple[tuple[float, float], ...] = ()
    gain: tuple[float, ...] = ()
    offset: tuple[float, ...] = ()
    gamma: tuple[float, ...] = ()
    n_shadow: int = 0
    n_water: int = 0
    n_vegetation: int = 0
    region_radius_m: float = 25.0
    shadow_factor: float = 0.25
    noise_sigma: float = 0.004
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.region_radius_m > 0:
            raise GeometryError(f"DefectSpec.region_radius_m = {self.region_radius_m}, "
                                "expected > 0")
        if not 0 < self.shadow_factor <= 1:
            raise GeometryError(f"DefectSpec.shadow_factor = {self.shadow_factor}, "
                                "expected in (0, 1]")
        if min(self.n_shadow, self.n_water, self.n_vegetation) < 0:
            raise GeometryError("DefectSpec region counts must be >= 0")

    @classmethod
    def realistic(cls, n_views: int = 2, seed: int = 0) -> DefectSpec:
        """Every defect at a level seen on real pairs (pointing errors of about a pixel)."""
        rng = np.random.default_rng(seed)
        pointing = tuple((float(rng.uniform(-1.0, 1.0)), float(rng.uniform(-0.8, 0.8)))
                         for _ in range(n_views))
        return cls(
            pointing_px=pointing,
            gain=tuple(float(g) for g in rng.uniform(0.8, 1.2, n_views)),
            offset=tuple(float(o) for o in rng.uniform(-0.03, 0.03, n_views)),
            gamma=tuple(float(g) for g in rng.uniform(0.85, 1.15, n_views)),
            n_shadow=4, n_water=2, n_vegetation=4, seed=seed,
        )


def _regions(scene: SyntheticScene, spec: DefectSpec) -> tuple[FloatArray, NDArray[np.int64]]:
    """Centres (x, y) of the region disks and their kind labels (1 + index in KINDS)."""
    rng = np.random.default_rng(spec.seed + 1000)
    x0, y0, x1, y1 = scene.footprint_utm
    counts = (spec.n_shadow, spec.n_water, spec.n_vegetation)
    n = sum(counts)
    centres = np.column_stack([rng.uniform(x0, x1, n), rng.uniform(y0, y1, n)])
    kinds = np.repeat(np.arange(1, len(KINDS) + 1), counts)
    return centres, kinds


def region_labels(scene: SyntheticScene, spec: DefectSpec, x: FloatArray,
                  y: FloatArray) -> NDArray[np.int64]:
    """Kind label of ground points (0 = no defect, k = KINDS[k - 1]; later kinds win)."""
    centres, kinds = _regions(scene, spec)
    labels = np.zeros(np.shape(x), dtype=np.int64)
    for (cx, cy), kind in zip(centres, kinds, strict=True):
        inside = np.hypot(x - cx, y - cy) <= spec.region_radius_m
        labels[inside] = kind
    return labels


def _per_view(values: tuple[float, ...], k: int, default: float) -> float:
    return values[k] if k < len(values) else default


def apply_defects(scene: SyntheticScene, spec: DefectSpec) -> tuple[Path, ...]:
    """Write the defective views beside the scene's; return their paths."""
    out: list[Path] = []
    gain_img = scene.spec.gain
    for k, path in enumerate(scene.view_paths):
        with rasterio.open(path) as src:
            image = src.read(1).astype(np.float64) / gain_img
        rows, cols = np.mgrid[0 : image.shape[0], 0 : image.shape[1]].astype(np.float64)
        x, y, _ = intersect_rays(scene, k, rows, cols)
        labels = region_labels(scene, spec, np.nan_to_num(x), np.nan_to_num(y))
        rng = np.random.default_rng((spec.seed, k))
        fine = cv2.GaussianBlur(rng.standard_normal(image.shape), (0, 0), 0.7)
        fine *= VEGETATION_NOISE * float(image.std()) / max(float(fine.std()), 1e-12)
        level = float(np.median(image))
        veg = labels == 1 + KINDS.index("vegetation")
        image[veg] = level + 0.5 * (image[veg] - level) + fine[veg]
        water = labels == 1 + KINDS.index("water")
        image[water] = level + rng.normal(0.0, spec.noise_sigma, int(water.sum()))
        shadow = labels == 1 + KINDS.index("shadow")
        image[shadow] = image[shadow] * spec.shadow_factor + rng.normal(
            0.0, spec.noise_sigma, int(shadow.sum())
        )
        dr, dc = spec.pointing_px[k] if k < len(spec.pointing_px) else (0.0, 0.0)
        if dr or dc:
            # content moves by (dr, dc): new(r, c) = old(r - dr, c - dc)
            shift = np.array([[1.0, 0.0, -dc], [0.0, 1.0, -dr]])
            image = cv2.warpAffine(image, shift, image.shape[::-1],
                                   flags=cv2.INTER_CUBIC | cv2.WARP_INVERSE_MAP,
                                   borderMode=cv2.BORDER_REFLECT)
        low = max(float(np.percentile(image, 0.01)), 0.0)
        unit = np.clip(image, low, None)
        gamma = _per_view(spec.gamma, k, 1.0)
        image = _per_view(spec.gain, k, 1.0) * unit**gamma + _per_view(spec.offset, k, 0.0)
        target = path.with_name(f"{path.stem}_defects.tif")
        shutil.copyfile(path, target)
        sidecar = path.with_suffix(".geom")
        if sidecar.exists():
            shutil.copyfile(sidecar, target.with_suffix(".geom"))
        with rasterio.open(target, "r+") as dst:
            dtype = np.dtype(dst.dtypes[0])
            data = image * gain_img
            if dtype.kind in "ui":
                data = np.clip(np.rint(data), np.iinfo(dtype).min, np.iinfo(dtype).max)
            dst.write(data.astype(dtype), 1)
        out.append(target)
    return tuple(out)
