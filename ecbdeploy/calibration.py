"""Calibration data for integer quantisation, prepared exactly like inference input.

Each sample is a bicubic LR crop of the export input size, in the model's pixel range (Y channel
for 1-colour models), NHWC as onnx2tf expects. Without a folder, scikit-image's bundled
photographs are used (never the held-out ones used for quality figures); as they are smaller than
a 540x960 input, their LR versions are tiled into input-sized mosaics.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .arch import ArchSpec
from .errors import EcbDeployError
from .images import TRAIN_PHOTOS, crop_to_multiple, list_images, load_image, make_lr, photos, to_model_input

DEFAULT_CALIB_COUNT = 16


def _lr_chw(rgb01: np.ndarray, arch: ArchSpec) -> np.ndarray:
    hr = crop_to_multiple(rgb01, arch.scale)
    return to_model_input(np.clip(make_lr(hr, arch.scale), 0.0, 1.0), arch.colors, arch.pixel_range)


def from_folder(folder: str | Path, arch: ArchSpec, hw: tuple[int, int], count: int, seed: int = 0) -> np.ndarray:
    files = list_images(folder)
    if not files:
        raise EcbDeployError(f"calibration folder {folder} holds no images (PNG, JPEG, BMP or TIFF)")
    h, w = hw
    need_h, need_w = h * arch.scale, w * arch.scale
    images = []
    for path in files:
        img = load_image(path)
        if img.shape[0] < need_h or img.shape[1] < need_w:
            raise EcbDeployError(
                f"calibration image {path.name} is {img.shape[0]}x{img.shape[1]}; at least {need_h}x{need_w} "
                f"is needed for a {h}x{w} input at x{arch.scale} (or export with a smaller --input-size)"
            )
        images.append(img)
    rng = np.random.default_rng(seed)
    samples = []
    for i in range(count):
        img = images[i % len(images)]
        top = int(rng.integers(0, img.shape[0] - need_h + 1))
        left = int(rng.integers(0, img.shape[1] - need_w + 1))
        samples.append(_lr_chw(img[top: top + need_h, left: left + need_w], arch))
    return np.stack(samples).transpose(0, 2, 3, 1).astype(np.float32)


def mosaic(tiles: list[np.ndarray], hw: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """Fill an HxW canvas with CxhXw tiles laid in rows, in random order with random offsets."""
    h, w = hw
    canvas = np.zeros((tiles[0].shape[0], h, w), np.float32)
    y = 0
    while y < h:
        x, row_h = 0, 0
        while x < w:
            tile = tiles[int(rng.integers(len(tiles)))]
            th, tw = min(tile.shape[1], h - y), min(tile.shape[2], w - x)
            oy = int(rng.integers(0, tile.shape[1] - th + 1))
            ox = int(rng.integers(0, tile.shape[2] - tw + 1))
            canvas[:, y: y + th, x: x + tw] = tile[:, oy: oy + th, ox: ox + tw]
            x, row_h = x + tw, max(row_h, th)
        y += row_h
    return canvas


def builtin(arch: ArchSpec, hw: tuple[int, int], count: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    lrs = [_lr_chw(img, arch) for _, img in photos(TRAIN_PHOTOS)]
    samples = []
    for _ in range(count):
        if all(lr.shape[1] >= hw[0] and lr.shape[2] >= hw[1] for lr in lrs):
            lr = lrs[int(rng.integers(len(lrs)))]
            top = int(rng.integers(0, lr.shape[1] - hw[0] + 1))
            left = int(rng.integers(0, lr.shape[2] - hw[1] + 1))
            samples.append(lr[:, top: top + hw[0], left: left + hw[1]])
        else:
            samples.append(mosaic(lrs, hw, rng))
    return np.stack(samples).transpose(0, 2, 3, 1).astype(np.float32)


def calibration_set(arch: ArchSpec, hw: tuple[int, int], folder: str | Path | None = None,
                    count: int = DEFAULT_CALIB_COUNT) -> np.ndarray:
    if count < 1:
        raise EcbDeployError("--calib-count must be at least 1")
    if folder is None:
        return builtin(arch, hw, count)
    return from_folder(folder, arch, hw, count)


def onnx2tf_sample_images(count: int = 20, size: int = 128) -> np.ndarray:
    """Real RGB crops in [0, 1] handed to onnx2tf in place of the sample images it would download."""
    rng = np.random.default_rng(1)
    crops = []
    imgs = [img for _, img in photos(TRAIN_PHOTOS)]
    for i in range(count):
        img = imgs[i % len(imgs)]
        top = int(rng.integers(0, img.shape[0] - size + 1))
        left = int(rng.integers(0, img.shape[1] - size + 1))
        crops.append(img[top: top + size, left: left + size])
    return np.stack(crops).astype(np.float32)
