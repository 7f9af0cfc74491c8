"""Property-based fusion tests: random architectures, weights and image sizes.

Tolerance: max abs difference <= 1e-4 x pixel range (the project default).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ecbdeploy.arch import ACTIVATIONS
from ecbdeploy.fusion import fuse

FUSION_TOL = 1e-4  # fraction of the pixel range
SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])

archs = st.fixed_dictionaries({
    "blocks": st.integers(0, 3),
    "channels": st.integers(1, 12),
    "colors": st.sampled_from([1, 3]),
    "scale": st.sampled_from([2, 3, 4]),
    "act": st.sampled_from(ACTIVATIONS),
    "with_idt": st.booleans(),
    "pixel_range": st.sampled_from([1.0, 255.0]),
    "seed": st.integers(0, 2**31 - 1),
})
sizes = st.tuples(st.integers(1, 20), st.integers(1, 20))


def _run(net, x):
    with torch.no_grad():
        return net(x)


@SETTINGS
@given(spec=archs, hw=sizes, input_seed=st.integers(0, 2**31 - 1))
def test_fused_network_equals_multibranch(make_ecbsr, random_input, spec, hw, input_seed):
    model = make_ecbsr(**spec)
    r, c, s = spec["pixel_range"], spec["colors"], spec["scale"]
    x = random_input(c, *hw, r, seed=input_seed)
    y, z = _run(model, x), _run(fuse(model), x)
    assert y.shape == z.shape == (1, c, hw[0] * s, hw[1] * s)
    assert torch.isfinite(y).all()
    assert float((y - z).abs().max()) <= FUSION_TOL * r


@SETTINGS
@given(spec=archs, hw=sizes)
def test_every_ecb_is_its_equivalent_conv(make_ecbsr, random_input, spec, hw):
    """Block by block: the float64 equivalent conv == the ECB's branches (before the activation)."""
    model = make_ecbsr(**spec)
    r = spec["pixel_range"]
    x = random_input(spec["colors"], *hw, r, seed=spec["seed"] % 1000)
    with torch.no_grad():
        for ecb in model.backbone:
            want = ecb.conv3x3(x) + sum(b(x) for b in ecb.branches()) + (x if ecb.with_idt else 0)
            k, b = ecb.equivalent_kernel_bias()
            got = F.conv2d(x.double(), k, b, padding=1)
            scale = max(r, float(want.abs().max()))  # activations may outgrow the pixel range
            assert float((got - want.double()).abs().max()) <= FUSION_TOL * scale
            x = ecb(x)


@SETTINGS
@given(spec=archs)
def test_fused_network_has_the_plain_layout(make_ecbsr, spec):
    """One 3x3 conv per ECB with the documented widths; activations kept; nothing else learned."""
    model = make_ecbsr(**spec)
    plain = fuse(model)
    c, s, ch = spec["colors"], spec["scale"], spec["channels"]
    widths = [(conv.in_channels, conv.out_channels) for conv in plain.convs]
    assert widths == [(c, ch)] + [(ch, ch)] * spec["blocks"] + [(ch, c * s * s)]
    assert all(conv.kernel_size == (3, 3) and conv.padding == (1, 1) for conv in plain.convs)
    if spec["act"] == "prelu":
        for ecb, act in zip(model.backbone, plain.acts):
            assert torch.equal(ecb.act.weight, act.weight)
