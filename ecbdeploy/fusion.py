"""Re-parameterisation: every ECB becomes one plain 3x3 conv, and the result is verified numerically."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch

from .deploy_model import PlainSR
from .errors import EcbDeployError
from .images import HELD_OUT_PHOTOS, lr_hr_pair, photo
from .train_model import ECBSR

# Fused vs multi-branch max abs difference allowed, as a fraction of the pixel range.
DEFAULT_FUSION_TOLERANCE = 1e-4


def fuse(model: ECBSR) -> PlainSR:
    """The deploy network computing the same function as `model` (kernels fused in float64)."""
    plain = PlainSR(model.arch)
    with torch.no_grad():
        for ecb, conv in zip(model.backbone, plain.convs):
            kernel, bias = ecb.equivalent_kernel_bias()
            conv.weight.copy_(kernel.to(torch.float32))
            conv.bias.copy_(bias.to(torch.float32))
        for ecb, act in zip(model.backbone, plain.acts):
            if model.arch.act == "prelu":
                act.weight.copy_(ecb.act.weight)
    return plain.eval()


@dataclass(frozen=True)
class FusionCheck:
    max_abs_random: float
    max_abs_photo: float
    tolerance: float  # absolute, in pixel units
    photo: str

    def to_dict(self) -> dict:
        return asdict(self)


def photo_input(colors: int, scale: int, pixel_range: float, name: str = HELD_OUT_PHOTOS[0],
                size: int = 96) -> np.ndarray:
    """A 1xCxHxW LR crop of a real photograph in the model's pixel range."""
    lr, _ = lr_hr_pair(photo(name), scale, colors, pixel_range)
    top, left = (lr.shape[1] - size) // 2, (lr.shape[2] - size) // 2
    return lr[None, :, top: top + size, left: left + size].copy()


def _max_abs(a: torch.nn.Module, b: torch.nn.Module, x: np.ndarray) -> float:
    t = torch.from_numpy(x)
    with torch.no_grad():
        return float((a(t) - b(t)).abs().max())


def verify_fusion(model: ECBSR, plain: PlainSR, tolerance: float = DEFAULT_FUSION_TOLERANCE,
                  seed: int = 0) -> FusionCheck:
    """Run both networks on random input (odd size, exercises the border) and on a real photo;
    raise when the max abs difference exceeds `tolerance` x pixel range."""
    arch = model.arch
    model, plain = model.eval(), plain.eval()
    rng = np.random.default_rng(seed)
    random_x = (rng.random((1, arch.colors, 37, 53)) * arch.pixel_range).astype(np.float32)
    check = FusionCheck(
        max_abs_random=_max_abs(model, plain, random_x),
        max_abs_photo=_max_abs(model, plain, photo_input(arch.colors, arch.scale, arch.pixel_range)),
        tolerance=tolerance * arch.pixel_range,
        photo=HELD_OUT_PHOTOS[0],
    )
    worst = max(check.max_abs_random, check.max_abs_photo)
    if not np.isfinite(worst) or worst > check.tolerance:
        raise EcbDeployError(
            f"fusion check failed: fused vs multi-branch max abs error {worst:.3g} exceeds "
            f"{check.tolerance:.3g} ({tolerance:g} of the pixel range)"
        )
    return check
