"""Checkpoint loading (official ECBSR, BasicSR, common wrappers, ecbdeploy's fused format) and saving.

Everything is read with `torch.load(weights_only=True)`: a pickle that would run code is refused.
"""

from __future__ import annotations

import json
import math
import pickle
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .arch import ACTIVATIONS, ArchSpec
from .deploy_model import PlainSR
from .errors import EcbDeployError
from .fsutil import atomic_path
from .train_model import ECBSR

FUSED_FORMAT = "ecbdeploy-fused"
FUSED_FORMAT_VERSION = 1
# Value range the training code of each format works in (NOTES §1).
DEFAULT_PIXEL_RANGE = {"official": 255.0, "basicsr": 1.0, "wrapped": 255.0}
_PREFIXES = ("module.", "model.")
_CONV_KEY = re.compile(r"^backbone\.(\d+)\.conv3x3\.weight$")


@dataclass
class LoadedModel:
    """A checkpoint turned into a network: the training form, or the fused form when the file held one."""

    path: Path
    format: str  # official | basicsr | wrapped | ecbdeploy-fused
    arch: ArchSpec
    model: torch.nn.Module
    notes: list[str] = field(default_factory=list)  # what was assumed rather than read

    @property
    def is_fused(self) -> bool:
        return isinstance(self.model, PlainSR)


def read_checkpoint_file(path: str | Path) -> object:
    path = Path(path)
    if not path.exists():
        raise EcbDeployError(f"checkpoint not found: {path}")
    if path.is_dir():
        raise EcbDeployError(f"checkpoint is a folder, not a file: {path}")
    try:
        with warnings.catch_warnings():  # e.g. "Detected pickle protocol 4": the outcome is handled below
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        text = str(e)
        if "Weights only load failed" in text and "Unsupported operand" not in text:
            # torch names the offending global, e.g. "unsupported GLOBAL posix.system".
            found = re.search(r"GLOBAL ([\w.]+)", text)
            detail = f" (it references {found.group(1)})" if found else ""
            raise EcbDeployError(
                f"refused to load {path}: it contains Python objects, not only tensors{detail}; "
                "nothing in it was run (loaded with weights_only=True)"
            ) from None
        raise EcbDeployError(f"not a PyTorch checkpoint: {path}") from None
    except Exception as e:  # noqa: BLE001 (see below)
        # A corrupt file can make the unpickler raise almost anything (KeyError, IndexError,
        # zlib/struct errors, ...); with weights_only=True nothing in it was run.
        lines = str(e).strip().splitlines()
        msg = lines[0].split(".")[0] if lines else type(e).__name__
        raise EcbDeployError(f"not a readable PyTorch checkpoint (truncated or corrupt?): {path}: {msg[:120]}") from None


def _strip_prefixes(sd: dict) -> dict:
    out = {}
    for k, v in sd.items():
        changed = True
        while changed:
            changed = False
            for p in _PREFIXES:
                if k.startswith(p):
                    k, changed = k[len(p):], True
        out[k] = v
    return out


def unwrap(obj: object, prefer_ema: bool = True) -> tuple[str, dict, dict | None, list[str]]:
    """(format, state_dict, ecbdeploy metadata or None, notes) for any supported container."""
    notes: list[str] = []
    if not isinstance(obj, dict):
        raise EcbDeployError(f"not an ECBSR checkpoint: expected a dict of tensors, found {type(obj).__name__}")
    if isinstance(obj.get("ecbdeploy"), dict):
        meta = obj["ecbdeploy"]
        if meta.get("format") != FUSED_FORMAT:
            raise EcbDeployError(f"unknown ecbdeploy checkpoint format {meta.get('format')!r}")
        return FUSED_FORMAT, obj.get("state_dict", {}), meta, notes
    if "params" in obj or "params_ema" in obj:
        key = "params_ema" if prefer_ema and "params_ema" in obj else ("params" if "params" in obj else "params_ema")
        if key == "params" and "params_ema" in obj:
            notes.append("used 'params' (--no-ema) although 'params_ema' is present")
        notes.append(f"weights from BasicSR '{key}'")
        return "basicsr", obj[key], None, notes
    for key in ("state_dict", "model"):
        if isinstance(obj.get(key), dict):
            notes.append(f"weights from the '{key}' entry")
            return "wrapped", obj[key], None, notes
    return "official", obj, None, notes


def _check_tensors(sd: dict) -> None:
    if not sd:
        raise EcbDeployError("not an ECBSR checkpoint: it holds no weights")
    for k, v in sd.items():
        if not isinstance(v, torch.Tensor):
            raise EcbDeployError(f"not an ECBSR checkpoint: entry {k!r} is a {type(v).__name__}, not a tensor")
        if v.is_floating_point() and not bool(torch.isfinite(v).all()):
            raise EcbDeployError(f"weight {k!r} contains NaN or Inf values")


