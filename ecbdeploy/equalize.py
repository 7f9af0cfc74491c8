"""Cross-layer range equalisation of a fused network before per-tensor int8 quantisation.

int8 activations get one scale per tensor, so a channel whose values span a third of the tensor's
range keeps only a third of the 256 levels. The activations commute with a positive per-channel
factor (prelu(s*y) = s*prelu(y) for s > 0; relu and identity too), so conv i's output channel c
can be multiplied by s_c (weight row and bias) and conv i+1's input channel c divided by s_c
without changing the float output. Each channel is grown until it touches the tensor's existing
bounds, in both the conv output and the activation output (each is an int8 tensor), so the
tensors' ranges, hence their int8 steps, stay put while every channel uses more of them.

Only inner channels move: the head conv still reads the image and the last conv still writes the
residual added to the anchor.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch

from .deploy_model import PlainSR
from .errors import EcbDeployError

# Growth is capped: a near-dead channel would otherwise get a huge factor, and conv i+1's weights
# for it would sink below one int8 step of their row.
DEFAULT_MAX_SCALE = 16.0


@dataclass
class ChannelRanges:
    """Per-channel min/max of one inner layer's conv output and activation output."""

    conv_lo: np.ndarray
    conv_hi: np.ndarray
    act_lo: np.ndarray
    act_hi: np.ndarray

    def scaled(self, s: np.ndarray) -> "ChannelRanges":
        return ChannelRanges(self.conv_lo * s, self.conv_hi * s, self.act_lo * s, self.act_hi * s)


@dataclass
class EqualizeResult:
    plain: PlainSR
    scales: list[np.ndarray]  # per inner layer, the factor applied to each channel
    utilisation_before: list[float]  # per inner layer: mean channel width / tensor width
    utilisation_after: list[float]
    weight_error_before: list[float]  # per conv after an inner layer: relative int8 weight error
    weight_error_after: list[float]

    def to_dict(self) -> dict:
        def r(values):
            return [round(float(v), 4) for v in values]

        return {
            "method": "cross-layer range equalisation: per-channel factors folded into adjacent convs (exact in float)",
            "scale_min": r(s.min() for s in self.scales),
            "scale_max": r(s.max() for s in self.scales),
            "channel_range_utilisation_before": r(self.utilisation_before),
            "channel_range_utilisation_after": r(self.utilisation_after),
            "next_conv_int8_weight_error_before": r(self.weight_error_before),
            "next_conv_int8_weight_error_after": r(self.weight_error_after),
        }


def _as_nchw(samples: np.ndarray, colors: int) -> torch.Tensor:
    x = np.asarray(samples, np.float32)
    if x.ndim != 4 or x.shape[-1] != colors:
        raise EcbDeployError(f"calibration samples must be NHWC with {colors} channel(s); got shape {x.shape}")
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


@torch.no_grad()
def channel_ranges(plain: PlainSR, samples: np.ndarray) -> list[ChannelRanges]:
    """Per-channel ranges of every inner layer over NHWC samples in the model's pixel range."""
    x = _as_nchw(samples, plain.arch.colors)
    stats: list[list[torch.Tensor]] = [[] for _ in plain.acts]
    dims = (0, 2, 3)
    for i in range(x.shape[0]):  # one sample at a time: 540x960x16 float activations are 33 MB each
        y = x[i: i + 1]
        for k, (conv, act) in enumerate(zip(plain.convs[:-1], plain.acts)):
            c = conv(y)
            y = act(c)
            stats[k].append(torch.stack([c.amin(dims), c.amax(dims), y.amin(dims), y.amax(dims)]))
    out = []
    for layer in stats:
        s = torch.stack(layer).double()
        out.append(ChannelRanges(s[:, 0].amin(0).numpy(), s[:, 1].amax(0).numpy(),
                                 s[:, 2].amin(0).numpy(), s[:, 3].amax(0).numpy()))
    return out


def _fit_scale(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Largest factor per channel keeping s*[lo, hi] inside the tensor's [min lo, max hi]; 0 is
    always inside, as int8 ranges hold zero."""
    tensor_lo, tensor_hi = min(float(lo.min()), 0.0), max(float(hi.max()), 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        up = np.where(hi > 0, tensor_hi / hi, np.inf)
        down = np.where(lo < 0, tensor_lo / lo, np.inf)
    return np.minimum(up, down)


def utilisation(lo: np.ndarray, hi: np.ndarray) -> float:
    """Mean fraction of the tensor's range that a channel spans (1.0: every channel spans it all)."""
    width = max(float(hi.max()), 0.0) - min(float(lo.min()), 0.0)
    if width <= 0:
        return 1.0
    return float(np.mean((np.maximum(hi, 0.0) - np.minimum(lo, 0.0)) / width))


def choose_scales(r: ChannelRanges, max_scale: float = DEFAULT_MAX_SCALE) -> np.ndarray:
    """Per-channel factors in [1, max_scale] that fit both the conv and the activation tensors."""
    s = np.minimum(_fit_scale(r.conv_lo, r.conv_hi), _fit_scale(r.act_lo, r.act_hi))
    s = np.where(np.isfinite(s), s, max_scale)  # a channel that is always 0: nothing to fit
    return np.clip(s, 1.0, max_scale)


def int8_weight_error(weight: torch.Tensor, column_scale: np.ndarray | None = None) -> float:
    """Relative error of per-output-channel symmetric int8 weights (TFLite's rule), measured in the
    original network's units: a column divided by s_c carries s_c times its rounding error."""
    w = weight.detach().double()
    step = (w.abs().amax(dim=(1, 2, 3), keepdim=True) / 127.0).clamp_min(1e-30)
    err = torch.round(w / step) * step - w
    if column_scale is not None:
        err = err * torch.from_numpy(np.asarray(column_scale, np.float64)).view(1, -1, 1, 1)
        w = w * torch.from_numpy(np.asarray(column_scale, np.float64)).view(1, -1, 1, 1)
    return float(err.norm() / w.norm().clamp_min(1e-30))


def equalize(plain: PlainSR, samples: np.ndarray, max_scale: float = DEFAULT_MAX_SCALE) -> EqualizeResult:
    """A copy of `plain` with its inner channels rescaled; the input is not modified.

    samples: NHWC calibration data in the model's pixel range (what the int8 converter will see).
    """
    if plain.arch.act == "softplus":
        raise EcbDeployError("range equalisation needs an activation with act(s*y) = s*act(y); softplus is not")
    ranges = channel_ranges(plain, samples)
    out = copy.deepcopy(plain).eval()
    scales, before, after, w_before, w_after = [], [], [], [], []
    with torch.no_grad():
        for k, r in enumerate(ranges):
            s = choose_scales(r, max_scale)
            w_before.append(int8_weight_error(out.convs[k + 1].weight))
            st = torch.from_numpy(s).to(out.convs[k].weight.dtype)
            out.convs[k].weight.mul_(st.view(-1, 1, 1, 1))
            out.convs[k].bias.mul_(st)
            out.convs[k + 1].weight.div_(st.view(1, -1, 1, 1))
            w_after.append(int8_weight_error(out.convs[k + 1].weight, s))
            scales.append(s)
            before.append(min(utilisation(r.conv_lo, r.conv_hi), utilisation(r.act_lo, r.act_hi)))
            eq = r.scaled(s)
            after.append(min(utilisation(eq.conv_lo, eq.conv_hi), utilisation(eq.act_lo, eq.act_hi)))
    return EqualizeResult(out, scales, before, after, w_before, w_after)
