"""Evaluation protocol: bicubic figures from first principles, reference-model gain, runtimes, CLI."""

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from PIL import Image
from skimage.metrics import structural_similarity

from ecbdeploy.api import fused_model
from ecbdeploy.checkpoint import load_checkpoint
from ecbdeploy.cli import cli
from ecbdeploy.errors import EcbDeployError
from ecbdeploy.evaluate import evaluate, format_table, open_models
from ecbdeploy.images import HELD_OUT_PHOTOS, photo, photos
from ecbdeploy.runners import TorchRunner

MODELS = Path(__file__).resolve().parents[1] / "models"
REFERENCE_X2 = MODELS / "ecbsr_m4c16_x2.pth"


def _y255(rgb01):
    """BT.601 Y on 0-255, written out from the standard's coefficients."""
    return 16.0 + 65.481 * rgb01[..., 0] + 128.553 * rgb01[..., 1] + 24.966 * rgb01[..., 2]


def _bicubic_by_hand(rgb01, scale, eight_bit_lr=True):
    """The protocol spelt out with PIL directly: crop, bicubic down (saved as 8 bits), bicubic up, Y,
    shave, PSNR/SSIM."""
    h, w = rgb01.shape[0] // scale * scale, rgb01.shape[1] // scale * scale
    hr = rgb01[:h, :w].astype(np.float32)

    def resize(img, height, width):
        return np.stack([np.asarray(Image.fromarray(img[..., c], mode="F").resize((width, height), Image.BICUBIC))
                         for c in range(3)], -1)

    lr = np.clip(resize(hr, h // scale, w // scale), 0, 1)
    if eight_bit_lr:
        lr = (np.rint(lr * 255.0) / 255.0).astype(np.float32)
    up = np.clip(resize(lr, h, w), 0, 1)
    sr_y = np.rint(_y255(up.astype(np.float64)))[scale:-scale, scale:-scale]
    hr_y = _y255(hr.astype(np.float64))[scale:-scale, scale:-scale]
    psnr = 10 * np.log10(255.0 ** 2 / np.mean((sr_y - hr_y) ** 2))
    ssim = structural_similarity(sr_y, hr_y, data_range=255.0, gaussian_weights=True, sigma=1.5,
                                 use_sample_covariance=False)
    return psnr, ssim


@pytest.fixture(scope="module")
def held_out():
    return photos(HELD_OUT_PHOTOS)


@pytest.fixture(scope="module")
def small_images():
    return [(name, photo(name)[50:150, 60:190]) for name in HELD_OUT_PHOTOS]


@pytest.mark.parametrize("scale", [2, 3])
@pytest.mark.parametrize("float_lr", [False, True])
def test_bicubic_row_follows_the_protocol(small_images, scale, float_lr):
    ev = evaluate([], small_images, scale, float_lr=float_lr)
    assert [r.label for r in ev.rows] == ["bicubic"]
    for name, img in small_images:
        psnr, ssim = _bicubic_by_hand(img, scale, eight_bit_lr=not float_lr)
        assert ev.bicubic.scores[name].psnr == pytest.approx(psnr, abs=1e-3)
        assert ev.bicubic.scores[name].ssim == pytest.approx(ssim, abs=1e-4)
    assert ev.bicubic.mean_psnr == pytest.approx(np.mean([s.psnr for s in ev.bicubic.scores.values()]))


@pytest.mark.parametrize("name,fmt,colors,scale,pixel_range", [
    ("ecbsr_m4c16_x2.pth", "official", 1, 2, 255.0),
    ("ecbsr_m4c16_x4.pth", "official", 1, 4, 255.0),
    ("ecbsr_m4c16_x3_rgb.pth", "basicsr", 3, 3, 1.0),
])
def test_reference_models_beat_bicubic_by_half_a_db(held_out, name, fmt, colors, scale, pixel_range):
    loaded = load_checkpoint(MODELS / name)
    assert loaded.format == fmt
    assert (loaded.arch.colors, loaded.arch.scale, loaded.arch.pixel_range) == (colors, scale, pixel_range)
    plain, _ = fused_model(loaded)  # same figures as the branches (checked below), 5x faster
    ev = evaluate([TorchRunner(MODELS / name, plain, loaded.arch, "pytorch-fused")], held_out)
    assert ev.scale == scale
    gain = ev.rows[1].mean_psnr - ev.bicubic.mean_psnr
    assert gain >= 0.5, format_table(ev)
    assert ev.rows[1].mean_ssim > ev.bicubic.mean_ssim
    for image in HELD_OUT_PHOTOS:  # better on every photograph, not only on average
        assert ev.rows[1].scores[image].psnr > ev.bicubic.scores[image].psnr


def test_fused_and_multibranch_rows_agree(small_images):
    runners = open_models([REFERENCE_X2], fused=True)
    assert [r.name for r in runners] == ["pytorch-multibranch", "pytorch-fused"]
    ev = evaluate(runners, small_images)
    assert [r.label for r in ev.rows] == ["bicubic", "ecbsr_m4c16_x2.pth", "ecbsr_m4c16_x2.pth (fused)"]
    assert ev.rows[1].mean_psnr == pytest.approx(ev.rows[2].mean_psnr, abs=0.01)


def _export_static_onnx(model, arch, path, hw):
    torch.onnx.export(model, (torch.zeros(1, arch.colors, *hw),), str(path), dynamo=False,
                      input_names=["lr"], output_names=["sr"])
    m = onnx.load(str(path))
    entry = m.metadata_props.add()
    entry.key, entry.value = "arch", json.dumps(arch.to_dict())
    onnx.save(m, str(path))


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the TorchScript exporter is enough here
def test_static_shape_onnx_model_is_tiled_and_scores_like_pytorch(tmp_path, small_images):
    loaded = load_checkpoint(REFERENCE_X2)
    plain, _ = fused_model(loaded)
    onnx_path = tmp_path / "x2_static.onnx"
    _export_static_onnx(plain, loaded.arch, onnx_path, (24, 32))
    runners = [TorchRunner(REFERENCE_X2, plain, loaded.arch, "pytorch-fused")] + open_models([onnx_path])
    assert runners[1].static_hw == (24, 32)
    ev = evaluate(runners, small_images)
    for name, _ in small_images:
        assert ev.rows[2].scores[name].psnr == pytest.approx(ev.rows[1].scores[name].psnr, abs=0.01)


def test_models_of_different_scales_are_refused(make_ecbsr, small_images):
    runners = [TorchRunner("a.pth", m, m.arch, "pytorch-multibranch")
               for m in (make_ecbsr(scale=2), make_ecbsr(scale=3))]
    with pytest.raises(EcbDeployError, match="different scales"):
        evaluate(runners, small_images)
    with pytest.raises(EcbDeployError, match="does not match"):
        evaluate(runners[:1], small_images, scale=4)


def test_cli_prints_a_table_and_writes_json(tmp_path, cli_runner, small_images):
    data = tmp_path / "hr"
    data.mkdir()
    for name, img in small_images:
        Image.fromarray((img * 255).round().astype(np.uint8)).save(data / f"{name}.png")
    out = tmp_path / "eval.json"
    result = cli_runner.invoke(cli, ["evaluate", str(REFERENCE_X2), "--data", str(data), "--json", str(out)])
    assert result.exit_code == 0, result.output
    assert "bicubic" in result.output and "ecbsr_m4c16_x2.pth" in result.output and "chelsea.png" in result.output
    report = json.loads(out.read_text())
    assert report["scale"] == 2 and [r["label"] for r in report["rows"]] == ["bicubic", "ecbsr_m4c16_x2.pth"]
    assert set(report["rows"][1]["per_image"]) == {f"{n}.png" for n in HELD_OUT_PHOTOS}
    assert report["rows"][1]["gain_db"] > 0
    assert "8-bit" in report["protocol"]["lr"]


def test_8bit_lr_feeds_every_model_the_same_bytes(small_images, cli_runner, tmp_path):
    """Default LR = 8-bit values; --lr float feeds the unrounded bicubic output, which scores differently."""
    runner = open_models([str(REFERENCE_X2)])[0]
    seen = []
    original = runner.__call__

    class Spy:
        arch, name, path = runner.arch, runner.name, runner.path

        def __call__(self, x):
            seen.append(x.copy())
            return original(x)

    eight = evaluate([Spy()], small_images)
    assert seen and all(np.array_equal(x, np.rint(x)) for x in seen)  # 0-255 model: integers
    seen.clear()
    flt = evaluate([Spy()], small_images, float_lr=True)
    assert any(not np.array_equal(x, np.rint(x)) for x in seen)
    assert eight.rows[1].mean_psnr != pytest.approx(flt.rows[1].mean_psnr, abs=1e-4)
    result = cli_runner.invoke(cli, ["evaluate", str(REFERENCE_X2), "--lr", "float", "--data", "builtin-heldout",
                                     "--json", str(tmp_path / "e.json")])
    assert result.exit_code == 0, result.output
    assert "unrounded" in json.loads((tmp_path / "e.json").read_text())["protocol"]["lr"]


def test_cli_bad_model_is_a_one_line_error(tmp_path, cli_runner):
    result = cli_runner.invoke(cli, ["evaluate", str(tmp_path / "missing.pth")])
    assert result.exit_code == 1 and "model not found" in result.output
    assert len(result.output.strip().splitlines()) == 1
