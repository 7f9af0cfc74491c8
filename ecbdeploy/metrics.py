"""Image quality figures: the SR papers' protocol (Y channel, border crop, 0-255 scale) and
output-vs-output parity."""

from __future__ import annotations

import numpy as np


def psnr(a: np.ndarray, b: np.ndarray, data_range: float) -> float:
    """PSNR in dB; inf when identical."""
    mse = float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))
    return float("inf") if mse == 0 else 10.0 * np.log10(data_range * data_range / mse)


def max_abs(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


def to_y255(chw: np.ndarray, pixel_range: float) -> np.ndarray:
    """A CxHxW model output in its pixel range -> the BT.601 Y channel on the 0-255 scale.

    1-colour models already work on Y; RGB outputs are clipped and converted.
    """
    from .images import rgb_to_y255

    x = np.asarray(chw, np.float64) / pixel_range
    if x.shape[0] == 1:
        return np.clip(x[0], 0.0, 1.0) * 255.0
    return rgb_to_y255(np.clip(np.transpose(x, (1, 2, 0)), 0.0, 1.0)).astype(np.float64)


def shave(img: np.ndarray, border: int) -> np.ndarray:
    return img[border:-border, border:-border] if border > 0 else img


def y_psnr(sr_chw: np.ndarray, hr_chw: np.ndarray, pixel_range: float, border: int) -> float:
    """Y-channel PSNR on the 0-255 scale with `border` pixels cropped (usually the scale)."""
    sr = np.rint(to_y255(sr_chw, pixel_range))  # outputs are quantised to 8 bits as an image would be
    hr = to_y255(hr_chw, pixel_range)
    return psnr(shave(sr, border), shave(hr, border), 255.0)


def y_ssim(sr_chw: np.ndarray, hr_chw: np.ndarray, pixel_range: float, border: int) -> float:
    from skimage.metrics import structural_similarity

    sr = np.rint(to_y255(sr_chw, pixel_range))
    hr = to_y255(hr_chw, pixel_range)
    return float(structural_similarity(shave(sr, border), shave(hr, border), data_range=255.0,
                                       gaussian_weights=True, sigma=1.5, use_sample_covariance=False))
