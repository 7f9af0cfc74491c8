"""Fusion exactness: every ECB branch alone and all together, every activation, identity, colours,
scales, odd sizes and the image border, real photographs; and `verify_fusion` failing loudly.

Tolerance everywhere: max abs difference <= 1e-4 x pixel range (FUSION_TOL), the project default.
Observed errors are ~1e-7..1e-6 x pixel range, so the margin is >= 30x.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ecbdeploy import train_model
from ecbdeploy.arch import ACTIVATIONS
from ecbdeploy.deploy_model import PlainSR
from ecbdeploy.errors import EcbDeployError
from ecbdeploy.fusion import DEFAULT_FUSION_TOLERANCE, FusionCheck, fuse, verify_fusion
from ecbdeploy.images import lr_hr_pair, photo

FUSION_TOL = 1e-4  # fraction of the pixel range
assert FUSION_TOL == DEFAULT_FUSION_TOLERANCE

BRANCHES = ("conv3x3", "conv1x1_3x3", "conv1x1_sbx", "conv1x1_sby", "conv1x1_lpl")


def keep_only(model, branch: str):
    """Zero every branch but `branch` in every ECB, so only it contributes."""
    with torch.no_grad():
        for ecb in model.backbone:
            for name in BRANCHES:
                if name != branch:
                    for p in getattr(ecb, name).parameters():
                        if p.requires_grad:  # not the fixed edge masks
                            p.zero_()
    return model


def max_abs(a, b) -> float:
    return float((a - b).detach().abs().max())


def run(net, x):
    with torch.no_grad():
        return net(x)


# --- single branches ------------------------------------------------------------------------------

@pytest.mark.parametrize("branch", BRANCHES)
@pytest.mark.parametrize("pixel_range", [255.0, 1.0])
def test_single_branch_equivalent_conv_matches_its_forward(make_ecbsr, random_input, branch, pixel_range):
    """The branch's own `equivalent_kernel_bias()` as one padded 3x3 conv == the branch's forward,
    border included (odd 7x9 input)."""
    model = make_ecbsr(blocks=1, channels=6, pixel_range=pixel_range, seed=3)
    ecb = model.backbone[1]
    module = getattr(ecb, branch)
    x = random_input(6, 7, 9, pixel_range, seed=1)
    if branch == "conv3x3":
        k, b = module.weight.detach().double(), module.bias.detach().double()
    else:
        k, b = module.equivalent_kernel_bias()
        assert k.dtype == torch.float64 and k.shape == (6, 6, 3, 3)
    want = run(module, x).double()
    got = F.conv2d(x.double(), k, b, padding=1)
    assert got.shape == want.shape == (1, 6, 7, 9)
    assert max_abs(got, want) <= FUSION_TOL * pixel_range
    # The branch really contributes (the weights are not the 1e-3 init).
    assert float(want.abs().max()) > 0.05 * pixel_range


@pytest.mark.parametrize("branch", BRANCHES)
@pytest.mark.parametrize("colors", [1, 3])
def test_model_with_one_branch_fuses_exactly(make_ecbsr, random_input, branch, colors):
    model = keep_only(make_ecbsr(blocks=2, channels=8, colors=colors, scale=3, seed=5), branch)
    x = random_input(colors, 7, 9, seed=2)
    y, z = run(model, x), run(fuse(model), x)
    assert y.shape == (1, colors, 21, 27)
    assert max_abs(y, z) <= FUSION_TOL * 255
    # Only that branch is left, and it still changes the output beyond the anchor residual.
    anchor = F.interpolate(x, scale_factor=3, mode="nearest")
    assert max_abs(y, anchor) > 1.0


# --- all branches together ------------------------------------------------------------------------

@pytest.mark.parametrize("act", ACTIVATIONS)
@pytest.mark.parametrize("with_idt", [False, True])
def test_every_activation_with_and_without_identity(make_ecbsr, random_input, act, with_idt):
    model = make_ecbsr(blocks=3, channels=8, act=act, with_idt=with_idt, seed=7)
    x = random_input(1, 11, 13, seed=4)
    assert max_abs(run(model, x), run(fuse(model), x)) <= FUSION_TOL * 255


@pytest.mark.parametrize("colors", [1, 3])
@pytest.mark.parametrize("scale", [2, 3, 4])
@pytest.mark.parametrize("pixel_range", [255.0, 1.0])
def test_colours_scales_ranges(make_ecbsr, random_input, colors, scale, pixel_range):
    model = make_ecbsr(blocks=2, channels=12, colors=colors, scale=scale, pixel_range=pixel_range,
                       with_idt=True, seed=scale)
    x = random_input(colors, 9, 7, pixel_range, seed=scale)
    y, z = run(model, x), run(fuse(model), x)
    assert y.shape == z.shape == (1, colors, 9 * scale, 7 * scale)
    assert max_abs(y, z) <= FUSION_TOL * pixel_range


def test_identity_branch_is_in_the_fused_kernel(make_ecbsr):
    """with_idt adds exactly 1 at the centre tap of the kernel's diagonal, in every ECB whose input
    and output widths match (as in the official code): here the middle ECB and the 4 -> 1*2^2 tail,
    not the 1 -> 4 head."""
    on = make_ecbsr(blocks=1, channels=4, scale=2, with_idt=True)
    off = make_ecbsr(blocks=1, channels=4, scale=2, with_idt=False)
    k_on, k_off = fuse(on).convs, fuse(off).convs
    eye = torch.zeros(4, 4, 3, 3, dtype=torch.float64)
    eye[torch.arange(4), torch.arange(4), 1, 1] = 1.0
    for i in (1, 2):
        assert torch.allclose((k_on[i].weight - k_off[i].weight).double(), eye, atol=1e-6)
    assert torch.equal(k_on[0].weight, k_off[0].weight)


@pytest.mark.parametrize("h,w", [(1, 1), (1, 5), (2, 3), (7, 9), (8, 8)])
def test_border_pixels_explicitly(make_ecbsr, random_input, h, w):
    """Tiny and odd sizes: every output pixel is a border pixel, or most are."""
    model = make_ecbsr(blocks=2, channels=8, with_idt=True, seed=11)
    x = random_input(1, h, w, seed=h * 31 + w)
    diff = (run(model, x) - run(fuse(model), x)).abs()[0, 0]
    s = 2
    border = torch.ones_like(diff, dtype=torch.bool)
    border[s:-s, s:-s] = False  # the output pixels produced by the outermost LR row/column
    assert float(diff[border].max()) <= FUSION_TOL * 255
    assert float(diff.max()) <= FUSION_TOL * 255


def test_border_check_has_teeth(make_ecbsr, random_input, monkeypatch):
    """If the 1x1 output were zero-padded (not bias-padded), the fused conv would be wrong from
    the border inwards (one LR pixel per layer): the border comparison must be able to see that."""
    model = make_ecbsr(blocks=1, channels=8, seed=13)  # 3 layers
    x = random_input(1, 9, 11, seed=6)
    fused = fuse(model)
    monkeypatch.setattr(train_model, "_pad_with_bias", lambda y, b: F.pad(y, (1, 1, 1, 1)))
    diff = (run(model, x) - run(fused, x)).abs()[0, 0]
    assert float(diff[6:12, 6:16].max()) <= FUSION_TOL * 255  # LR pixels >= 3 from the border
    assert float(diff[0].min()) > 10 * FUSION_TOL * 255  # the first row is off everywhere
    assert float(diff.max()) > 100 * FUSION_TOL * 255


def test_fuse_leaves_the_model_untouched_and_is_deterministic(make_ecbsr):
    model = make_ecbsr(blocks=1, channels=4)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    a, b = fuse(model), fuse(model)
    assert isinstance(a, PlainSR) and not a.training
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and torch.equal(va, vb)


@torch.no_grad()
def test_float64_fusion_is_no_worse_than_naive_float32(make_ecbsr):
    """Fusing in float64 and rounding once gives the float32 kernel nearest to the exact one;
    a naive float32 fusion of the same maths is measurably further away."""
    model = make_ecbsr(blocks=1, channels=32, seed=17)
    ecb = model.backbone[1]
    exact, _ = ecb.equivalent_kernel_bias()
    fused32 = exact.float()
    naive = ecb.conv3x3.weight.clone()
    b = ecb.conv1x1_3x3
    naive += torch.einsum("omhw,mi->oihw", b.k1, b.k0[:, :, 0, 0])
    for e in (ecb.conv1x1_sbx, ecb.conv1x1_sby, ecb.conv1x1_lpl):
        naive += (e.scale * e.mask) * e.k0[:, :, 0, 0][:, :, None, None]
    err_fused = (fused32.double() - exact).abs()
    err_naive = (naive.detach().double() - exact).abs()
    assert float(err_naive.max()) < 1e-5  # same maths, only rounding differs
    assert bool((err_fused <= err_naive + 1e-12).all())
    assert float(err_fused.sum()) < float(err_naive.sum())


def test_dcr_layout_gives_the_same_pixels(make_ecbsr, random_input):
    for colors in (1, 3):
        model = make_ecbsr(blocks=1, channels=8, colors=colors, scale=3, seed=19)
        crd = fuse(model)
        dcr = crd.with_layout("dcr", clamp=False)
        back = dcr.with_layout("crd", clamp=False)
        x = random_input(colors, 5, 7, seed=8)
        assert max_abs(run(model, x), run(dcr, x)) <= FUSION_TOL * 255
        assert torch.equal(run(crd, x), run(back, x))


# --- real photographs -----------------------------------------------------------------------------

@pytest.mark.parametrize("pixel_range", [255.0, 1.0])
@pytest.mark.parametrize("name,colors,scale", [("astronaut", 1, 2), ("coffee", 1, 3), ("coffee", 3, 4)])
def test_parity_on_real_photos(make_ecbsr, name, colors, scale, pixel_range, record_property):
    """M4C16, the whole photograph (bicubic LR, Y or RGB) in the official (0-255) or BasicSR (0-1) range."""
    lr, hr = lr_hr_pair(photo(name), scale, colors, pixel_range)
    model = make_ecbsr(blocks=4, channels=16, colors=colors, scale=scale, pixel_range=pixel_range, seed=23)
    x = torch.from_numpy(lr[None])
    y, z = run(model, x), run(fuse(model), x)
    assert y.shape[2:] == hr.shape[1:]
    err = max_abs(y, z)
    record_property("max_abs_error", err)
    print(f"{name} colors={colors} x{scale} range={pixel_range:g}: max abs {err:.3g} "
          f"({err / pixel_range:.2e} of the range)")
    assert err <= FUSION_TOL * pixel_range


# --- verify_fusion --------------------------------------------------------------------------------

@pytest.mark.parametrize("pixel_range", [255.0, 1.0])
def test_verify_fusion_passes_and_reports(make_ecbsr, pixel_range):
    model = make_ecbsr(blocks=2, channels=8, pixel_range=pixel_range)
    check = verify_fusion(model, fuse(model))
    assert isinstance(check, FusionCheck)
    assert check.tolerance == pytest.approx(FUSION_TOL * pixel_range)
    assert 0 <= check.max_abs_random <= check.tolerance
    assert 0 <= check.max_abs_photo <= check.tolerance
    assert check.photo == "astronaut"


@pytest.mark.parametrize("corruption", ["weight", "bias", "prelu", "nan"])
def test_verify_fusion_fails_loudly_on_a_corrupt_fused_net(make_ecbsr, corruption):
    model = make_ecbsr(blocks=2, channels=8)
    plain = fuse(model)
    with torch.no_grad():
        if corruption == "weight":
            plain.convs[1].weight[3, 2, 0, 2] += 0.01  # one tap, a corner: mostly a border effect
        elif corruption == "bias":
            plain.convs[-1].bias[0] += 0.1
        elif corruption == "prelu":
            plain.acts[0].weight[1] += 0.05
        else:
            plain.convs[0].weight[0, 0, 1, 1] = float("nan")
    with pytest.raises(EcbDeployError) as err:
        verify_fusion(model, plain)
    msg = str(err.value)
    assert "fusion check failed" in msg and "\n" not in msg
    assert "0.0255" in msg and "0.0001 of the pixel range" in msg


def test_verify_fusion_applies_the_given_tolerance(make_ecbsr):
    model = make_ecbsr(blocks=1, channels=8)
    plain = fuse(model)
    verify_fusion(model, plain, tolerance=1e-5)
    with pytest.raises(EcbDeployError, match=r"1e-10 of the pixel range"):
        verify_fusion(model, plain, tolerance=1e-10)
