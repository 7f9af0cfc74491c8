"""The training-form ECBSR network, with state_dict keys identical to the official and BasicSR code.

Every block also knows its own fusion maths (RepVGG style): `equivalent_kernel_bias()` returns the
single 3x3 conv, computed in float64, that the block's branches add up to.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .arch import DEPTH_MULTIPLIER, RRELU_BOUNDS, ArchSpec

EDGE_FILTERS = {
    "sobelx": [[1.0, 0.0, -1.0], [2.0, 0.0, -2.0], [1.0, 0.0, -1.0]],
    "sobely": [[1.0, 2.0, 1.0], [0.0, 0.0, 0.0], [-1.0, -2.0, -1.0]],
    "laplacian": [[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]],
}


def _pad_with_bias(y: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """Pad a 1x1 conv output by one pixel filled with its bias: what the 1x1 conv would give on a
    zero-padded input, which makes the 1x1 -> 3x3 pair exactly one 3x3 conv at the border too."""
    y = F.pad(y, (1, 1, 1, 1), mode="constant", value=0.0)
    b = bias.view(1, -1, 1, 1)
    y[:, :, 0:1, :] = b
    y[:, :, -1:, :] = b
    y[:, :, :, 0:1] = b
    y[:, :, :, -1:] = b
    return y


class Conv1x1Conv3x3(nn.Module):
    """A 1x1 conv expanding to `mid` channels, then a 3x3 conv."""

    def __init__(self, in_ch: int, out_ch: int, depth_multiplier: float = DEPTH_MULTIPLIER):
        super().__init__()
        mid = int(out_ch * depth_multiplier)
        conv0, conv1 = nn.Conv2d(in_ch, mid, 1), nn.Conv2d(mid, out_ch, 3)
        self.k0, self.b0 = conv0.weight, conv0.bias
        self.k1, self.b1 = conv1.weight, conv1.bias

    def forward(self, x):
        y0 = _pad_with_bias(F.conv2d(x, self.k0, self.b0), self.b0)
        return F.conv2d(y0, self.k1, self.b1)

    def equivalent_kernel_bias(self):
        k0, b0 = self.k0.double(), self.b0.double()
        k1, b1 = self.k1.double(), self.b1.double()
        kernel = torch.einsum("omhw,mi->oihw", k1, k0[:, :, 0, 0])
        bias = b1 + torch.einsum("omhw,m->o", k1, b0)
        return kernel, bias


class Conv1x1Edge(nn.Module):
    """A 1x1 conv, then a fixed edge filter (Sobel-x, Sobel-y or Laplacian) with a learned
    per-channel scale and bias, applied depthwise."""

    def __init__(self, in_ch: int, out_ch: int, edge: str):
        super().__init__()
        conv0 = nn.Conv2d(in_ch, out_ch, 1)
        self.k0, self.b0 = conv0.weight, conv0.bias
        self.scale = nn.Parameter(torch.randn(out_ch, 1, 1, 1) * 1e-3)
        self.bias = nn.Parameter(torch.randn(out_ch) * 1e-3)
        mask = torch.tensor(EDGE_FILTERS[edge]).expand(out_ch, 1, 3, 3).clone()
        # Saved in the state_dict as a frozen Parameter, as the official code does.
        self.mask = nn.Parameter(mask, requires_grad=False)

    def forward(self, x):
        y0 = _pad_with_bias(F.conv2d(x, self.k0, self.b0), self.b0)
        return F.conv2d(y0, self.scale * self.mask, self.bias, groups=self.k0.shape[0])

    def equivalent_kernel_bias(self):
        k0, b0 = self.k0.double(), self.b0.double()
        depthwise = self.scale.double() * self.mask.double()  # (out, 1, 3, 3)
        kernel = depthwise * k0[:, :, 0, 0][:, :, None, None]
        bias = self.bias.double() + depthwise.sum(dim=(1, 2, 3)) * b0
        return kernel, bias


def make_activation(act: str, channels: int) -> nn.Module | None:
    if act == "prelu":
        return nn.PReLU(num_parameters=channels)
    if act == "relu":
        return nn.ReLU()
    if act == "rrelu":
        return nn.RReLU(lower=RRELU_BOUNDS[0], upper=RRELU_BOUNDS[1])
    if act == "softplus":
        return nn.Softplus()
    return None  # linear


class ECB(nn.Module):
    """Edge-oriented Convolution Block: five parallel branches (plus an optional identity) that
    fuse into one 3x3 conv, followed by an activation."""

    def __init__(self, in_ch: int, out_ch: int, act: str = "prelu", with_idt: bool = False,
                 depth_multiplier: float = DEPTH_MULTIPLIER):
        super().__init__()
        self.in_ch, self.out_ch = in_ch, out_ch
        self.with_idt = with_idt and in_ch == out_ch
        self.conv3x3 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.conv1x1_3x3 = Conv1x1Conv3x3(in_ch, out_ch, depth_multiplier)
        self.conv1x1_sbx = Conv1x1Edge(in_ch, out_ch, "sobelx")
        self.conv1x1_sby = Conv1x1Edge(in_ch, out_ch, "sobely")
        self.conv1x1_lpl = Conv1x1Edge(in_ch, out_ch, "laplacian")
        self.act_type = act
        act_module = make_activation(act, out_ch)
        if act_module is not None:
            self.act = act_module

    def branches(self):
        return (self.conv1x1_3x3, self.conv1x1_sbx, self.conv1x1_sby, self.conv1x1_lpl)

    def forward(self, x):
        y = self.conv3x3(x) + sum(branch(x) for branch in self.branches())
        if self.with_idt:
            y = y + x
        return self.act(y) if hasattr(self, "act") else y

    def equivalent_kernel_bias(self):
        """The float64 kernel and bias of the single 3x3 conv equal to all branches together."""
        kernel = self.conv3x3.weight.double().clone()
        bias = self.conv3x3.bias.double().clone()
        for branch in self.branches():
            k, b = branch.equivalent_kernel_bias()
            if k.shape[-1] == 1:
                k = F.pad(k, (1, 1, 1, 1))
            kernel, bias = kernel + k, bias + b
        if self.with_idt:
            idx = torch.arange(self.out_ch)
            kernel[idx, idx, 1, 1] += 1.0
        return kernel, bias


class ECBSR(nn.Module):
    """Head ECB, `blocks` middle ECBs and a linear tail ECB, then the anchor residual (the input,
    repeated once per sub-pixel) and a pixel shuffle."""

    def __init__(self, arch: ArchSpec):
        super().__init__()
        self.arch = arch
        layers = arch.layer_shapes()
        acts = [arch.act] * (len(layers) - 1) + ["linear"]
        self.backbone = nn.Sequential(
            *[ECB(i, o, act=a, with_idt=arch.with_idt) for (i, o), a in zip(layers, acts)]
        )
        self.upsampler = nn.PixelShuffle(arch.scale)

    def forward(self, x):
        anchor = x if self.arch.colors == 1 else torch.repeat_interleave(x, self.arch.scale ** 2, dim=1)
        return self.upsampler(self.backbone(x) + anchor)
