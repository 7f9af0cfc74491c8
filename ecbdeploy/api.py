"""The Python API behind the CLI: each function does one user-visible job and returns plain values."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .checkpoint import LoadedModel, load_checkpoint, save_fused
from .deploy_model import PlainSR
from .errors import EcbDeployError
from .fusion import DEFAULT_FUSION_TOLERANCE, FusionCheck, fuse, verify_fusion


def parse_size(text: str | None) -> tuple[int, int] | None:
    """'540x960' -> (540, 960)."""
    if text is None:
        return None
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise EcbDeployError(f"invalid size {text!r}; expected HxW, e.g. 540x960") from None
    if h < 1 or w < 1:
        raise EcbDeployError(f"invalid size {text!r}; both sides must be positive")
    return h, w


def count_params(model: torch.nn.Module) -> int:
    """Learned parameters (the frozen edge filters are not counted)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def fused_model(loaded: LoadedModel, tolerance: float = DEFAULT_FUSION_TOLERANCE) -> tuple[PlainSR, FusionCheck | None]:
    """The deploy network for a loaded checkpoint, verified against the multi-branch one."""
    if loaded.is_fused:
        return loaded.model, None
    plain = fuse(loaded.model)
    return plain, verify_fusion(loaded.model, plain, tolerance)


def inspect(path, *, input_size=None, **load_flags) -> dict:
    loaded = load_checkpoint(path, **load_flags)
    arch = loaded.arch
    fused_params = count_params(PlainSR(arch))
    info = {
        "path": str(path),
        "format": loaded.format,
        "fused": loaded.is_fused,
        "arch": arch.to_dict(),
        "name": arch.name,
        "params": {"training": None if loaded.is_fused else count_params(loaded.model), "fused": fused_params},
        "macs_per_lr_pixel": arch.macs_per_lr_pixel(),
        "notes": loaded.notes,
    }
    if input_size:
        h, w = input_size
        info["input_size"] = [h, w]
        info["gmacs"] = arch.macs_per_lr_pixel() * h * w / 1e9
    return info


def fuse_checkpoint(path, output, *, tolerance=DEFAULT_FUSION_TOLERANCE, **load_flags) -> dict:
    loaded = load_checkpoint(path, **load_flags)
    if loaded.is_fused:
        raise EcbDeployError(f"{path} is already a fused checkpoint")
    plain, check = fused_model(loaded, tolerance)
    save_fused(output, plain, {"source": Path(path).name, "source_format": loaded.format,
                               "verification": check.to_dict()})
    return {"output": str(output), "arch": loaded.arch.to_dict(), "verification": check.to_dict(),
            "notes": loaded.notes}


def read_npy(path) -> np.ndarray:
    try:
        x = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise EcbDeployError(f"input not found: {path}") from None
    except (ValueError, OSError) as e:
        raise EcbDeployError(f"cannot read {path} as a .npy array: {e}") from None
    if x.ndim != 4:
        raise EcbDeployError(f"input must be NCHW (4-D); {path} has shape {x.shape}")
    if not np.issubdtype(x.dtype, np.number):
        raise EcbDeployError(f"input must be numeric; {path} has dtype {x.dtype}")
    return x.astype(np.float32)