def infer_arch(sd: dict, *, act: str | None, with_idt: bool, pixel_range: float) -> tuple[ArchSpec, list[str]]:
    """Blocks, channels, colours and scale from key names and shapes; activation from PReLU weights."""
    notes = []
    convs = sorted(int(m.group(1)) for k in sd if (m := _CONV_KEY.match(k)))
    if len(convs) < 2 or convs != list(range(len(convs))):
        raise EcbDeployError(
            "not an ECBSR checkpoint: expected keys 'backbone.<i>.conv3x3.weight' for consecutive i "
            f"(found {len(convs)}; first keys: {', '.join(list(sd)[:3])})"
        )
    head, tail = sd["backbone.0.conv3x3.weight"], sd[f"backbone.{convs[-1]}.conv3x3.weight"]
    if head.ndim != 4 or tail.ndim != 4:
        raise EcbDeployError("inconsistent shapes: conv3x3 weights must be 4-D")
    channels, colors = int(head.shape[0]), int(head.shape[1])
    ratio = tail.shape[0] / max(colors, 1)  # colors=0 is rejected by ArchSpec below
    scale = round(math.sqrt(ratio))
    if scale * scale != ratio:
        raise EcbDeployError(
            f"inconsistent shapes: tail conv has {tail.shape[0]} outputs, not colours x scale^2 for {colors} colour(s)"
        )
    has_prelu = "backbone.0.act.weight" in sd
    if has_prelu:
        if act not in (None, "prelu"):
            raise EcbDeployError(f"checkpoint has PReLU weights but --act {act} was given")
        act = "prelu"
    elif act is None:
        act = "relu"
        notes.append("activation not stored in the weights (no PReLU); assumed relu (--act to change)")
    elif act == "prelu":
        raise EcbDeployError("--act prelu given but the checkpoint has no PReLU weights ('backbone.0.act.weight')")
    return ArchSpec(blocks=len(convs) - 2, channels=channels, colors=colors, scale=scale, act=act,
                    with_idt=with_idt, pixel_range=pixel_range), notes


def _load_into(model: torch.nn.Module, sd: dict) -> None:
    expected = model.state_dict()
    missing = [k for k in expected if k not in sd]
    unexpected = [k for k in sd if k not in expected]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing keys: {', '.join(missing[:4])}{' ...' if len(missing) > 4 else ''}")
        if unexpected:
            parts.append(f"unexpected keys: {', '.join(unexpected[:4])}{' ...' if len(unexpected) > 4 else ''}")
        raise EcbDeployError("checkpoint does not match the ECBSR layout: " + "; ".join(parts))
    for k, v in expected.items():
        if tuple(sd[k].shape) != tuple(v.shape):
            raise EcbDeployError(
                f"inconsistent shapes: {k} is {tuple(sd[k].shape)}, expected {tuple(v.shape)} for this architecture"
            )
    model.load_state_dict({k: sd[k].to(v.dtype) for k, v in expected.items()})


def _sidecar(path: Path) -> dict:
    """Architecture facts written next to a checkpoint by `ecbdeploy train` (optional)."""
    side = path.with_suffix(".json")
    if not side.is_file():
        return {}
    try:
        data = json.loads(side.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {}
    arch = data.get("arch") if isinstance(data, dict) else None
    if not isinstance(arch, dict):  # some other tool's JSON
        return {}
    types = {"act": str, "with_idt": bool, "pixel_range": (int, float)}
    bad = [k for k, t in types.items() if k in arch and not isinstance(arch[k], t)]
    if bad:
        raise EcbDeployError(f"invalid sidecar {side.name}: wrong type for arch {', '.join(bad)}")
    return arch


def load_checkpoint(path: str | Path, *, with_idt: bool | None = None, pixel_range: float | None = None,
                    act: str | None = None, prefer_ema: bool = True) -> LoadedModel:
    """Read any supported checkpoint into a network in eval mode.

    Flags override what the file says; what the file cannot say (identity branch, value range,
    non-PReLU activation) falls back to a sidecar JSON, then to the format's documented default.
    """
    path = Path(path)
    if act is not None and act not in ACTIVATIONS:
        raise EcbDeployError(f"unsupported activation {act!r}; expected one of {', '.join(ACTIVATIONS)}")
    fmt, sd, meta, notes = unwrap(read_checkpoint_file(path), prefer_ema)
    if not isinstance(sd, dict):
        raise EcbDeployError(f"not an ECBSR checkpoint: weights entry is a {type(sd).__name__}")
    if not all(isinstance(k, str) for k in sd):
        raise EcbDeployError("not an ECBSR checkpoint: its weights are not keyed by parameter names")
    sd = _strip_prefixes(sd)
    _check_tensors(sd)
    if meta is not None:
        arch = ArchSpec.from_dict(meta.get("arch", {}))
        model = PlainSR(arch)
        _load_into(model, sd)
        return LoadedModel(path, fmt, arch, model.eval(), notes)
    side = _sidecar(path)
    if side:
        notes.append(f"read with_idt/act/pixel_range from {path.with_suffix('.json').name}")
    arch, arch_notes = infer_arch(
        sd,
        act=act or (side.get("act") if "backbone.0.act.weight" not in sd else None),
        with_idt=with_idt if with_idt is not None else bool(side.get("with_idt", False)),
        pixel_range=float(pixel_range or side.get("pixel_range") or DEFAULT_PIXEL_RANGE[fmt]),
    )
    notes += arch_notes
    if pixel_range is None and not side:
        notes.append(f"pixel range {arch.pixel_range:g} is the {fmt} format's default (--pixel-range to change)")
    model = ECBSR(arch)
    _load_into(model, sd)
    return LoadedModel(path, fmt, arch, model.eval(), notes)


def save_fused(path: str | Path, model: PlainSR, extra: dict | None = None) -> Path:
    """Write a fused checkpoint that loads with weights_only=True and carries its architecture."""
    meta = {"format": FUSED_FORMAT, "version": FUSED_FORMAT_VERSION, "arch": model.arch.to_dict()}
    if extra:
        meta.update(extra)
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        torch.save({"ecbdeploy": meta, "state_dict": state}, tmp)
    return Path(path)
