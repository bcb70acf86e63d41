"""A rectified pair with a known disparity field, from a real image's texture.

For measuring a matcher's sub-pixel error (``python -m benchmarks.stereo
--subpixel``): the texture is upsampled ``UPSAMPLING`` times in Fourier
space (band-limited, so it is a continuous surface), the left view samples
it at (i, j) and the right view at (i, j' + D(i, j')), each pixel the mean
of ``UPSAMPLING``² samples over its footprint (pixel integration, the
detector's own blur), then each view gets independent Gaussian noise. The
true disparity of the left pixel (i, j) is D(i, j') with j' + D(i, j') = j
(solved by fixed-point iteration), in the matcher's convention
left(i, j) ~ right(i, j - d).

D is a smooth random field (Gaussian-filtered noise, ``amplitude_px``
standard deviation, ``correlation_px`` scale) plus a ramp of 1.3 pixels
across the columns, so that every fraction of a pixel occurs.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import scipy.ndimage as ndi
from numpy.typing import NDArray

from ops.errors import GeometryError

FloatArray = NDArray[np.float64]
Float32Array = NDArray[np.float32]

#: Samples per pixel side of the continuous texture.
UPSAMPLING = 4
#: Pixels of the texture kept beyond the pair on every side (room for the disparities).
MARGIN_PX = 8


@dataclass(frozen=True, slots=True)
class WarpedPair:
    """Left and right views (float grey levels) and the true disparity of each left pixel."""

    left: Float32Array
    right: Float32Array
    disparity_px: Float32Array
    inside: NDArray[np.bool_]


def fourier_upsample(image: FloatArray, factor: int) -> FloatArray:
    """``image`` sampled ``factor`` times more densely, its spectrum zero-padded."""
    h, w = image.shape
    spectrum = np.fft.fftshift(np.fft.fft2(image))
    padded = np.zeros((h * factor, w * factor), complex)
    r0, c0 = (h * factor - h) // 2, (w * factor - w) // 2
    padded[r0:r0 + h, c0:c0 + w] = spectrum
    out: FloatArray = np.real(np.fft.ifft2(np.fft.ifftshift(padded))) * factor * factor
    return out


def warped_pair(texture: FloatArray, size_px: int, *, noise_sigma: float = 1.0,
                amplitude_px: float = 3.0, correlation_px: float = 40.0,
                seed: int = 0) -> WarpedPair:
    """A ``size_px``² pair cut from ``texture`` (grey levels), see the module docstring."""
    need = size_px + 2 * MARGIN_PX
    if texture.shape[0] < need or texture.shape[1] < need:
        raise GeometryError(
            f"texture of shape {texture.shape} for a {size_px} px pair; expected at least "
            f"{need} x {need} pixels ({MARGIN_PX} px of margin on every side)")
    rng = np.random.default_rng(seed)
    fine = fourier_upsample(np.asarray(texture[:need, :need], np.float64),
                            UPSAMPLING).astype(np.float32)
    field = ndi.gaussian_filter(rng.standard_normal((size_px, size_px)), correlation_px)
    rows, cols = np.indices((size_px, size_px), dtype=np.float64)
    field = amplitude_px * field / field.std() + 1.3 * cols / size_px

    def integrate(r: FloatArray, c: FloatArray) -> Float32Array:
        acc = np.zeros(r.shape, np.float32)
        for a in range(UPSAMPLING):
            for b in range(UPSAMPLING):
                acc += cv2.remap(fine, (UPSAMPLING * (c + MARGIN_PX) + b).astype(np.float32),
                                 (UPSAMPLING * (r + MARGIN_PX) + a).astype(np.float32),
                                 cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT)
        return acc / np.float32(UPSAMPLING**2)

    left = integrate(rows, cols) + rng.normal(0.0, noise_sigma, rows.shape).astype(np.float32)
    right = integrate(rows, cols + field) + rng.normal(0.0, noise_sigma,
                                                       rows.shape).astype(np.float32)
    at = cols - field
    for _ in range(20):
        at = cols - ndi.map_coordinates(field, [rows, np.clip(at, 0, size_px - 1)], order=1,
                                        mode="nearest")
    truth = ndi.map_coordinates(field, [rows, np.clip(at, 0, size_px - 1)], order=1,
                                mode="nearest")
    inside = (at >= 2) & (at <= size_px - 3)
    return WarpedPair(left, right, truth.astype(np.float32), inside)
