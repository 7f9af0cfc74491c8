"""Cross-layer range equalisation: exact in float, pure, and it evens out the channel ranges."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from ecbdeploy.api import fused_model
from ecbdeploy.calibration import builtin
from ecbdeploy.checkpoint import load_checkpoint
from ecbdeploy.equalize import channel_ranges, equalize, utilisation
from ecbdeploy.errors import EcbDeployError
from ecbdeploy.fusion import fuse, photo_input

REFERENCE = Path(__file__).resolve().parents[1] / "models" / "ecbsr_m4c16_x2.pth"
EXACT = 1e-4  # max abs float difference as a fraction of the pixel range


def _run(net, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return net(torch.from_numpy(x)).numpy()


@pytest.fixture(scope="module")
def reference():
    """The trained reference network, fused, with a few small calibration samples."""
    plain, _ = fused_model(load_checkpoint(REFERENCE))
    return plain, builtin(plain.arch, (64, 96), 4)


@pytest.fixture(scope="module")
def equalised(reference):
    plain, calib = reference
    return equalize(plain, calib)


def test_float_output_is_unchanged_on_a_real_photo(reference, equalised):
    plain, _ = reference
    x = photo_input(1, 2, 255.0, name="coffee", size=96)  # not a calibration photo
    diff = np.abs(_run(equalised.plain, x) - _run(plain, x)).max()
    assert diff <= EXACT * 255.0, diff
    assert any(float(s.max()) > 1.2 for s in equalised.scales)  # something was actually rescaled


def test_the_input_network_is_not_modified(reference):
    plain, calib = reference
    before = {k: v.clone() for k, v in plain.state_dict().items()}
    result = equalize(plain, calib)
    after = plain.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert result.plain is not plain and result.plain.convs[0].weight is not plain.convs[0].weight
    assert (result.plain.layout, result.plain.clamp) == (plain.layout, plain.clamp)


def test_only_inner_channels_move(reference, equalised):
    plain, _ = reference
    eq, scales = equalised.plain, [torch.from_numpy(s).float() for s in equalised.scales]
    # The head's rows are scaled, so it still reads the image in pixel units...
    assert torch.allclose(eq.convs[0].weight, plain.convs[0].weight * scales[0].view(-1, 1, 1, 1), rtol=1e-6)
    # ...and the last conv's rows (the residual added to the anchor) keep their meaning.
    assert torch.equal(eq.convs[-1].bias, plain.convs[-1].bias)
    assert torch.allclose(eq.convs[-1].weight * scales[-1].view(1, -1, 1, 1), plain.convs[-1].weight, rtol=1e-6)


def test_channel_ranges_even_out_inside_unchanged_tensor_ranges(reference, equalised):
    plain, calib = reference
    before, after = channel_ranges(plain, calib), channel_ranges(equalised.plain, calib)
    for b, a in zip(before, after):
        for lo_b, hi_b, lo_a, hi_a in ((b.conv_lo, b.conv_hi, a.conv_lo, a.conv_hi),
                                       (b.act_lo, b.act_hi, a.act_lo, a.act_hi)):
            assert utilisation(lo_a, hi_a) > utilisation(lo_b, hi_b) + 0.05
            # the per-tensor int8 range (hence its step) does not grow
            assert min(lo_a.min(), 0) >= min(lo_b.min(), 0) * (1 + 1e-4) - 1e-3
            assert hi_a.max() <= hi_b.max() * (1 + 1e-4) + 1e-3
    assert all(a > b for a, b in zip(equalised.utilisation_after, equalised.utilisation_before))


def test_next_conv_int8_weights_do_not_suffer(equalised):
    for before, after in zip(equalised.weight_error_before, equalised.weight_error_after):
        assert after <= 1.5 * before


def test_report_figures(equalised):
    d = equalised.to_dict()
    assert len(d["scale_max"]) == 5 and all(v >= 1.0 for v in d["scale_min"])
    assert all(a > b for a, b in zip(d["channel_range_utilisation_after"], d["channel_range_utilisation_before"]))


@pytest.mark.parametrize("act", ["prelu", "relu", "linear"])
@pytest.mark.parametrize("layout", ["crd", "dcr"])
def test_exact_for_other_activations_and_layouts(make_ecbsr, random_input, act, layout):
    plain = fuse(make_ecbsr(blocks=2, channels=8, colors=3, scale=2, act=act, seed=3)).with_layout(layout, clamp=False)
    calib = random_input(3, 24, 24, seed=1).numpy().transpose(0, 2, 3, 1)
    x = random_input(3, 20, 28, seed=2).numpy()
    eq = equalize(plain, calib).plain
    assert np.abs(_run(eq, x) - _run(plain, x)).max() <= EXACT * 255.0


def test_a_dead_channel_gets_the_capped_factor_and_stays_exact(make_ecbsr, random_input):
    plain = fuse(make_ecbsr(blocks=1, channels=8))
    with torch.no_grad():
        plain.convs[0].weight[2] = 0.0
        plain.convs[0].bias[2] = 0.0
    calib = random_input(1, 16, 16).numpy().transpose(0, 2, 3, 1)
    result = equalize(plain, calib, max_scale=4.0)
    assert result.scales[0][2] == 4.0
    x = random_input(1, 16, 16, seed=5).numpy()
    assert np.abs(_run(result.plain, x) - _run(plain, x)).max() <= EXACT * 255.0


def test_refusals(make_ecbsr, random_input):
    calib = random_input(1, 8, 8).numpy().transpose(0, 2, 3, 1)
    with pytest.raises(EcbDeployError, match="softplus"):
        equalize(fuse(make_ecbsr(act="softplus")), calib)
    with pytest.raises(EcbDeployError, match="NHWC"):
        equalize(fuse(make_ecbsr()), calib.transpose(0, 3, 1, 2)[:, :, :, :4])
