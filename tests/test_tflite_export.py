"""The whole chain to TFLite (onnx2tf): op sets, pixel-unit uint8 I/O, parity at every stage on
real photographs, the report, `run` on .tflite, `verify`, and a conversion with no network."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from ecbdeploy.calibration import calibration_set
from ecbdeploy.cli import cli
from ecbdeploy.errors import EcbDeployError
from ecbdeploy.fusion import photo_input
from ecbdeploy.metrics import psnr
from ecbdeploy.runners import TfliteRunner
from ecbdeploy.tflite_export import edge_only_quantize, op_counts, read_metadata

pytestmark = pytest.mark.slow

FP32_TOLERANCE = 1e-3  # max abs error / pixel range vs multi-branch PyTorch
INT8_MIN_PSNR = 38.0  # dB between int8 and multi-branch outputs
FLOAT_OPS = {"CONV_2D", "PRELU", "ADD", "DEPTH_TO_SPACE", "MINIMUM", "RELU"}


def _export(tmp_path_factory, cli_args, ckpt_obj, name):
    folder = tmp_path_factory.mktemp(name)
    ckpt = folder / f"{name}.pth"
    torch.save(ckpt_obj, ckpt)
    out = folder / "out"
    from click.testing import CliRunner

    result = CliRunner().invoke(cli, ["export", str(ckpt), "-o", str(out), *cli_args])
    return ckpt, out, result


@pytest.fixture(scope="module")
def y_x2(tmp_path_factory, make_ecbsr):
    """A 1-colour x2 PReLU model in the official format, exported to every precision."""
    model = make_ecbsr(blocks=2, channels=8, colors=1, scale=2, pixel_range=255.0)
    ckpt, out, result = _export(tmp_path_factory, ["--input-size", "48x64", "--formats",
                                                   "onnx,fp32,fp16,dynamic,int8,int16x8", "--calib-count", "4"],
                                model.state_dict(), "y_x2")
    assert result.exit_code == 0, result.output
    return model, ckpt, out


@pytest.fixture(scope="module")
def rgb_x3(tmp_path_factory, make_ecbsr):
    """An RGB x3 model in BasicSR format (pixel range 1), exported with the default formats."""
    model = make_ecbsr(blocks=1, channels=8, colors=3, scale=3, pixel_range=1.0)
    sd = model.state_dict()
    ckpt, out, result = _export(tmp_path_factory, ["--input-size", "30x40", "--calib-count", "4"],
                                {"params": sd, "params_ema": sd}, "rgb_x3")
    assert result.exit_code == 0, result.output
    return model, ckpt, out


def _report(out):
    return json.loads((out / "report.json").read_text())


def _reference(model, x):
    with torch.no_grad():
        return np.clip(model(torch.from_numpy(x)).numpy(), 0, model.arch.pixel_range)


def test_all_files_and_the_report_are_written(y_x2):
    _, _, out = y_x2
    names = sorted(p.name for p in out.iterdir())
    for expected in ["y_x2.onnx", "y_x2_fp32.tflite", "y_x2_fp16.tflite", "y_x2_dynamic.tflite", "y_x2_int8.tflite",
                     "y_x2_int16x8.tflite", "report.json", "report.md", "comparison.png", "logs"]:
        assert expected in names
    assert not [n for n in names if n.startswith(".")], "temporary files left behind"
    rep = _report(out)
    assert rep["status"] == "passed" and rep["schema_version"] == 1
    assert [s["stage"] for s in rep["stages"]] == ["fused", "onnx", "fp32", "fp16", "dynamic", "int8", "int16x8"]
    assert all(s["passed"] for s in rep["stages"])
    assert rep["calibration"]["source"].startswith("builtin") and rep["calibration"]["count"] == 4
    assert (out / "logs" / "onnx2tf_native.log").stat().st_size > 0
    md = (out / "report.md").read_text()
    assert "y_x2_int8.tflite" in md and "Y-PSNR" in md


@pytest.mark.parametrize("fixture,colors", [("y_x2", 1), ("rgb_x3", 3)])
def test_float_graphs_hold_only_deploy_ops(request, fixture, colors):
    _, _, out = request.getfixturevalue(fixture)
    name = fixture
    for key in ("fp32", "fp16"):
        ops = op_counts(out / f"{name}_{key}.tflite")
        allowed = FLOAT_OPS | ({"CONCATENATION"} if colors == 3 else set()) | ({"DEQUANTIZE"} if key == "fp16" else set())
        assert set(ops) <= allowed, ops
        assert ops["DEPTH_TO_SPACE"] == 1 and ops.get("CONCATENATION", 0) == (1 if colors == 3 else 0)
        assert not {"TRANSPOSE", "RESHAPE", "GATHER"} & set(ops)
    rep = _report(out)
    assert all(a["gpu"]["compatible"] for a in rep["artifacts"] if a["target"] in ("fp32", "fp16"))


@pytest.mark.parametrize("fixture", ["y_x2", "rgb_x3"])
def test_int8_is_integer_between_the_edges_and_prelu_free(request, fixture):
    _, _, out = request.getfixturevalue(fixture)
    path = out / f"{fixture}_int8.tflite"
    ops = op_counts(path)
    assert edge_only_quantize(path)
    assert ops.get("QUANTIZE", 0) == 2 and "DEQUANTIZE" not in ops
    assert "PRELU" not in ops and "MAXIMUM" not in ops  # PReLU written as x + relu((a-1) x) for int8
    assert ops["MUL"] == ops["CONV_2D"] - 1 and read_metadata(path)["activation_form"] == "addrelu"


@pytest.mark.parametrize("fixture", ["y_x2", "rgb_x3"])
def test_uint8_io_is_exactly_pixel_units(request, fixture):
    model, _, out = request.getfixturevalue(fixture)
    runner = TfliteRunner(out / f"{fixture}_int8.tflite")
    expected_scale = np.float32(model.arch.pixel_range / 255.0)
    for detail in (runner.inp, runner.out):
        assert detail["dtype"] == np.uint8
        scale, zero = detail["quantization"]
        assert np.float32(scale) == expected_scale and zero == 0
    # Bytes in, bytes out: feed a real photo's pixels directly and compare with the float model.
    x = photo_input(model.arch.colors, model.arch.scale, model.arch.pixel_range, size=64)
    x = x[:, :, : runner.static_hw[0], : runner.static_hw[1]].copy()
    pixels = np.rint(x / expected_scale).astype(np.uint8)
    runner.interpreter.set_tensor(runner.inp["index"], np.transpose(pixels, (0, 2, 3, 1)))
    runner.interpreter.invoke()
    raw = runner.interpreter.get_tensor(runner.out["index"])
    assert raw.dtype == np.uint8
    y = np.transpose(raw.astype(np.float32), (0, 3, 1, 2)) * expected_scale  # output byte k means k * range/255
    ref = _reference(model, pixels.astype(np.float32) * expected_scale)
    assert psnr(y, ref, model.arch.pixel_range) >= INT8_MIN_PSNR


@pytest.mark.parametrize("fixture", ["y_x2", "rgb_x3"])
def test_parity_at_every_stage_on_photos(request, fixture):
    model, _, out = request.getfixturevalue(fixture)
    rep = _report(out)
    by_target = {a["target"]: a for a in rep["artifacts"]}
    assert by_target["fp32"]["parity"]["max_abs_error_relative"] <= FP32_TOLERANCE
    assert by_target["int8"]["parity"]["min_psnr_vs_reference"] >= INT8_MIN_PSNR
    assert set(rep["reference"]["images"]) == {"astronaut", "coffee", "chelsea"}
    # Recompute one figure independently: the fp32 file against the multi-branch model on a photo.
    runner = TfliteRunner(out / f"{fixture}_fp32.tflite")
    x = photo_input(model.arch.colors, model.arch.scale, model.arch.pixel_range, size=64)
    x = x[:, :, : runner.static_hw[0], : runner.static_hw[1]].copy()
    err = np.abs(runner(x) - _reference(model, x)).max() / model.arch.pixel_range
    assert err <= FP32_TOLERANCE


def test_run_tflite_through_the_cli(y_x2, tmp_path, cli_runner):
    model, _, out = y_x2
    x = photo_input(1, 2, 255.0, size=64)[:, :, :48, :].copy()
    np.save(tmp_path / "x.npy", np.concatenate([x, x[:, :, ::-1]]))  # a batch of two
    result = cli_runner.invoke(cli, ["run", str(out / "y_x2_int8.tflite"), "--input", str(tmp_path / "x.npy"),
                                     "--output", str(tmp_path / "y.npy"), "--threads", "1"])
    assert result.exit_code == 0, result.output
    y = np.load(tmp_path / "y.npy")
    assert y.shape == (2, 1, 96, 128) and y.dtype == np.float32
    assert np.abs(y[:1] - _reference(model, x)).max() <= 8.0
    np.save(tmp_path / "bad.npy", np.zeros((1, 1, 10, 10), np.float32))
    result = cli_runner.invoke(cli, ["run", str(out / "y_x2_int8.tflite"), "--input", str(tmp_path / "bad.npy"),
                                     "--output", str(tmp_path / "y2.npy")])
    assert result.exit_code == 1 and "exported for 48x64" in result.output


def test_verify_passes_then_fails_on_a_tampered_artifact(y_x2, tmp_path, cli_runner):
    _, _, out = y_x2
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    result = cli_runner.invoke(cli, ["verify", str(copy)])
    assert result.exit_code == 0, result.output
    target = copy / "y_x2_fp32.tflite"
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0xFF
    target.write_bytes(bytes(data))
    result = cli_runner.invoke(cli, ["verify", str(copy)])
    assert result.exit_code == 1
    assert "FAIL  y_x2_fp32.tflite" in result.output and "sha256 differs" in result.output


def test_a_stage_over_tolerance_fails_the_export_and_names_it(tmp_path, make_ecbsr, cli_runner):
    ckpt = tmp_path / "m.pth"
    torch.save(make_ecbsr(blocks=1, channels=8).state_dict(), ckpt)
    result = cli_runner.invoke(cli, ["export", str(ckpt), "-o", str(tmp_path / "out"), "--input-size", "24x24",
                                     "--formats", "fp16", "--tolerance", "fp16=1e-9"])
    assert result.exit_code == 1
    assert "export failed: fp16: max_abs_rel" in result.output
    assert _report(tmp_path / "out")["status"] == "failed"


def test_io_int8_and_float32(tmp_path_factory, make_ecbsr):
    model = make_ecbsr(blocks=1, channels=8)
    for io, dtype, zero in (("int8", np.int8, -128), ("float32", np.float32, None)):
        _, out, result = _export(tmp_path_factory, ["--input-size", "24x24", "--formats", "int8", "--io", io,
                                                    "--calib-count", "32"], model.state_dict(), f"io_{io}")
        assert result.exit_code == 0, result.output
        runner = TfliteRunner(out / f"io_{io}_int8.tflite")
        assert runner.inp["dtype"] == dtype and runner.out["dtype"] == dtype
        if zero is not None:
            assert runner.inp["quantization"] == (1.0, zero)


def test_calibration_folder_edge_cases(tmp_path, make_ecbsr):
    from PIL import Image

    arch = make_ecbsr().arch
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(EcbDeployError, match="holds no images"):
        calibration_set(arch, (16, 16), empty, 2)
    (empty / "notes.txt").write_text("no images here")
    with pytest.raises(EcbDeployError, match="holds no images"):
        calibration_set(arch, (16, 16), empty, 2)
    small = tmp_path / "small"
    small.mkdir()
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(small / "tiny.png")
    with pytest.raises(EcbDeployError, match=r"tiny.png is 20x20; at least 32x32"):
        calibration_set(arch, (16, 16), small, 2)
    with pytest.raises(EcbDeployError, match="not a folder"):
        calibration_set(arch, (16, 16), tmp_path / "missing", 2)
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (40, 50), dtype=np.uint8)).save(mixed / "grey.png")
    Image.fromarray(rng.integers(0, 256, (40, 50, 4), dtype=np.uint8)).save(mixed / "rgba.png")
    Image.fromarray(rng.integers(0, 65536, (40, 50), dtype=np.uint16)).save(mixed / "deep.png")
    Image.fromarray(rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)).save(mixed / "rgb.jpg")
    Image.fromarray(rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)).save(mixed / "rgb.bmp")
    calib = calibration_set(arch, (16, 16), mixed, 5)
    assert calib.shape == (5, 16, 16, 1) and calib.dtype == np.float32
    assert 16 <= calib.min() and calib.max() <= 235.5  # Y on the 0-255 scale


def test_builtin_calibration_uses_no_held_out_photo():
    from ecbdeploy import calibration
    from ecbdeploy.images import HELD_OUT_PHOTOS, TRAIN_PHOTOS

    assert not set(HELD_OUT_PHOTOS) & set(TRAIN_PHOTOS)
    arch = type("A", (), {"colors": 3, "scale": 2, "pixel_range": 1.0})()
    big = calibration.builtin(arch, (300, 500), 2)  # larger than most photos: reflect-padded
    assert big.shape == (2, 300, 500, 3) and big.std() > 0.05


@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare for a network namespace")
def test_rgb_export_with_networking_disabled(tmp_path, make_ecbsr):
    """onnx2tf downloads sample images for 3-channel static inputs; ecbdeploy must never let it."""
    probe = subprocess.run(["unshare", "-rn", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip("user/network namespaces are not available here")
    model = make_ecbsr(blocks=1, channels=8, colors=3, scale=2, pixel_range=1.0)
    ckpt = tmp_path / "rgb.pth"
    torch.save({"params": model.state_dict()}, ckpt)
    exe = Path(sys.executable).parent / "ecbdeploy"
    proc = subprocess.run(["unshare", "-rn", str(exe), "export", str(ckpt), "-o", str(tmp_path / "out"),
                           "--input-size", "24x24", "--formats", "fp32,int8", "--calib-count", "32"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (tmp_path / "out" / "rgb_int8.tflite").is_file()
    assert not list((tmp_path / "out").rglob("calibration_image_sample_data*"))


def test_relative_output_folder(tmp_path, make_ecbsr, cli_runner, monkeypatch):
    monkeypatch.chdir(tmp_path)
    torch.save(make_ecbsr(blocks=1, channels=8).state_dict(), "m.pth")
    result = cli_runner.invoke(cli, ["export", "m.pth", "--input-size", "16x16", "--formats", "fp32"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "m_export" / "m_fp32.tflite").is_file()
    assert not list((tmp_path / "m_export").glob(".work-*"))


def test_dynamic_range_alone(tmp_path_factory, make_ecbsr):
    """onnx2tf writes the dynamic-range file only when asked for it or for integer files."""
    _, out, result = _export(tmp_path_factory, ["--input-size", "16x16", "--formats", "dynamic"],
                             make_ecbsr(blocks=1, channels=8).state_dict(), "dyn")
    assert result.exit_code == 0, result.output
    runner = TfliteRunner(out / "dyn_dynamic.tflite")
    assert runner.inp["dtype"] == np.float32 and "CONV_2D" in op_counts(out / "dyn_dynamic.tflite")
