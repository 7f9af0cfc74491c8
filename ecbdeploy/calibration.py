"""Calibration data for integer quantisation, prepared exactly like inference input.

Each sample is a bicubic LR crop of the export input size, in the model's pixel range (Y channel
for 1-colour models), NHWC as onnx2tf expects. Without a folder, scikit-image's bundled
photographs are used (never the held-out ones used for quality figures), one photo per sample in
turn; a photo smaller than the input is reflect-padded to it. (Tiling photos into mosaics put
hard seams and empty zero-valued gaps into the data: their false edges widened every activation
range and cost 0.12 dB at 540x960.)
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


def _fit(lr: np.ndarray, hw: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """A CxHxW crop of the photo where it is larger than hw, mirrored out where it is smaller (at a
    random offset): mirroring continues the photo without a seam."""
    h, w = hw
    top = int(rng.integers(0, max(lr.shape[1] - h, 0) + 1))
    left = int(rng.integers(0, max(lr.shape[2] - w, 0) + 1))
    lr = lr[:, top: top + h, left: left + w]
    ph, pw = h - lr.shape[1], w - lr.shape[2]
    pt, pl = int(rng.integers(0, ph + 1)), int(rng.integers(0, pw + 1))
    mode = "reflect" if min(lr.shape[1:]) > 1 else "edge"  # reflect needs two pixels
    return np.pad(lr, ((0, 0), (pt, ph - pt), (pl, pw - pl)), mode=mode)


def builtin(arch: ArchSpec, hw: tuple[int, int], count: int, seed: int = 0) -> np.ndarray:
    """`count` samples cycling through the training photos, so each is used equally often."""
    rng = np.random.default_rng(seed)
    lrs = [_lr_chw(img, arch) for _, img in photos(TRAIN_PHOTOS)]
    samples = [_fit(lrs[i % len(lrs)], hw, rng) for i in range(count)]
    return np.stack(samples).transpose(0, 2, 3, 1).astype(np.float32)


def cover_pixel_range(samples: np.ndarray, pixel_range: float) -> np.ndarray:
    """A copy whose brightest value is raised to the top of the pixel range.

    The int8 input range is the calibration data's [min(0, lo), hi]. Y data stops at 235, so the
    input QUANTIZE would requantise every uint8 byte to a 235/255 step (losing ~0.02 dB) and clip
    full-range inputs above 235. With one value at the top, the internal step equals the pixel step
    and the bytes pass unchanged; a single raised pixel does not move any inner range.
    """
    out = np.array(samples, dtype=np.float32, copy=True)
    if out.size and float(out.max()) < pixel_range:
        out.reshape(-1)[int(np.argmax(out))] = pixel_range
    return out


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
