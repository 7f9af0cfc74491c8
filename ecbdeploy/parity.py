"""Stage-by-stage parity on real photographs: every runner's output against the multi-branch
PyTorch model, plus Y-PSNR against the HR ground truth and against bicubic (NOTES §3)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .arch import ArchSpec
from .images import HELD_OUT_PHOTOS, lr_hr_pair, photo, upscale_bicubic_chw
from .metrics import max_abs, psnr, y_psnr


@dataclass
class ParityImage:
    name: str
    lr: np.ndarray  # 1xCxHxW model input (the photo, padded or cropped to the model's input size)
    hr: np.ndarray  # CxsHxsW ground truth of the valid region
    valid: tuple[int, int]  # LR rows/cols that hold the photo (the rest is edge padding)


def fit_to_size(lr: np.ndarray, hr: np.ndarray, hw: tuple[int, int], scale: int):
    """Centre-crop a larger photo, or edge-pad a smaller one, to exactly hw."""
    h, w = lr.shape[1:]
    th, tw = hw
    top, left = max(0, (h - th) // 2), max(0, (w - tw) // 2)
    lr = lr[:, top: top + th, left: left + tw]
    hr = hr[:, top * scale: (top + th) * scale, left * scale: (left + tw) * scale]
    vh, vw = lr.shape[1:]
    lr = np.pad(lr, ((0, 0), (0, th - vh), (0, tw - vw)), mode="edge")
    return lr, hr, (vh, vw)


def parity_images(arch: ArchSpec, hw: tuple[int, int] | None, names=HELD_OUT_PHOTOS) -> list[ParityImage]:
    out = []
    for name in names:
        # 8-bit LR, the only input a uint8 model takes: every stage is fed the same bytes.
        lr, hr = lr_hr_pair(photo(name), arch.scale, arch.colors, arch.pixel_range, eight_bit_lr=True)
        if hw is None:
            out.append(ParityImage(name, lr[None], hr, lr.shape[1:]))
        else:
            lr_fit, hr_fit, valid = fit_to_size(lr, hr, hw, arch.scale)
            out.append(ParityImage(name, lr_fit[None].copy(), hr_fit, valid))
    return out


def valid_output(y: np.ndarray, img: ParityImage, scale: int) -> np.ndarray:
    return y[0, :, : img.valid[0] * scale, : img.valid[1] * scale]


def run_all(runner, images: list[ParityImage]) -> list[np.ndarray]:
    return [runner(img.lr) for img in images]


def compare(outputs: list[np.ndarray], references: list[np.ndarray], images: list[ParityImage],
            arch: ArchSpec) -> dict:
    """Parity (max abs error, PSNR between outputs) and quality (Y-PSNR vs HR) figures."""
    s, pr = arch.scale, arch.pixel_range
    per_image = []
    for y, ref, img in zip(outputs, references, images):
        yv, rv = valid_output(y, img, s), valid_output(ref, img, s)
        per_image.append({
            "image": img.name,
            "max_abs_error": max_abs(yv, rv),
            "psnr_vs_reference": psnr(yv, rv, pr),
            "y_psnr_vs_hr": y_psnr(yv, img.hr, pr, s),
        })
    worst = max(p["max_abs_error"] for p in per_image)
    return {
        "max_abs_error": worst,
        "max_abs_error_relative": worst / pr,
        "min_psnr_vs_reference": min(p["psnr_vs_reference"] for p in per_image),
        "mean_y_psnr_vs_hr": float(np.mean([p["y_psnr_vs_hr"] for p in per_image])),
        "per_image": per_image,
    }


def bicubic_quality(images: list[ParityImage], arch: ArchSpec) -> dict:
    s, pr = arch.scale, arch.pixel_range
    per_image = []
    for img in images:
        lr = img.lr[0, :, : img.valid[0], : img.valid[1]]
        per_image.append({"image": img.name, "y_psnr_vs_hr": y_psnr(upscale_bicubic_chw(lr, s), img.hr, pr, s)})
    return {"mean_y_psnr_vs_hr": float(np.mean([p["y_psnr_vs_hr"] for p in per_image])), "per_image": per_image}
