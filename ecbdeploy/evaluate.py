"""Image quality of models against bicubic, with the protocol of SR papers: HR cropped to a
multiple of the scale, bicubic LR, Y-PSNR (BT.601, 0-255) and SSIM (data range 255) with `scale`
border pixels shaved. Any runtime: checkpoints, .onnx, .tflite (fixed-shape models run in tiles).

The LR input holds 8-bit values by default, like the LR images of SR benchmark sets and like
anything a phone gets from a camera or decoder; a uint8-input model cannot take anything else,
so every row gets the same bytes. `float_lr=True` feeds the unrounded bicubic output instead.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .errors import EcbDeployError
from .images import lr_hr_pair, upscale_bicubic_chw
from .metrics import y_psnr, y_ssim
from .runners import Runner, open_runner
from .tiling import super_resolve

BICUBIC = "bicubic"


@dataclass
class Score:
    psnr: float
    ssim: float


@dataclass
class Row:
    label: str
    runtime: str
    scores: dict[str, Score] = field(default_factory=dict)  # image name -> score

    @property
    def mean_psnr(self) -> float:
        return float(np.mean([s.psnr for s in self.scores.values()]))

    @property
    def mean_ssim(self) -> float:
        return float(np.mean([s.ssim for s in self.scores.values()]))


@dataclass
class Evaluation:
    scale: int
    images: list[str]
    rows: list[Row]  # bicubic first
    float_lr: bool = False

    @property
    def bicubic(self) -> Row:
        return self.rows[0]

    def to_dict(self) -> dict:
        return {
            "protocol": {"metric": "Y-PSNR (BT.601, 0-255) and SSIM (data range 255)", "border": self.scale,
                         "lr": "bicubic downscale of HR cropped to a multiple of the scale, "
                               + ("unrounded (float)" if self.float_lr else "rounded to 8-bit values")},
            "scale": self.scale,
            "images": self.images,
            "rows": [{"label": r.label, "runtime": r.runtime, "mean_psnr": r.mean_psnr, "mean_ssim": r.mean_ssim,
                      "gain_db": r.mean_psnr - self.bicubic.mean_psnr,
                      "per_image": {k: asdict(v) for k, v in r.scores.items()}} for r in self.rows],
        }


def score(sr: np.ndarray, hr: np.ndarray, pixel_range: float, scale: int) -> Score:
    return Score(y_psnr(sr, hr, pixel_range, scale), y_ssim(sr, hr, pixel_range, scale))


def bicubic_score(rgb01: np.ndarray, scale: int, float_lr: bool = False) -> Score:
    """Bicubic upscale of the RGB LR image, judged on Y like every model."""
    lr, hr = lr_hr_pair(rgb01, scale, colors=3, pixel_range=1.0, eight_bit_lr=not float_lr)
    return score(upscale_bicubic_chw(lr, scale), hr, 1.0, scale)


def model_score(runner: Runner, rgb01: np.ndarray, scale: int, tile: tuple[int, int] | None = None,
                float_lr: bool = False) -> Score:
    arch = runner.arch
    lr, hr = lr_hr_pair(rgb01, scale, arch.colors, arch.pixel_range, eight_bit_lr=not float_lr)
    return score(super_resolve(runner, lr, scale, tile=tile), hr, arch.pixel_range, scale)


def open_models(paths, *, fused: bool = False, threads: int | None = None, **load_flags) -> list[Runner]:
    """A runner per model; with `fused`, training checkpoints also get a fused-network runner."""
    runners = []
    for path in paths:
        runner = open_runner(path, threads=threads, **load_flags)
        if runner.arch is None:
            raise EcbDeployError(f"cannot tell the architecture of {path} (no metadata; a .tflite needs the "
                                 "report.json written next to it by `ecbdeploy export`)")
        runners.append(runner)
        if fused and runner.name == "pytorch-multibranch":
            runners.append(open_runner(path, fused=True, threads=threads, **load_flags))
    return runners


def common_scale(runners: list[Runner], scale: int | None) -> int:
    scales = {r.arch.scale for r in runners}
    if scale is not None and scales - {scale}:
        raise EcbDeployError(f"--scale {scale} does not match the model scale(s) {sorted(scales)}")
    if len(scales) > 1:
        raise EcbDeployError(f"the models have different scales ({sorted(scales)}); evaluate them separately")
    if scales:
        return scales.pop()
    if scale is None:
        raise EcbDeployError("give --scale when evaluating bicubic only")
    return scale


def evaluate(runners: list[Runner], images, scale: int | None = None, *, tile: tuple[int, int] | None = None,
             on_image: Callable[[str], None] | None = None, float_lr: bool = False) -> Evaluation:
    """Score bicubic and every runner on (name, rgb01) images."""
    scale = common_scale(runners, scale)
    if not images:
        raise EcbDeployError("no images to evaluate on")
    rows = [Row(BICUBIC, "-")] + [Row(_label(r), r.name) for r in runners]
    for name, rgb in images:
        if min(rgb.shape[:2]) < 3 * scale:
            raise EcbDeployError(f"image {name} is too small ({rgb.shape[1]}x{rgb.shape[0]}) for x{scale}")
        if on_image is not None:
            on_image(name)
        rows[0].scores[name] = bicubic_score(rgb, scale, float_lr)
        for row, runner in zip(rows[1:], runners):
            row.scores[name] = model_score(runner, rgb, scale, tile, float_lr)
    return Evaluation(scale, [name for name, _ in images], rows, float_lr)


def _label(runner: Runner) -> str:
    name = Path(runner.path).name
    return f"{name} (fused)" if runner.name == "pytorch-fused" else name


def format_table(ev: Evaluation) -> str:
    """A summary table (one row per model) and a per-image table, as fixed-width text."""
    width = max(len(r.label) for r in ev.rows) + 2
    lines = [f"x{ev.scale}, {len(ev.images)} image(s), Y-PSNR dB / SSIM, {ev.scale}-pixel border shaved",
             f"{'model':<{width}}{'runtime':<22}{'Y-PSNR':>8}{'SSIM':>8}{'vs bicubic':>12}"]
    base = ev.bicubic.mean_psnr
    for r in ev.rows:
        gain = "" if r.label == BICUBIC else f"{r.mean_psnr - base:+.2f} dB"
        lines.append(f"{r.label:<{width}}{r.runtime:<22}{r.mean_psnr:>8.2f}{r.mean_ssim:>8.4f}{gain:>12}")
    lines.append("")
    name_width = max(len(n) for n in ev.images) + 2
    lines.append(f"{'image':<{name_width}}" + "".join(f"{'[' + str(i) + ']':>16}" for i in range(len(ev.rows))))
    for name in ev.images:
        cells = "".join(f"{r.scores[name].psnr:.2f}/{r.scores[name].ssim:.4f}".rjust(16) for r in ev.rows)
        lines.append(f"{name:<{name_width}}{cells}")
    lines.append("  ".join(f"[{i}] {r.label}" for i, r in enumerate(ev.rows)))
    return "\n".join(lines)
