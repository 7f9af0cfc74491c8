"""The deploy-form (fused) network: plain 3x3 convs and activations, the anchor residual, depth-to-space.

`layout="crd"` matches PyTorch's PixelShuffle; `layout="dcr"` orders the last conv's output
channels (and the anchor) so that a DCR depth-to-space gives the same pixels: mobile runtimes run
DCR as one native op, while CRD becomes a 6-D reshape/transpose chain.
"""

from __future__ import annotations

import torch
from torch import nn

from .arch import RRELU_BOUNDS, ArchSpec


def make_deploy_activation(act: str, channels: int) -> nn.Module | None:
    if act == "prelu":
        return nn.PReLU(num_parameters=channels)
    if act == "relu":
        return nn.ReLU()
    if act == "rrelu":
        # RReLU in eval mode is a leaky ReLU with the mean slope; with the official bounds that is 0.
        slope = sum(RRELU_BOUNDS) / 2
        return nn.ReLU() if slope == 0 else nn.LeakyReLU(slope)
    if act == "softplus":
        return nn.Softplus()
    return None


def dcr_permutation(colors: int, scale: int) -> torch.Tensor:
    """Index list p such that channel k of the DCR-ordered tensor is channel p[k] of the CRD one.

    CRD reads sub-pixel (i, j) of colour c from channel c*s*s + i*s + j; DCR from (i*s + j)*C + c.
    """
    s2 = scale * scale
    return torch.tensor([c * s2 + k for k in range(s2) for c in range(colors)])


class DepthToSpaceDCR(nn.Module):
    def __init__(self, scale: int):
        super().__init__()
        self.scale = scale

    def forward(self, x):
        n, c, h, w = x.shape
        s = self.scale
        y = x.reshape(n, s, s, c // (s * s), h, w).permute(0, 3, 4, 1, 5, 2)
        return y.reshape(n, c // (s * s), h * s, w * s)


class PlainSR(nn.Module):
    def __init__(self, arch: ArchSpec, layout: str = "crd", clamp: bool = False):
        super().__init__()
        self.arch, self.layout, self.clamp = arch, layout, clamp
        layers = arch.layer_shapes()
        self.convs = nn.ModuleList(nn.Conv2d(i, o, 3, padding=1) for i, o in layers)
        self.acts = nn.ModuleList(
            make_deploy_activation(arch.act, o) or nn.Identity() for _, o in layers[:-1]
        )
        self.to_space = nn.PixelShuffle(arch.scale) if layout == "crd" else DepthToSpaceDCR(arch.scale)

    def anchor(self, x):
        if self.arch.colors == 1:
            return x
        s2 = self.arch.scale ** 2
        if self.layout == "crd":
            return torch.repeat_interleave(x, s2, dim=1)
        return torch.cat([x] * s2, dim=1)

    def forward(self, x):
        y = x
        for conv, act in zip(self.convs[:-1], self.acts):
            y = act(conv(y))
        y = self.to_space(self.convs[-1](y) + self.anchor(x))
        if self.clamp:
            y = torch.clamp(y, 0.0, self.arch.pixel_range)
        return y

    def with_layout(self, layout: str, clamp: bool) -> "PlainSR":
        """A copy in another channel layout (weights reordered) and clamp setting."""
        other = PlainSR(self.arch, layout=layout, clamp=clamp)
        other.load_state_dict(self.state_dict())
        if layout != self.layout:
            perm = dcr_permutation(self.arch.colors, self.arch.scale)
            if layout == "crd":
                perm = torch.argsort(perm)
            last = other.convs[-1]
            with torch.no_grad():
                last.weight.copy_(self.convs[-1].weight[perm])
                last.bias.copy_(self.convs[-1].bias[perm])
        return other.eval()


