"""Real photographs and the image preparation SR models expect (Y channel, bicubic LR, pixel range).

Images are float32 arrays in [0, 1], HxWx3 (RGB) or HxW (grey), until they become model input.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from .errors import EcbDeployError

# scikit-image ships these photographs inside the package (no download). The held-out ones are
# never used for training or calibration, only for evaluation.
TRAIN_PHOTOS = ("rocket", "hubble_deep_field", "motorcycle", "retina", "immunohistochemistry",
                "camera", "moon", "coins", "brick", "grass", "gravel")
HELD_OUT_PHOTOS = ("astronaut", "coffee", "chelsea")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


def photo(name: str) -> np.ndarray:
    """A scikit-image bundled photograph as float32 RGB in [0, 1]."""
    import skimage.data

    img = skimage.data.stereo_motorcycle()[0] if name == "motorcycle" else getattr(skimage.data, name)()
    return to_rgb01(np.asarray(img))


def photos(names) -> list[tuple[str, np.ndarray]]:
    return [(n, photo(n)) for n in dict.fromkeys(names)]


def to_rgb01(img: np.ndarray) -> np.ndarray:
    """Any decoded image (grey, RGB, RGBA; 8 or 16 bit; float) as float32 RGB in [0, 1]."""
    if img.dtype == np.uint8:
        x = img.astype(np.float32) / 255.0
    elif img.dtype == np.uint16:
        x = img.astype(np.float32) / 65535.0
    elif img.dtype == bool:
        x = img.astype(np.float32)
    else:
        x = img.astype(np.float32)
        if x.max() > 1.0:
            x = x / (65535.0 if x.max() > 255.0 else 255.0)
    if x.ndim == 2:
        x = np.stack([x] * 3, axis=-1)
    if x.shape[-1] == 4:  # drop alpha
        x = x[..., :3]
    if x.ndim != 3 or x.shape[-1] != 3:
        raise EcbDeployError(f"unsupported image shape {img.shape}")
    return np.clip(x, 0.0, 1.0)


def load_image(path: str | Path) -> np.ndarray:
    """Read PNG/JPEG/BMP/TIFF (grey, RGB, RGBA, 16-bit) as float32 RGB in [0, 1]."""
    path = Path(path)
    try:
        with Image.open(path) as im:
            if im.mode in ("I;16", "I;16B", "I;16L", "I"):
                arr = np.asarray(im, dtype=np.uint16 if im.mode.startswith("I;16") else np.int32)
                if arr.dtype == np.int32:
                    arr = arr.astype(np.float32) / (65535.0 if arr.max() > 255 else 255.0)
            elif im.mode in ("L", "RGB", "RGBA"):
                arr = np.asarray(im)
            else:
                arr = np.asarray(im.convert("RGBA" if "A" in im.mode else "RGB"))
    except FileNotFoundError:
        raise EcbDeployError(f"image not found: {path}") from None
    except (OSError, ValueError) as e:
        raise EcbDeployError(f"cannot read image {path}: {e}") from None
    return to_rgb01(arr)


def list_images(folder: str | Path) -> list[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        raise EcbDeployError(f"not a folder: {folder}")
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def save_image(path: str | Path, rgb01: np.ndarray) -> None:
    arr = np.clip(np.rint(rgb01 * 255.0), 0, 255).astype(np.uint8)
    Image.fromarray(arr).save(path)


# BT.601 "studio swing" conversion used by SR papers (Y in 16..235 on a 0..255 scale).
_RGB_TO_YCBCR = np.array([[65.481, 128.553, 24.966],
                          [-37.797, -74.203, 112.0],
                          [112.0, -93.786, -18.214]], dtype=np.float64)
_YCBCR_OFFSET = np.array([16.0, 128.0, 128.0])


def rgb_to_ycbcr255(rgb01: np.ndarray) -> np.ndarray:
    return (rgb01.astype(np.float64) @ _RGB_TO_YCBCR.T + _YCBCR_OFFSET).astype(np.float32)


def ycbcr255_to_rgb01(ycbcr: np.ndarray) -> np.ndarray:
    inv = np.linalg.inv(_RGB_TO_YCBCR)
    return ((ycbcr.astype(np.float64) - _YCBCR_OFFSET) @ inv.T).astype(np.float32)


def rgb_to_y255(rgb01: np.ndarray) -> np.ndarray:
    return rgb_to_ycbcr255(rgb01)[..., 0]


def resize_bicubic(img: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bicubic resize (antialiased when shrinking) of an HxW or HxWxC float image, per channel."""
    if img.ndim == 2:
        out = Image.fromarray(img.astype(np.float32), mode="F").resize((width, height), Image.BICUBIC)
        return np.asarray(out, dtype=np.float32)
    return np.stack([resize_bicubic(img[..., c], height, width) for c in range(img.shape[-1])], -1)


def crop_to_multiple(img: np.ndarray, scale: int) -> np.ndarray:
    h, w = img.shape[:2]
    return img[: h - h % scale, : w - w % scale]


def make_lr(hr: np.ndarray, scale: int) -> np.ndarray:
    """Bicubic downscale of an HR image already cropped to a multiple of the scale."""
    h, w = hr.shape[:2]
    return resize_bicubic(hr, h // scale, w // scale)


def to_model_input(rgb01: np.ndarray, colors: int, pixel_range: float) -> np.ndarray:
    """HxWx3 RGB in [0, 1] -> CxHxW float32 in the model's pixel range (Y for 1-colour models)."""
    if colors == 1:
        x = rgb_to_y255(rgb01)[None] / 255.0
    else:
        x = np.transpose(rgb01, (2, 0, 1))
    return np.ascontiguousarray(x * pixel_range, dtype=np.float32)


def to_8bit_levels(x: np.ndarray, pixel_range: float) -> np.ndarray:
    """x rounded to the 256 values an 8-bit image can hold (in the same pixel range)."""
    step = pixel_range / 255.0
    return (np.clip(np.rint(np.asarray(x, np.float64) / step), 0, 255) * step).astype(np.float32)


def lr_hr_pair(rgb01: np.ndarray, scale: int, colors: int, pixel_range: float, eight_bit_lr: bool = False):
    """(LR model input CxHxW, HR target CxsHxsW), both in the model's pixel range.

    eight_bit_lr: the LR input holds 8-bit values, as every real input does (an 8-bit RGB image
    for RGB models; for Y models the 8-bit Y plane of a camera or video frame).
    """
    hr = crop_to_multiple(rgb01, scale)
    lr = to_model_input(np.clip(make_lr(hr, scale), 0.0, 1.0), colors, pixel_range)
    if eight_bit_lr:
        lr = to_8bit_levels(lr, pixel_range)
    return lr, to_model_input(hr, colors, pixel_range)


def upscale_bicubic_chw(x: np.ndarray, scale: int) -> np.ndarray:
    """Bicubic upscale of a CxHxW array (the baseline every SR figure is compared with)."""
    c, h, w = x.shape
    return np.stack([resize_bicubic(x[i], h * scale, w * scale) for i in range(c)])
