"""Shared fixtures: small ECBSR networks with non-trivial random weights, and a CLI runner.

Factories are session-scoped so hypothesis tests can use them too.
"""

from __future__ import annotations

import math

import pytest
import torch
from click.testing import CliRunner

from ecbdeploy.arch import ArchSpec
from ecbdeploy.train_model import ECBSR


def randomize_ecbsr_(model: ECBSR, seed: int = 0) -> ECBSR:
    """Give every branch weights that matter, in place.

    The default init leaves the edge branches' `scale`/`bias` at ~1e-3, where a fusion bug in
    them would hide under the tolerance: here their scales have magnitude 0.1-1 and every bias,
    `b0` included (it pads the 1x1 output at the border), is ~5% of the pixel range. Each branch
    has a gain of ~0.4 so activations stay on the pixel-range scale through a few blocks.
    """
    g = torch.Generator().manual_seed(seed)
    r = model.arch.pixel_range

    def normal_(t, std):
        t.copy_(torch.randn(t.shape, generator=g) * std)

    with torch.no_grad():
        for ecb in model.backbone:
            cin = ecb.in_ch
            normal_(ecb.conv3x3.weight, 0.4 / math.sqrt(9 * cin))
            normal_(ecb.conv3x3.bias, 0.05 * r)
            b = ecb.conv1x1_3x3
            normal_(b.k0, 1.0 / math.sqrt(cin))
            normal_(b.b0, 0.05 * r)
            normal_(b.k1, 0.4 / math.sqrt(9 * b.k0.shape[0]))
            normal_(b.b1, 0.05 * r)
            for e in (ecb.conv1x1_sbx, ecb.conv1x1_sby, ecb.conv1x1_lpl):
                normal_(e.k0, 0.1 / math.sqrt(cin))
                normal_(e.b0, 0.05 * r)
                sign = torch.randint(0, 2, e.scale.shape, generator=g) * 2 - 1
                e.scale.copy_(sign * (0.1 + 0.9 * torch.rand(e.scale.shape, generator=g)))
                normal_(e.bias, 0.05 * r)
            if hasattr(ecb, "act") and isinstance(ecb.act, torch.nn.PReLU):
                ecb.act.weight.copy_(torch.rand(ecb.act.weight.shape, generator=g) * 0.5)
    return model


@pytest.fixture(scope="session")
def make_ecbsr():
    """make_ecbsr(blocks=1, channels=8, colors=1, scale=2, act="prelu", with_idt=False,
    pixel_range=255.0, seed=0) -> an ECBSR in eval mode with non-trivial random weights."""

    def make(blocks=1, channels=8, colors=1, scale=2, act="prelu", with_idt=False, pixel_range=255.0, seed=0):
        arch = ArchSpec(blocks=blocks, channels=channels, colors=colors, scale=scale, act=act,
                        with_idt=with_idt, pixel_range=float(pixel_range))
        return randomize_ecbsr_(ECBSR(arch), seed).eval()

    return make


@pytest.fixture(scope="session")
def random_input():
    """random_input(colors, h, w, pixel_range=255.0, seed=0) -> 1xCxHxW float32 uniform in the range."""

    def make(colors, h, w, pixel_range=255.0, seed=0):
        g = torch.Generator().manual_seed(seed)
        return torch.rand((1, colors, h, w), generator=g) * pixel_range

    return make


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """The test machine's cores are shared: two PyTorch threads fighting for one core are much
    slower than one."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture
def cli_runner():
    return CliRunner()
