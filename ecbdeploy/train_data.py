"""Training pairs for super-resolution: every image is downscaled once (bicubic, the same resize as
evaluation), then aligned LR/HR patches are cut from memory with random flips and transposes."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .errors import EcbDeployError
from .images import lr_hr_pair


@dataclass(frozen=True)
class ImagePair:
    name: str
    lr: torch.Tensor  # C x h x w, model pixel range
    hr: torch.Tensor  # C x sh x sw


def prepare_pairs(images, scale: int, colors: int, pixel_range: float, min_lr_side: int = 1) -> list[ImagePair]:
    """LR/HR model tensors for each (name, rgb01) image; images with an LR side below
    `min_lr_side` are left out."""
    pairs = []
    for name, rgb in images:
        lr, hr = lr_hr_pair(rgb, scale, colors, pixel_range)
        if min(lr.shape[1:]) >= min_lr_side:
            pairs.append(ImagePair(name, torch.from_numpy(lr), torch.from_numpy(hr)))
    return pairs


def _augment(lr: torch.Tensor, hr: torch.Tensor, flips: torch.Tensor):
    """Apply the dihedral transform coded by three booleans (h-flip, v-flip, transpose)."""
    if flips[0]:
        lr, hr = lr.flip(-1), hr.flip(-1)
    if flips[1]:
        lr, hr = lr.flip(-2), hr.flip(-2)
    if flips[2]:
        lr, hr = lr.transpose(-1, -2), hr.transpose(-1, -2)
    return lr, hr


class PatchSampler:
    """Random aligned (LR patch, HR patch) batches. Each image is equally likely to be picked, so
    one very large photograph does not dominate the training set."""

    def __init__(self, pairs: list[ImagePair], patch: int, scale: int, generator: torch.Generator):
        if not pairs:
            raise EcbDeployError(f"no training image is large enough for {patch}x{patch} LR patches "
                                 f"({patch * scale}x{patch * scale} HR); use a smaller --patch")
        self.pairs, self.patch, self.scale, self.gen = pairs, patch, scale, generator

    def batch(self, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        p, s, g = self.patch, self.scale, self.gen
        picks = torch.randint(len(self.pairs), (size,), generator=g)
        flips = torch.randint(2, (size, 3), generator=g).bool()
        lrs, hrs = [], []
        for k, i in enumerate(picks.tolist()):
            pair = self.pairs[i]
            _, h, w = pair.lr.shape
            top = int(torch.randint(h - p + 1, (1,), generator=g))
            left = int(torch.randint(w - p + 1, (1,), generator=g))
            lr = pair.lr[:, top: top + p, left: left + p]
            hr = pair.hr[:, top * s: (top + p) * s, left * s: (left + p) * s]
            lr, hr = _augment(lr, hr, flips[k])
            lrs.append(lr)
            hrs.append(hr)
        return torch.stack(lrs), torch.stack(hrs)
