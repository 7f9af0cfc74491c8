"""Image helpers: BT.601 Y (studio swing), YCbCr round trip, decoding, bicubic LR/HR pairs."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from ecbdeploy import images
from ecbdeploy.errors import EcbDeployError

# (R, G, B) in [0, 1] -> Y on the 0-255 scale: Y = 16 + 65.481 R + 128.553 G + 24.966 B (NOTES §3)
KNOWN_Y = [
    ((0.0, 0.0, 0.0), 16.0),
    ((1.0, 1.0, 1.0), 235.0),
    ((1.0, 0.0, 0.0), 81.481),
    ((0.0, 1.0, 0.0), 144.553),
    ((0.0, 0.0, 1.0), 40.966),
    ((0.5, 0.5, 0.5), 125.5),
]


@pytest.mark.parametrize("rgb,y", KNOWN_Y)
def test_y_matches_bt601(rgb, y):
    px = np.array([[rgb]], dtype=np.float32)
    assert images.rgb_to_y255(px)[0, 0] == pytest.approx(y, abs=1e-4)


def test_grey_has_neutral_chroma():
    grey = np.full((2, 3, 3), 0.3, np.float32)
    ycc = images.rgb_to_ycbcr255(grey)
    assert np.allclose(ycc[..., 1:], 128.0, atol=1e-4)
    assert np.allclose(ycc[..., 0], 16 + 219 * 0.3, atol=1e-4)


def test_ycbcr_round_trip():
    rgb = np.random.default_rng(0).random((17, 13, 3)).astype(np.float32)
    ycc = images.rgb_to_ycbcr255(rgb)
    assert ycc.shape == rgb.shape and ycc.dtype == np.float32
    assert 16 - 1e-3 <= ycc[..., 0].min() and ycc[..., 0].max() <= 235 + 1e-3
    assert np.abs(images.ycbcr255_to_rgb01(ycc) - rgb).max() < 1e-5


# --- decoding ------------------------------------------------------------------------------------

def _save(tmp_path, name, arr, mode=None):
    path = tmp_path / name
    (Image.fromarray(arr, mode) if mode else Image.fromarray(arr)).save(path)
    return path


def test_load_grayscale_png(tmp_path):
    arr = np.arange(20, dtype=np.uint8).reshape(4, 5) * 12
    x = images.load_image(_save(tmp_path, "g.png", arr))
    assert x.shape == (4, 5, 3) and x.dtype == np.float32
    assert np.array_equal(x[..., 0], x[..., 2]) and np.allclose(x[..., 0], arr / 255.0, atol=1e-7)


def test_load_rgb_png(tmp_path):
    arr = np.random.default_rng(1).integers(0, 256, (6, 7, 3), dtype=np.uint8)
    x = images.load_image(_save(tmp_path, "rgb.png", arr))
    assert np.allclose(x, arr / 255.0, atol=1e-7)


def test_load_rgba_png_drops_alpha(tmp_path):
    arr = np.random.default_rng(2).integers(0, 256, (5, 4, 4), dtype=np.uint8)
    arr[..., 3] = 0  # fully transparent: the colours are still what is loaded
    x = images.load_image(_save(tmp_path, "rgba.png", arr))
    assert x.shape == (5, 4, 3) and np.allclose(x, arr[..., :3] / 255.0, atol=1e-7)


@pytest.mark.parametrize("peak", [220, 65535])  # a dark 16-bit image must not be read as 8-bit
def test_load_16bit_png(tmp_path, peak):
    arr = np.linspace(0, peak, 12).astype(np.uint16).reshape(3, 4)
    x = images.load_image(_save(tmp_path, "g16.png", arr))
    assert x.shape == (3, 4, 3)
    assert np.allclose(x[..., 1], arr / 65535.0, atol=1e-6)


def test_load_palette_png(tmp_path):
    im = Image.fromarray(np.array([[0, 128], [255, 64]], dtype=np.uint8)).convert("P")
    im.save(tmp_path / "p.png")
    x = images.load_image(tmp_path / "p.png")
    assert x.shape == (2, 2, 3) and 0 <= x.min() and x.max() <= 1


def test_load_image_errors(tmp_path):
    with pytest.raises(EcbDeployError, match="image not found"):
        images.load_image(tmp_path / "nope.png")
    (tmp_path / "bad.png").write_bytes(b"not an image")
    with pytest.raises(EcbDeployError, match="cannot read image"):
        images.load_image(tmp_path / "bad.png")


def test_to_rgb01_dtypes():
    assert images.to_rgb01(np.full((2, 2), 255, np.uint8)).max() == 1.0
    assert images.to_rgb01(np.full((2, 2, 3), 65535, np.uint16)).min() == 1.0
    assert images.to_rgb01(np.ones((2, 2), bool)).min() == 1.0
    assert np.allclose(images.to_rgb01(np.full((1, 1, 3), 0.25)), 0.25)
    with pytest.raises(EcbDeployError, match="unsupported image shape"):
        images.to_rgb01(np.zeros((2, 2, 2), np.uint8))


def test_list_images(tmp_path):
    for name in ("b.PNG", "a.jpg", "c.txt"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "d.png").mkdir()
    assert [p.name for p in images.list_images(tmp_path)] == ["a.jpg", "b.PNG"]
    with pytest.raises(EcbDeployError, match="not a folder"):
        images.list_images(tmp_path / "c.txt")


# --- photographs, bicubic, model input -----------------------------------------------------------

def test_bundled_photo():
    x = images.photo("astronaut")
    assert x.shape == (512, 512, 3) and x.dtype == np.float32
    assert 0.0 <= x.min() and x.max() <= 1.0 and x.std() > 0.1
    assert images.photo("camera").shape == (512, 512, 3)  # greyscale photo made RGB


@pytest.mark.parametrize("scale", [2, 3, 4])
@pytest.mark.parametrize("colors", [1, 3])
@pytest.mark.parametrize("pixel_range", [255.0, 1.0])
def test_lr_hr_pair_shapes_and_ranges(scale, colors, pixel_range):
    rgb = np.random.default_rng(scale).random((101, 77, 3)).astype(np.float32)
    lr, hr = images.lr_hr_pair(rgb, scale, colors, pixel_range)
    h, w = 101 // scale, 77 // scale
    assert lr.shape == (colors, h, w) and hr.shape == (colors, h * scale, w * scale)
    assert lr.dtype == hr.dtype == np.float32 and lr.flags.c_contiguous
    lo, hi = (16 / 255, 235 / 255) if colors == 1 else (0.0, 1.0)
    for a in (lr, hr):
        assert lo * pixel_range - 1e-3 <= a.min() and a.max() <= hi * pixel_range + 1e-3


def test_model_input_is_y_or_rgb():
    rgb = np.random.default_rng(3).random((4, 5, 3)).astype(np.float32)
    y = images.to_model_input(rgb, 1, 255.0)
    assert np.allclose(y[0], images.rgb_to_y255(rgb), atol=1e-4)
    assert np.allclose(images.to_model_input(rgb, 1, 1.0), y / 255.0, atol=1e-6)
    assert np.allclose(images.to_model_input(rgb, 3, 255.0), np.transpose(rgb, (2, 0, 1)) * 255.0)


def test_bicubic_resize():
    flat = np.full((9, 12), 0.4, np.float32)
    assert np.allclose(images.resize_bicubic(flat, 3, 4), 0.4, atol=1e-5)
    assert images.resize_bicubic(np.zeros((9, 12, 3), np.float32), 5, 7).shape == (5, 7, 3)
    # the LR of a smooth ramp is the ramp sampled at the LR pixel centres
    ramp = np.tile(np.arange(24, dtype=np.float32), (24, 1))
    lr = images.make_lr(ramp, 2)
    assert lr.shape == (12, 12)
    assert np.allclose(lr[4:8, 4:8], ramp[0, 8:16:2][None] + 0.5, atol=1e-3)
    up = images.upscale_bicubic_chw(np.stack([lr, lr]), 3)
    assert up.shape == (2, 36, 36)


def test_crop_to_multiple():
    assert images.crop_to_multiple(np.zeros((101, 77, 3)), 4).shape == (100, 76, 3)
