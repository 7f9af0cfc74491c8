"""`ecbdeploy bench` on the host: rows and figures for checkpoints, ONNX and TFLite, input-size
rules, the JSON schema, the multi-branch ONNX/TFLite export, and --compare-fusion.

Timing here is noisy (shared machine), so tests check structure and arithmetic, never speeds.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from ecbdeploy.bench import BenchSettings, photo_crop, run_bench
from ecbdeploy.bench_fusion import build_fusion_files, fusion_speedups
from ecbdeploy.bench_memory import measure_peak_memory
from ecbdeploy.cli import cli
from ecbdeploy.errors import EcbDeployError
from ecbdeploy.fusion import fuse
from ecbdeploy.onnx_export import export_onnx
from ecbdeploy.runners import OnnxRunner, TfliteRunner
from ecbdeploy.unfused_export import UnfusedExportNet, export_unfused_onnx

HW = (24, 32)
PARITY_TOLERANCE = 1e-4  # max abs error / pixel range vs the training-form PyTorch model
FAST = BenchSettings(threads=1, runs=3, warmup=1, memory=False)


@pytest.fixture(scope="module")
def model(make_ecbsr):
    return make_ecbsr(blocks=1, channels=8, colors=1, scale=2)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory, model):
    path = tmp_path_factory.mktemp("bench") / "tiny.pth"
    torch.save(model.state_dict(), path)
    return path


@pytest.fixture(scope="module")
def fusion_files(tmp_path_factory, ckpt):
    """[ckpt, multibranch.onnx, fused.onnx, multibranch.tflite, fused.tflite] at 24x32 (two onnx2tf runs)."""
    files, graphs = build_fusion_files(ckpt, HW, ("onnx", "tflite"), tmp_path_factory.mktemp("fusion"), {},
                                       lambda msg: None)
    return files, graphs


def _reference(model, x):
    with torch.no_grad():
        return np.clip(model(torch.from_numpy(x)).numpy(), 0, model.arch.pixel_range)


@pytest.mark.slow  # uses the onnx2tf conversions of fusion_files
def test_rows_for_checkpoint_onnx_and_tflite_with_consistent_figures(ckpt, fusion_files):
    files, _ = fusion_files
    fused_onnx, fused_tflite = files[2], files[4]
    result = run_bench([ckpt, fused_onnx, fused_tflite], FAST)
    rows = result["rows"]
    assert [(r["runtime"], r["form"]) for r in rows] == [
        ("pytorch", "multibranch"), ("pytorch", "fused"), ("onnxruntime", "fused"), ("litert", "fused")]
    assert result["settings"]["input_size"] == list(HW)  # the static models dictate the size
    for r in rows:
        assert len(r["times_ms"]) == 3
        assert 0 < r["min_ms"] <= r["median_ms"] <= r["p90_ms"]
        assert r["output_size"] == [HW[0] * 2, HW[1] * 2]
        seconds = r["median_ms"] / 1e3
        assert r["gflop_per_s"] == pytest.approx(2 * r["macs_per_lr_pixel"] * HW[0] * HW[1] / seconds / 1e9)
        assert r["output_mpix_per_s"] == pytest.approx(HW[0] * 2 * HW[1] * 2 / seconds / 1e6)
        assert r["memory"] is None


@pytest.mark.slow  # uses the onnx2tf conversions of fusion_files
def test_peak_memory_is_measured_in_a_child_process(fusion_files):
    files, _ = fusion_files
    x = photo_crop(1, 2, 255.0, HW)
    mem = measure_peak_memory(files[4], "fused", x, threads=1, load_flags={})
    assert mem["peak_rss_mb"] >= mem["baseline_rss_mb"] > 0
    assert mem["model_peak_mb"] == pytest.approx(mem["peak_rss_mb"] - mem["baseline_rss_mb"], abs=0.11)


def test_static_sizes_must_agree(tmp_path, model, cli_runner):
    plain = fuse(model)
    export_onnx(plain, tmp_path / "a.onnx", input_hw=(24, 32))
    export_onnx(plain, tmp_path / "b.onnx", input_hw=(16, 16))
    with pytest.raises(EcbDeployError, match=r"different input sizes \(a.onnx 24x32, b.onnx 16x16\)"):
        run_bench([tmp_path / "a.onnx", tmp_path / "b.onnx"], FAST)
    result = cli_runner.invoke(cli, ["bench", str(tmp_path / "a.onnx"), "--input-size", "16x16", "--no-memory"])
    assert result.exit_code == 1
    assert "--input-size 16x16 disagrees with a.onnx, which was exported for 24x32" in result.output
    assert "Traceback" not in result.output


def test_json_holds_all_figures_and_machine_facts(ckpt, tmp_path, cli_runner):
    out = tmp_path / "bench.json"
    result = cli_runner.invoke(cli, ["bench", str(ckpt), "--input-size", "16x24", "--runs", "2", "--warmup", "0",
                                     "--threads", "1", "--no-memory", "--json", str(out)])
    assert result.exit_code == 0, result.output
    assert "pytorch" in result.output and "GFLOP/s" in result.output
    data = json.loads(out.read_text())
    assert data["tool"] == "ecbdeploy bench" and data["schema_version"] == 1
    assert {"cpu_model", "logical_cores", "usable_cores", "load_average", "tools"} <= set(data["machine"])
    assert data["machine"]["tools"]["torch"]
    assert data["settings"]["threads"] == 1 and data["settings"]["input_size"] == [16, 24]
    row_keys = {"file", "runtime", "form", "arch", "threads", "input_size", "output_size", "times_ms", "median_ms",
                "p90_ms", "min_ms", "output_mpix_per_s", "gflop_per_s", "macs_per_lr_pixel", "memory"}
    assert [r["form"] for r in data["rows"]] == ["multibranch", "fused"]
    assert all(row_keys <= set(r) for r in data["rows"])
    assert data["fusion_comparison"] is None


def test_photo_crop_is_mirrored_to_size_and_keeps_the_photo():
    x = photo_crop(1, 2, 255.0, (300, 520))  # the astronaut's x2 LR is 256x256: extended both ways
    assert x.shape == (1, 1, 300, 520) and x.dtype == np.float32
    assert 16 <= x.min() and x.max() <= 235 and x.std() > 10  # BT.601 Y of a real photo, not padding
    assert photo_crop(3, 2, 1.0, (20, 30)).shape == (1, 3, 20, 30)


@pytest.mark.parametrize("colors,with_idt,channels", [(1, False, 8), (3, True, 12)])
def test_unfused_export_net_equals_the_training_model(make_ecbsr, colors, with_idt, channels, tmp_path):
    # 12 channels at x2 RGB: the tail ECB has an identity branch and a DCR channel reordering.
    model = make_ecbsr(blocks=1, channels=channels, colors=colors, scale=2, with_idt=with_idt)
    x = photo_crop(colors, 2, 255.0, HW)
    ref = _reference(model, x)
    with torch.no_grad():
        y = UnfusedExportNet(model)(torch.from_numpy(x)).numpy()
    assert np.abs(y - ref).max() / 255.0 <= PARITY_TOLERANCE
    export_unfused_onnx(model, tmp_path / "m.onnx", input_hw=HW)
    assert np.abs(OnnxRunner(tmp_path / "m.onnx")(x) - ref).max() / 255.0 <= PARITY_TOLERANCE


@pytest.mark.slow  # uses the onnx2tf conversions of fusion_files
def test_unfused_onnx_and_tflite_equal_the_training_model_on_a_photo(model, fusion_files):
    files, graphs = fusion_files
    x = photo_crop(1, 2, 255.0, HW)
    ref = _reference(model, x)
    for runner in (OnnxRunner(files[1]), TfliteRunner(files[3], 1)):
        assert runner.arch == model.arch
        assert np.abs(runner(x) - ref).max() / 255.0 <= PARITY_TOLERANCE, runner.name
    # The multi-branch graph really is multi-branch: every branch's convs, pads and adds.
    onnx_graphs, tflite_graphs = graphs["onnx"], graphs["tflite"]
    assert onnx_graphs["multibranch"]["nodes"] >= 5 * onnx_graphs["fused"]["nodes"]
    assert onnx_graphs["multibranch"]["ops"]["Conv"] == 3 * 9 and onnx_graphs["fused"]["ops"]["Conv"] == 3
    assert "ScatterND" not in onnx_graphs["multibranch"]["ops"]
    assert tflite_graphs["multibranch"]["ops"]["DEPTHWISE_CONV_2D"] == 3 * 3
    assert tflite_graphs["multibranch"]["nodes"] >= 5 * tflite_graphs["fused"]["nodes"]


@pytest.mark.slow  # uses the onnx2tf conversions of fusion_files
def test_fusion_speedups_per_runtime(fusion_files):
    files, _ = fusion_files
    result = run_bench(files, FAST)
    assert [(r["runtime"], r["form"]) for r in result["rows"]] == [
        ("pytorch", "multibranch"), ("pytorch", "fused"), ("onnxruntime", "multibranch"), ("onnxruntime", "fused"),
        ("litert", "multibranch"), ("litert", "fused")]
    speedups = fusion_speedups(result["rows"])
    assert [s["runtime"] for s in speedups] == ["pytorch", "onnxruntime", "litert"]
    for s in speedups:
        assert s["speedup"] == pytest.approx(s["multibranch_median_ms"] / s["fused_median_ms"])


def test_compare_fusion_cli_writes_the_comparison(ckpt, tmp_path, cli_runner):
    out = tmp_path / "cmp.json"
    result = cli_runner.invoke(cli, ["bench", str(ckpt), "--compare-fusion", "--formats", "onnx", "--input-size",
                                     "16x24", "--runs", "2", "--warmup", "0", "--threads", "1", "--no-memory",
                                     "--json", str(out)])
    assert result.exit_code == 0, result.output
    assert "speedup" in result.output
    cmp = json.loads(out.read_text())["fusion_comparison"]
    assert cmp["formats"] == ["pytorch", "onnx"]
    assert [s["runtime"] for s in cmp["speedups"]] == ["pytorch", "onnxruntime"]
    assert all(s["speedup"] > 0 for s in cmp["speedups"])
    assert cmp["graphs"]["onnx"]["multibranch"]["nodes"] > 5 * cmp["graphs"]["onnx"]["fused"]["nodes"]


@pytest.mark.parametrize("args,message", [
    (["--compare-fusion", "X", "X"], "exactly one training checkpoint"),
    (["--compare-fusion", "--formats", "onnx,coreml", "X"], "unknown format(s) coreml"),
    (["--formats", "onnx", "X"], "--formats applies to --compare-fusion only"),
])
def test_compare_fusion_usage_errors(ckpt, cli_runner, args, message):
    args = [str(ckpt) if a == "X" else a for a in args]
    result = cli_runner.invoke(cli, ["bench", *args, "--no-memory"])
    assert result.exit_code in (1, 2)
    assert message in result.output


def test_compare_fusion_refuses_a_fused_checkpoint(model, tmp_path, cli_runner):
    from ecbdeploy.checkpoint import save_fused

    save_fused(tmp_path / "fused.pth", fuse(model), {})
    result = cli_runner.invoke(cli, ["bench", str(tmp_path / "fused.pth"), "--compare-fusion", "--no-memory"])
    assert result.exit_code == 1
    assert "already fused" in result.output
