"""Train an ECBSR network on CPU with the paper's recipe (L1 loss, Adam, random flips/transposes,
bicubic LR) and write an official-format checkpoint, a JSON sidecar and a resumable state file.

Files written for `-o X.pth`: `X.pth` (bare state_dict, or BasicSR `{'params', 'params_ema'}`),
`X.json` (`{"arch": ..., "train": ...}`, read by `load_checkpoint`) and `X.state.pt` (optimizer
state and iteration count for `--resume`).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .arch import ArchSpec
from .checkpoint import load_checkpoint, read_checkpoint_file
from .errors import EcbDeployError
from .fsutil import atomic_path, write_text_atomic
from .images import HELD_OUT_PHOTOS, photos, upscale_bicubic_chw
from .metrics import y_psnr
from .train_data import ImagePair, PatchSampler, prepare_pairs
from .train_model import ECBSR

SAVE_FORMATS = ("official", "basicsr")
# The cosine decay ends at this fraction of the initial learning rate.
FINAL_LR_FRACTION = 0.01


@dataclass(frozen=True)
class TrainConfig:
    scale: int
    blocks: int
    channels: int
    colors: int = 1
    act: str = "prelu"
    with_idt: bool = False
    pixel_range: float = 255.0
    iters: int = 20000
    patch: int = 48  # LR patch side; the HR patch is patch x scale
    batch: int = 16
    lr: float = 5e-4
    seed: int = 0
    val_every: int = 1000  # 0: no validation
    log_every: int = 100
    threads: int = 1
    save_format: str = "official"

    def __post_init__(self):
        if self.save_format not in SAVE_FORMATS:
            raise EcbDeployError(f"unknown checkpoint format {self.save_format!r}; expected official or basicsr")
        for name in ("iters", "patch", "batch", "log_every", "threads"):
            if getattr(self, name) < 1:
                raise EcbDeployError(f"--{name.replace('_', '-')} must be at least 1")
        if self.val_every < 0:
            raise EcbDeployError("--val-every must be 0 (off) or positive")
        if not self.lr > 0:
            raise EcbDeployError("--lr must be positive")
        self.arch()  # validates scale, colours, activation

    def arch(self) -> ArchSpec:
        return ArchSpec(blocks=self.blocks, channels=self.channels, colors=self.colors, scale=self.scale,
                        act=self.act, with_idt=self.with_idt, pixel_range=self.pixel_range)


@dataclass
class TrainEvent:
    """What the loop reports: a training step summary, or a validation result."""

    kind: str  # "step" | "val"
    iteration: int
    total: int
    elapsed: float  # seconds of training so far, across resumed runs
    loss: float | None = None  # mean L1 (pixel units) since the previous step event
    lr: float | None = None
    val_psnr: float | None = None
    bicubic_psnr: float | None = None


@dataclass
class TrainResult:
    checkpoint: Path
    sidecar: Path
    state: Path
    iterations: int
    wall_time: float
    losses: list[float] = field(default_factory=list)  # one mean per step event of this run
    val_psnr: float | None = None
    bicubic_psnr: float | None = None


def sidecar_path(ckpt: Path) -> Path:
    return Path(ckpt).with_suffix(".json")


def state_path(ckpt: Path) -> Path:
    return Path(ckpt).with_suffix(".state.pt")


def lr_at(iteration: int, total: int, base: float) -> float:
    """Cosine decay from `base` to FINAL_LR_FRACTION x base over `total` iterations."""
    t = min(iteration / total, 1.0)
    return base * (FINAL_LR_FRACTION + (1 - FINAL_LR_FRACTION) * 0.5 * (1 + math.cos(math.pi * t)))


class Validator:
    """Mean Y-PSNR (border = scale) of the model on fixed full images, and of bicubic on the same."""

    def __init__(self, pairs: list[ImagePair], scale: int, pixel_range: float):
        self.pairs, self.scale, self.pixel_range = pairs, scale, pixel_range
        self.bicubic = float(np.mean([
            y_psnr(upscale_bicubic_chw(p.lr.numpy(), scale), p.hr.numpy(), pixel_range, scale) for p in pairs
        ]))

    def __call__(self, model: torch.nn.Module) -> float:
        was_training = model.training
        model.eval()
        with torch.no_grad():
            scores = [y_psnr(model(p.lr[None])[0].numpy(), p.hr.numpy(), self.pixel_range, self.scale)
                      for p in self.pairs]
        model.train(was_training)
        return float(np.mean(scores))


def default_validator(config: TrainConfig) -> Validator:
    pairs = prepare_pairs(photos(HELD_OUT_PHOTOS), config.scale, config.colors, config.pixel_range)
    return Validator(pairs, config.scale, config.pixel_range)


def reparameterized_forward(model: ECBSR, x: torch.Tensor) -> torch.Tensor:
    """The same function as `model(x)`, computed with each ECB's branches summed into one 3x3
    kernel first (differentiable, so gradients still reach every branch parameter). Exact because
    the 1x1 branches pad with their bias; about 5x faster on CPU than running the branches."""
    y = x
    for ecb in model.backbone:
        kernel, bias = ecb.equivalent_kernel_bias()
        y = F.conv2d(y, kernel.to(x.dtype), bias.to(x.dtype), padding=1)
        if hasattr(ecb, "act"):
            y = ecb.act(y)
    anchor = x if model.arch.colors == 1 else torch.repeat_interleave(x, model.arch.scale ** 2, dim=1)
    return model.upsampler(y + anchor)


def _weights_for_saving(model: ECBSR, save_format: str) -> dict:
    sd = {k: v.detach().clone() for k, v in model.state_dict().items()}
    if save_format == "basicsr":
        # No EMA is kept; BasicSR loaders look for 'params_ema' first, so it holds the same weights.
        return {"params": sd, "params_ema": {k: v.clone() for k, v in sd.items()}}
    return sd


def _resume(output: Path, config: TrainConfig) -> tuple[ECBSR, dict]:
    state_file = state_path(output)
    if not output.is_file() or not state_file.is_file():
        raise EcbDeployError(f"--resume needs {output} and {state_file.name} from an earlier run")
    loaded = load_checkpoint(output)
    if loaded.is_fused or loaded.arch != config.arch():
        raise EcbDeployError(f"{output} holds {loaded.arch.name} {loaded.arch.to_dict()}, "
                             f"not the requested {config.arch().to_dict()}")
    state = read_checkpoint_file(state_file)
    if not isinstance(state, dict) or not {"iteration", "optimizer", "rng"} <= set(state):
        raise EcbDeployError(f"{state_file} is not an ecbdeploy training state")
    if state["iteration"] >= config.iters:
        raise EcbDeployError(f"{output} already has {state['iteration']} iterations; "
                             f"pass a larger --iters to train further")
    model = loaded.model
    model.train()
    return model, state


class Trainer:
    """One training run: owns the model, optimizer, sampler and output files."""

    def __init__(self, config: TrainConfig, images, output: str | Path, *, resume: bool = False,
                 validator: Validator | None = None, data_label: str = "",
                 on_event: Callable[[TrainEvent], None] | None = None):
        self.config, self.output = config, Path(output)
        self.on_event = on_event or (lambda event: None)
        self.data_label = data_label
        self.image_names = [name for name, _ in images]
        if not self.image_names:
            raise EcbDeployError("no training images")
        pairs = prepare_pairs(images, config.scale, config.colors, config.pixel_range, min_lr_side=config.patch)
        self.generator = torch.Generator().manual_seed(config.seed)
        self.sampler = PatchSampler(pairs, config.patch, config.scale, self.generator)
        self.validator = validator
        self.iteration, self.previous_time = 0, 0.0
        if resume:
            self.model, state = _resume(self.output, config)
        else:
            torch.manual_seed(config.seed)
            self.model, state = ECBSR(config.arch()).train(), None
        self.optimizer = torch.optim.Adam([p for p in self.model.parameters() if p.requires_grad], lr=config.lr)
        if state is not None:
            self.optimizer.load_state_dict(state["optimizer"])
            self.generator.set_state(state["rng"])
            self.iteration, self.previous_time = int(state["iteration"]), float(state.get("wall_time", 0.0))
        self.val_psnr = state.get("val_psnr") if state else None

    def step(self) -> float:
        lr_batch, hr_batch = self.sampler.batch(self.config.batch)
        for group in self.optimizer.param_groups:
            group["lr"] = lr_at(self.iteration, self.config.iters, self.config.lr)
        loss = F.l1_loss(reparameterized_forward(self.model, lr_batch), hr_batch)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.iteration += 1
        return float(loss.detach())

    def run(self) -> TrainResult:
        cfg = self.config
        old_threads = torch.get_num_threads()
        torch.set_num_threads(cfg.threads)
        start = time.perf_counter()
        losses, window = [], []
        try:
            while self.iteration < cfg.iters:
                window.append(self.step())
                elapsed = self.previous_time + time.perf_counter() - start
                if self.iteration % cfg.log_every == 0 or self.iteration == cfg.iters:
                    losses.append(float(np.mean(window)))
                    self.on_event(TrainEvent("step", self.iteration, cfg.iters, elapsed, loss=losses[-1],
                                             lr=self.optimizer.param_groups[0]["lr"]))
                    window = []
                due = cfg.val_every and self.iteration % cfg.val_every == 0
                if self.validator is not None and (due or self.iteration == cfg.iters):
                    self.val_psnr = self.validator(self.model)
                    self.on_event(TrainEvent("val", self.iteration, cfg.iters, elapsed, val_psnr=self.val_psnr,
                                             bicubic_psnr=self.validator.bicubic))
                    # Saved at every validation so an interrupted run can be resumed.
                    self.save(self.previous_time + time.perf_counter() - start)
        finally:
            torch.set_num_threads(old_threads)
        wall = self.previous_time + time.perf_counter() - start
        self.save(wall)
        return TrainResult(self.output, sidecar_path(self.output), state_path(self.output), self.iteration, wall,
                           losses, self.val_psnr, self.validator.bicubic if self.validator else None)

    def save(self, wall_time: float) -> None:
        cfg = self.config
        with atomic_path(self.output) as tmp:
            torch.save(_weights_for_saving(self.model, cfg.save_format), tmp)
        with atomic_path(state_path(self.output)) as tmp:
            torch.save({"iteration": self.iteration, "optimizer": self.optimizer.state_dict(),
                        "rng": self.generator.get_state(), "wall_time": wall_time, "val_psnr": self.val_psnr}, tmp)
        hyper = {k: v for k, v in asdict(cfg).items() if k not in ("scale", "blocks", "channels", "colors",
                                                                    "act", "with_idt", "pixel_range")}
        train_info = {
            **hyper,
            "data": self.data_label,
            "files": self.image_names,
            "validation_images": [p.name for p in self.validator.pairs] if self.validator else [],
            "iterations": self.iteration,
            "wall_time_s": round(wall_time, 1),
            "final_val_y_psnr": None if self.val_psnr is None else round(self.val_psnr, 3),
            "bicubic_val_y_psnr": round(self.validator.bicubic, 3) if self.validator else None,
            "loss": "l1",
            "optimizer": "adam",
            "lr_schedule": f"cosine to {FINAL_LR_FRACTION:g} x lr",
            "torch": torch.__version__,
        }
        doc = {"arch": cfg.arch().to_dict(), "train": train_info}
        write_text_atomic(sidecar_path(self.output), json.dumps(doc, indent=2) + "\n")


def train(config: TrainConfig, images, output: str | Path, *, resume: bool = False,
          validator: Validator | None = None, data_label: str = "",
          on_event: Callable[[TrainEvent], None] | None = None) -> TrainResult:
    """Train (or continue training) and write the checkpoint, sidecar and state files."""
    trainer = Trainer(config, images, output, resume=resume, validator=validator, data_label=data_label,
                      on_event=on_event)
    return trainer.run()
