"""Run a super-resolution model over an image in overlapping tiles and stitch the results.

Each tile's output is trusted only `overlap` pixels away from a cut (a cut border is zero-padded
by every conv, and the error creeps one pixel inward per 3x3 conv). With `overlap` at least the
number of 3x3 convs, the stitched image equals the full-image output up to float rounding.
A tile never extends past the image except when the image is smaller than a fixed-size tile;
then the input is padded by edge replication and the padding's output is cropped away.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .arch import ArchSpec
from .errors import EcbDeployError

# Largest LR tile (per side) a dynamic-shape model is run on, so memory stays bounded.
DEFAULT_MAX_TILE = 512
# Overlap used when the architecture (and so the receptive field) is unknown.
FALLBACK_OVERLAP = 16


@dataclass(frozen=True)
class Span:
    """One tile along one axis: the input window [start, start + size) and the part of it whose
    output is kept, [keep_start, keep_end) in image coordinates."""

    start: int
    size: int
    keep_start: int
    keep_end: int


def receptive_radius(arch: ArchSpec | None) -> int:
    """Pixels a cut influences: one per 3x3 conv (head, blocks, tail)."""
    return arch.blocks + 2 if arch is not None else FALLBACK_OVERLAP


def spans(length: int, tile: int, overlap: int) -> list[Span]:
    """Windows of exactly `tile` pixels (or the whole axis if it is shorter) covering [0, length),
    whose kept parts partition it and stay `overlap` pixels away from every interior cut."""
    if length < 1 or tile < 1:
        raise EcbDeployError(f"invalid tiling: length {length}, tile {tile}")
    if length <= tile:
        return [Span(0, length, 0, length)]
    if tile <= 2 * overlap:
        raise EcbDeployError(f"tile side {tile} is too small for an overlap of {overlap} pixels on each side; "
                             f"use tiles larger than {2 * overlap}")
    result, start, keep_start = [], 0, 0
    while start + tile < length:
        keep_end = start + tile - overlap
        result.append(Span(start, tile, keep_start, keep_end))
        keep_start, start = keep_end, keep_end - overlap
    last = length - tile  # the last window is pulled back inside the image
    result.append(Span(last, tile, keep_start, length))
    return result


def run_tiled(model: Callable[[np.ndarray], np.ndarray], x: np.ndarray, scale: int, tile: tuple[int, int],
              overlap: int, *, exact_size: bool = False,
              on_tile: Callable[[int, int], None] | None = None) -> np.ndarray:
    """Super-resolve a CxHxW array with `model` (NCHW in, NCHW out) tile by tile.

    `exact_size`: every model input must be exactly `tile` (static-shape models); smaller images
    are padded by edge replication. `on_tile(done, total)` reports progress.
    """
    _c, h, w = x.shape
    rows, cols = spans(h, tile[0], overlap), spans(w, tile[1], overlap)
    out = None
    total, done = len(rows) * len(cols), 0
    for r in rows:
        for q in cols:
            patch = x[:, r.start: r.start + r.size, q.start: q.start + q.size]
            if exact_size and patch.shape[1:] != tuple(tile):
                patch = np.pad(patch, ((0, 0), (0, tile[0] - patch.shape[1]), (0, tile[1] - patch.shape[2])),
                               mode="edge")
            y = np.asarray(model(np.ascontiguousarray(patch[None], dtype=np.float32)))[0]
            if out is None:
                out = np.empty((y.shape[0], h * scale, w * scale), dtype=np.float32)
            ys, xs = (r.keep_start - r.start) * scale, (q.keep_start - q.start) * scale
            out[:, r.keep_start * scale: r.keep_end * scale, q.keep_start * scale: q.keep_end * scale] = \
                y[:, ys: ys + (r.keep_end - r.keep_start) * scale, xs: xs + (q.keep_end - q.keep_start) * scale]
            done += 1
            if on_tile is not None:
                on_tile(done, total)
    return out


def super_resolve(runner, x: np.ndarray, scale: int, *, tile: tuple[int, int] | None = None,
                  overlap: int | None = None, on_tile: Callable[[int, int], None] | None = None) -> np.ndarray:
    """Run a runner (ecbdeploy.runners) on a CxHxW array of any size: in its static input shape if
    it has one, else in tiles of at most `tile` (default DEFAULT_MAX_TILE square)."""
    static = getattr(runner, "static_hw", None)
    if static is not None and tile is not None and tuple(tile) != tuple(static):
        raise EcbDeployError(f"this model only accepts {static[0]}x{static[1]} inputs; "
                             f"--tile {tile[0]}x{tile[1]} cannot be used with it")
    if overlap is None:
        overlap = receptive_radius(getattr(runner, "arch", None))
    size = tuple(static or tile or (DEFAULT_MAX_TILE, DEFAULT_MAX_TILE))
    return run_tiled(runner, x, scale, size, overlap, exact_size=static is not None, on_tile=on_tile)
