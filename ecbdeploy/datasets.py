"""Named sets of images for training and evaluation: a folder, or the photographs bundled with
scikit-image (no download)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import EcbDeployError
from .images import HELD_OUT_PHOTOS, TRAIN_PHOTOS, list_images, load_image, photos

BUILTIN_TRAIN = "builtin"
BUILTIN_HELD_OUT = "builtin-heldout"


def load_image_set(spec: str | Path, *, allow_held_out: bool = True) -> list[tuple[str, np.ndarray]]:
    """(name, RGB float32 in [0, 1]) for every image of `spec`: a folder, `builtin` (the training
    photographs) or `builtin-heldout` (the evaluation photographs)."""
    spec = str(spec)
    if spec == BUILTIN_TRAIN:
        return photos(TRAIN_PHOTOS)
    if spec == BUILTIN_HELD_OUT:
        if not allow_held_out:
            raise EcbDeployError("the held-out photographs are for evaluation only; train on 'builtin' or a folder")
        return photos(HELD_OUT_PHOTOS)
    folder = Path(spec)
    if not folder.exists():
        raise EcbDeployError(f"data not found: {spec} (expected a folder of images, "
                             f"'{BUILTIN_TRAIN}' or '{BUILTIN_HELD_OUT}')")
    files = list_images(folder)
    if not files:
        raise EcbDeployError(f"no images (.png, .jpg, .bmp, .tif) in {folder}")
    return [(p.name, load_image(p)) for p in files]
