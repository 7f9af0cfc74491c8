"""Training: the loss falls, the files load as official/BasicSR checkpoints, resume continues."""

import json

import numpy as np
import pytest
import torch

from ecbdeploy.checkpoint import load_checkpoint
from ecbdeploy.cli import cli
from ecbdeploy.errors import EcbDeployError
from ecbdeploy.images import photo, save_image
from ecbdeploy.train import TrainConfig, lr_at, reparameterized_forward, state_path, train
from ecbdeploy.train_data import PatchSampler, prepare_pairs
from ecbdeploy.train_model import ECBSR

TINY = {"scale": 2, "blocks": 1, "channels": 4, "iters": 40, "patch": 12, "batch": 4, "lr": 5e-4,
        "log_every": 10, "val_every": 0}


@pytest.fixture(scope="module")
def crops():
    """Small crops of three training photographs (fast to prepare)."""
    return [(name, photo(name)[100:196, 120:216]) for name in ("camera", "brick", "rocket")]


def test_reparameterized_forward_matches_the_branches_in_value_and_gradient(make_ecbsr, random_input):
    model = make_ecbsr(blocks=2, channels=8, colors=3, scale=3, with_idt=True).train()
    x = random_input(3, 11, 13).repeat(2, 1, 1, 1)
    grads = []
    for forward in (model, lambda t: reparameterized_forward(model, t)):
        model.zero_grad()
        y = forward(x)
        y.square().mean().backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad})
        grads[-1]["_out"] = y.detach()
    scale = grads[0]["_out"].abs().max()
    assert torch.allclose(grads[0]["_out"], grads[1]["_out"], atol=1e-5 * scale)
    # Some gradients are exactly zero in theory (the edge filters sum to zero): compare against
    # the largest gradient, not each tensor's own.
    largest = max(g.abs().max() for name, g in grads[0].items() if name != "_out")
    for name in grads[0]:
        assert torch.allclose(grads[0][name], grads[1][name], rtol=1e-3, atol=1e-5 * largest), name


def test_patches_are_aligned_lr_hr_pairs(crops):
    pairs = prepare_pairs(crops, 2, 1, 255.0, min_lr_side=12)
    lr, hr = PatchSampler(pairs, 12, 2, torch.Generator().manual_seed(0)).batch(8)
    assert lr.shape == (8, 1, 12, 12) and hr.shape == (8, 1, 24, 24)
    # The LR patch is (nearly) the HR patch averaged over 2x2 blocks, whatever the flips.
    pooled = torch.nn.functional.avg_pool2d(hr, 2)
    assert (pooled - lr).abs().mean() < 4.0
    assert (pooled - lr.flip(-1)).abs().mean() > 4.0 or (pooled - lr.flip(-2)).abs().mean() > 4.0


def test_lr_schedule_decays_from_base_to_one_percent():
    assert lr_at(0, 100, 1e-3) == pytest.approx(1e-3)
    assert lr_at(100, 100, 1e-3) == pytest.approx(1e-5)
    assert lr_at(30, 100, 1e-3) > lr_at(60, 100, 1e-3)


def _l1_on(model, pairs) -> float:
    with torch.no_grad():
        return float(np.mean([(model(p.lr[None]) - p.hr[None]).abs().mean() for p in pairs]))


def test_training_lowers_the_loss_and_writes_an_official_checkpoint(tmp_path, crops):
    out = tmp_path / "tiny.pth"
    config = TrainConfig(**TINY)
    torch.manual_seed(config.seed)
    initial = ECBSR(config.arch()).eval()  # the weights training starts from
    result = train(config, crops, out, data_label="crops")
    assert result.iterations == 40 and len(result.losses) == 4

    raw = torch.load(out, weights_only=True)
    assert set(raw) == set(ECBSR(config.arch()).state_dict())  # bare state_dict, official keys
    loaded = load_checkpoint(out)
    assert loaded.format == "official" and loaded.arch == config.arch()
    pairs = prepare_pairs(crops, 2, 1, 255.0)
    assert _l1_on(loaded.model, pairs) < 0.85 * _l1_on(initial, pairs)

    side = json.loads(out.with_suffix(".json").read_text())
    assert side["arch"] == config.arch().to_dict()
    assert side["train"]["iterations"] == 40 and side["train"]["files"] == ["camera", "brick", "rocket"]
    assert side["train"]["data"] == "crops" and side["train"]["wall_time_s"] >= 0
    assert torch.load(state_path(out), weights_only=True)["iteration"] == 40


