"""Upscaling photographs: sizes, Y/CbCr merge without speckles, RGB models, tiling, CLI."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ecbdeploy.arch import ArchSpec
from ecbdeploy.cli import cli
from ecbdeploy.errors import EcbDeployError
from ecbdeploy.images import load_image, photo, rgb_to_ycbcr255, save_image
from ecbdeploy.runners import Runner, TorchRunner, open_runner
from ecbdeploy.upscale import output_paths, upscale_files, upscale_rgb

REFERENCE_X2 = Path(__file__).resolve().parents[1] / "models" / "ecbsr_m4c16_x2.pth"


class WildYRunner(Runner):
    """A 1-colour x2 'model' whose output swings far outside the pixel range (a nearest upscale
    plus +-300), the case that produces coloured speckles when Y is not clipped."""

    def __init__(self):
        super().__init__("wild", Path("wild"), ArchSpec(0, 1, 1, 2, "linear"), None)

    def _run(self, x):
        up = x.repeat(2, axis=2).repeat(2, axis=3)
        swing = np.where((np.indices(up.shape[2:]).sum(0) % 2) == 0, 300.0, -300.0).astype(np.float32)
        return up + swing


@pytest.fixture(scope="module")
def reference():
    return open_runner(REFERENCE_X2)


@pytest.fixture(scope="module")
def colour_crop():
    return photo("coffee")[100:150, 200:262]


def test_one_colour_model_output_size_and_colour_come_from_bicubic(reference, colour_crop):
    out = upscale_rgb(reference, colour_crop)
    assert out.shape == (100, 124, 3) and out.dtype == np.float32
    assert 0.0 <= out.min() and out.max() <= 1.0
    # Colour (Cb/Cr) follows the input; detail (Y) comes from the model.
    ycc = rgb_to_ycbcr255(out)
    ycc_in = rgb_to_ycbcr255(colour_crop)
    assert abs(ycc[..., 1].mean() - ycc_in[..., 1].mean()) < 1.0
    assert abs(ycc[..., 2].mean() - ycc_in[..., 2].mean()) < 1.0


def test_out_of_range_y_is_clipped_so_grey_stays_grey_and_no_speckles():
    grey = np.repeat(np.linspace(0.0, 1.0, 20 * 24, dtype=np.float32).reshape(20, 24, 1), 3, axis=2)
    out = upscale_rgb(WildYRunner(), grey)
    assert out.shape == (40, 48, 3) and 0.0 <= out.min() and out.max() <= 1.0
    assert np.abs(out - out[..., :1]).max() <= 1.0 / 255  # R = G = B everywhere
    # The +300 pixels are pure white, the -300 ones pure black: clipped, not wrapped or tinted.
    bright = (np.indices((40, 48)).sum(0) % 2) == 0
    assert np.allclose(out[bright], 1.0, atol=1e-3) and np.allclose(out[~bright], 0.0, atol=1e-3)


def test_coloured_input_with_wild_y_gives_only_in_range_pixels(colour_crop):
    out = upscale_rgb(WildYRunner(), colour_crop)
    assert 0.0 <= out.min() and out.max() <= 1.0 and np.isfinite(out).all()


def test_rgb_model_runs_on_rgb(make_ecbsr, colour_crop):
    model = make_ecbsr(blocks=1, channels=4, colors=3, scale=3, pixel_range=1.0)
    runner = TorchRunner("rgb.pth", model, model.arch, "pytorch-multibranch")
    out = upscale_rgb(runner, colour_crop)
    assert out.shape == (150, 186, 3) and 0.0 <= out.min() and out.max() <= 1.0
    expected = runner(np.transpose(colour_crop, (2, 0, 1))[None])[0]
    np.testing.assert_allclose(out, np.clip(np.transpose(expected, (1, 2, 0)), 0, 1), atol=1e-5)


def test_small_tiles_give_the_same_picture(reference, colour_crop):
    whole = upscale_rgb(reference, colour_crop)
    tiled = upscale_rgb(reference, colour_crop, tile=(20, 24))
    assert np.abs(whole - tiled).max() < 1e-4


def test_files_are_written_as_pngs_of_the_right_size(tmp_path, reference, colour_crop):
    src = tmp_path / "in"
    src.mkdir()
    save_image(src / "a.png", colour_crop)
    save_image(src / "b.jpg", colour_crop[:30, :40])
    written = upscale_files(reference, [src], tmp_path / "out")
    assert [p.name for p in written] == ["a_x2.png", "b_x2.png"]
    with Image.open(written[1]) as im:
        assert im.format == "PNG" and im.size == (80, 60) and im.mode == "RGB"
    assert not list((tmp_path / "out").glob("*.part"))


def test_two_inputs_writing_the_same_file_are_refused(tmp_path):
    with pytest.raises(EcbDeployError, match="would both be written"):
        output_paths([tmp_path / "x" / "a.png", tmp_path / "y" / "a.jpg"], tmp_path, 2)


def test_cli_upscales_several_images(tmp_path, cli_runner, colour_crop):
    inputs = []
    for name in ("one", "two", "three"):
        save_image(tmp_path / f"{name}.png", colour_crop)
        inputs.append(str(tmp_path / f"{name}.png"))
    result = cli_runner.invoke(cli, ["upscale", str(REFERENCE_X2), *inputs, "-o", str(tmp_path / "out"),
                                     "--tile", "32x32"])
    assert result.exit_code == 0, result.output
    assert result.output.count("wrote") == 3
    assert load_image(tmp_path / "out" / "two_x2.png").shape == (100, 124, 3)


def test_cli_missing_image_is_a_one_line_error(tmp_path, cli_runner):
    result = cli_runner.invoke(cli, ["upscale", str(REFERENCE_X2), str(tmp_path / "nope.png"), "-o", str(tmp_path)])
    assert result.exit_code == 1 and "image not found" in result.output
    assert len(result.output.strip().splitlines()) == 1
