"""Upscale photographs with any model (checkpoint, .onnx, .tflite) and write PNGs.

1-colour models see the BT.601 Y channel; their output is clipped to 0-255 and merged with the
bicubic-upscaled Cb/Cr (unclipped Y turns into coloured speckles once converted back to RGB).
RGB models run on the image directly. Images are processed in overlapping tiles (ecbdeploy.tiling),
so memory stays bounded and the result equals a whole-image run.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from .errors import EcbDeployError
from .fsutil import atomic_path, ensure_dir
from .images import (
    IMAGE_SUFFIXES,
    list_images,
    load_image,
    resize_bicubic,
    rgb_to_ycbcr255,
    ycbcr255_to_rgb01,
)
from .runners import Runner
from .tiling import super_resolve


def upscale_rgb(runner: Runner, rgb01: np.ndarray, *, tile: tuple[int, int] | None = None,
                on_tile: Callable[[int, int], None] | None = None) -> np.ndarray:
    """HxWx3 RGB in [0, 1] -> sHxsWx3 RGB in [0, 1]."""
    arch = runner.arch
    if arch is None:
        raise EcbDeployError(f"cannot tell the architecture of {runner.path} (a .tflite needs the report.json "
                             "written next to it by `ecbdeploy export`)")
    s, pr = arch.scale, arch.pixel_range
    h, w = rgb01.shape[:2]
    if arch.colors == 1:
        ycbcr = rgb_to_ycbcr255(rgb01)
        y_in = ycbcr[None, :, :, 0] * np.float32(pr / 255.0)
        y_sr = super_resolve(runner, y_in, s, tile=tile, on_tile=on_tile)[0] * np.float32(255.0 / pr)
        cbcr = resize_bicubic(ycbcr[..., 1:], h * s, w * s)
        merged = np.concatenate([np.clip(y_sr, 0.0, 255.0)[..., None], np.clip(cbcr, 0.0, 255.0)], axis=-1)
        rgb = ycbcr255_to_rgb01(merged)
    else:
        x = np.ascontiguousarray(np.transpose(rgb01, (2, 0, 1)) * np.float32(pr))
        rgb = np.transpose(super_resolve(runner, x, s, tile=tile, on_tile=on_tile), (1, 2, 0)) / np.float32(pr)
    return np.clip(rgb, 0.0, 1.0)


def write_png(path: str | Path, rgb01: np.ndarray) -> Path:
    """8-bit RGB PNG, written atomically."""
    arr = np.clip(np.rint(rgb01 * 255.0), 0, 255).astype(np.uint8)
    with atomic_path(path) as tmp:
        Image.fromarray(arr).save(tmp, format="PNG")
    return Path(path)


def expand_inputs(paths) -> list[Path]:
    """Files as given; folders contribute their images."""
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            files += list_images(p)
        elif not p.exists():
            raise EcbDeployError(f"image not found: {p}")
        elif p.suffix.lower() not in IMAGE_SUFFIXES:
            raise EcbDeployError(f"not an image file ({', '.join(IMAGE_SUFFIXES)}): {p}")
        else:
            files.append(p)
    if not files:
        raise EcbDeployError("no images to upscale")
    return files


def output_paths(inputs: list[Path], outdir: Path, scale: int) -> list[Path]:
    """`<stem>_x<scale>.png` in `outdir`; two inputs that would write the same file are refused."""
    outs = [outdir / f"{p.stem}_x{scale}.png" for p in inputs]
    seen: dict[Path, Path] = {}
    for src, dst in zip(inputs, outs):
        if dst in seen:
            raise EcbDeployError(f"{seen[dst]} and {src} would both be written to {dst}; rename one")
        seen[dst] = src
    return outs


def upscale_files(runner: Runner, inputs, outdir: str | Path, *, tile: tuple[int, int] | None = None,
                  on_image: Callable[[Path], None] | None = None) -> list[Path]:
    """Upscale every input image into `outdir`; returns the written paths in input order."""
    files = expand_inputs(inputs)
    if runner.arch is None:
        raise EcbDeployError(f"cannot tell the architecture of {runner.path}")
    outdir = ensure_dir(outdir)
    written = []
    for src, dst in zip(files, output_paths(files, outdir, runner.arch.scale)):
        written.append(write_png(dst, upscale_rgb(runner, load_image(src), tile=tile)))
        if on_image is not None:
            on_image(src)
    return written