def test_resume_continues_from_the_saved_weights_and_iteration(tmp_path, crops):
    out = tmp_path / "tiny.pth"
    first = train(TrainConfig(**TINY), crops, out)
    saved = {k: v.clone() for k, v in torch.load(out, weights_only=True).items()}
    # A vanishing learning rate: the resumed weights must be the saved ones, not a new init.
    resumed = train(TrainConfig(**{**TINY, "iters": 60, "lr": 1e-12}), crops, out, resume=True)
    assert resumed.iterations == 60 and len(resumed.losses) == 2
    after = torch.load(out, weights_only=True)
    for k, v in saved.items():
        assert torch.allclose(after[k], v, atol=1e-6), k
    state = torch.load(state_path(out), weights_only=True)
    assert state["iteration"] == 60
    assert all(int(s["step"]) == 60 for s in state["optimizer"]["state"].values())  # Adam moments carried over
    assert json.loads(out.with_suffix(".json").read_text())["train"]["iterations"] == 60
    assert resumed.wall_time >= first.wall_time
    with pytest.raises(EcbDeployError, match="already has 60 iterations"):
        train(TrainConfig(**{**TINY, "iters": 60}), crops, out, resume=True)
    with pytest.raises(EcbDeployError, match="not the requested"):
        train(TrainConfig(**{**TINY, "iters": 80, "channels": 8}), crops, out, resume=True)


def test_resume_without_a_state_file_is_refused(tmp_path, crops):
    with pytest.raises(EcbDeployError, match="--resume needs"):
        train(TrainConfig(**TINY), crops, tmp_path / "none.pth", resume=True)


def test_basicsr_format_rgb_in_the_unit_range(tmp_path, crops):
    out = tmp_path / "rgb.pth"
    config = TrainConfig(**{**TINY, "colors": 3, "pixel_range": 1.0, "save_format": "basicsr", "lr": 5e-4})
    train(config, crops, out)
    raw = torch.load(out, weights_only=True)
    assert set(raw) == {"params", "params_ema"}
    loaded = load_checkpoint(out)
    assert loaded.format == "basicsr" and loaded.arch.pixel_range == 1.0 and loaded.arch.colors == 3


def test_patch_larger_than_every_image_is_a_clear_error(tmp_path, crops):
    with pytest.raises(EcbDeployError, match="smaller --patch"):
        train(TrainConfig(**{**TINY, "patch": 64}), crops, tmp_path / "x.pth")


def test_cli_trains_from_a_folder_and_reports_progress(tmp_path, cli_runner, crops):
    data = tmp_path / "data"
    data.mkdir()
    for name, img in crops:
        save_image(data / f"{name}.png", img)
    out = tmp_path / "m.pth"
    args = ["train", "--data", str(data), "--scale", "2", "--blocks", "1", "--channels", "4", "--iters", "20",
            "--patch", "12", "--batch", "2", "--log-every", "10", "--val-every", "0", "-o", str(out)]
    result = cli_runner.invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert "iter 10/20" in result.output and "iter 20/20" in result.output and "wrote" in result.output
    assert json.loads(out.with_suffix(".json").read_text())["train"]["files"] == [
        "brick.png", "camera.png", "rocket.png"]
    assert np.isfinite(load_checkpoint(out).model.backbone[0].conv3x3.weight.detach().numpy()).all()


@pytest.mark.parametrize("data,message", [("/no/such/folder", "data not found"),
                                          ("builtin-heldout", "evaluation only")])
def test_cli_bad_data_is_a_one_line_error(tmp_path, cli_runner, data, message):
    result = cli_runner.invoke(cli, ["train", "--data", data, "--scale", "2", "--blocks", "1", "--channels", "4",
                                     "-o", str(tmp_path / "m.pth")])
    assert result.exit_code == 1
    assert message in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1
