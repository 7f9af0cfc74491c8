"""ecbdeploy's own int8 activation ranges: measured on the float network, written into the .tflite
with the conv biases requantised, and better than the converter's on the bundled x2 model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from ecbdeploy import int8_ranges
from ecbdeploy.api import fused_model
from ecbdeploy.calibration import calibration_set
from ecbdeploy.checkpoint import load_checkpoint
from ecbdeploy.cli import cli
from ecbdeploy.evaluate import evaluate, open_models
from ecbdeploy.fusion import fuse
from ecbdeploy.images import HELD_OUT_PHOTOS, photo
from ecbdeploy.onnx_export import ExportNet
from ecbdeploy.tflite_export import _op_names, read_model

REFERENCE_X2 = Path(__file__).resolve().parents[1] / "models" / "ecbsr_m4c16_x2.pth"


@pytest.mark.parametrize("lo,hi,nonneg", [(-310.4, 245.7, False), (0.0, 263.2, True), (-91.0, 3.0, False),
                                          (4.7, 264.9, False), (-0.004, 0.9, False)])
def test_int8_params_cover_the_range_and_hold_zero_exactly(lo, hi, nonneg):
    scale, zp = int8_ranges.int8_params(lo, hi, nonneg)
    assert -128 <= zp <= 127
    low, high = (-128 - zp) * scale, (127 - zp) * scale
    tolerance = scale / 2 + 1e-6
    assert low <= min(lo, 0.0) + tolerance and high >= hi - tolerance
    assert high - low == pytest.approx(255 * scale)
    if nonneg:
        assert zp == -128  # a ReLU output spends no level below zero


@pytest.mark.parametrize("estimator", ["minmax", "percentile"])
def test_measured_ranges_follow_the_graph_order_and_the_real_tensors(make_ecbsr, estimator):
    model = make_ecbsr(blocks=2, channels=8, colors=1, scale=2)
    plain = fuse(model)
    net = ExportNet(plain, True, "addrelu").eval()
    samples = calibration_set(plain.arch, (24, 32), count=3)
    ranges = int8_ranges.measure(net, samples, estimator)
    blocks = len(net.convs) - 1
    assert [r.role for r in ranges] == ["conv", "mul_relu", "add"] * blocks + ["residual"]
    assert [r.op for r in ranges] == ["CONV_2D", "MUL", "ADD"] * blocks + ["CONV_2D"]
    # Independently: every conv's output seen through forward hooks.
    seen = {i: [] for i in range(len(net.convs))}
    hooks = [conv.register_forward_hook(lambda m, i, o, k=k: seen[k].append(o.detach())) for k, conv in enumerate(net.convs)]
    with torch.no_grad():
        for x in samples:
            net(torch.from_numpy(x.transpose(2, 0, 1)[None].copy()))
    for h in hooks:
        h.remove()
    convs = [r for r in ranges if r.role in ("conv", "residual")]
    for k, r in enumerate(convs):
        lo, hi = min(float(t.min()) for t in seen[k]), max(float(t.max()) for t in seen[k])
        if estimator == "minmax":
            assert (r.lo, r.hi) == pytest.approx((lo, hi), rel=1e-5, abs=1e-4)
        else:
            assert lo - 1e-4 <= r.lo <= r.hi <= hi + 1e-4
    assert all(r.lo >= 0 for r in ranges if r.role == "mul_relu")


def _conv_bias_floats(model):
    """Per conv: bias int32 x bias scale, and whether bias scale == input scale x weight scale."""
    graph = model.subgraphs[0]
    out = []
    for name, op in zip(_op_names(model), graph.operators):
        if name != "CONV_2D":
            continue
        inp, w, b = (graph.tensors[i] for i in op.inputs[:3])
        values = np.frombuffer(bytes(bytearray(model.buffers[b.buffer].data)), dtype=np.int32).astype(np.float64)
        b_scale, w_scale = np.asarray(b.quantization.scale), np.asarray(w.quantization.scale)
        out.append((values * b_scale, np.allclose(b_scale, inp.quantization.scale[0] * w_scale, rtol=1e-6)))
    return out


@pytest.mark.slow
def test_bundled_x2_int8_is_closer_to_fp32_with_measured_ranges(tmp_path):
    """Real trained weights, real held-out photos: the measured ranges lose less Y-PSNR against fp32
    than the converter's, the file holds them, and every conv bias keeps its float value."""
    outs = {}
    for mode in ("converter", "minmax", "percentile"):
        out = tmp_path / mode
        result = CliRunner().invoke(cli, ["export", str(REFERENCE_X2), "-o", str(out), "--formats", "fp32,int8",
                                          "--input-size", "96x128", "--calib-count", "8", "--int8-ranges", mode])
        assert result.exit_code == 0, result.output
        outs[mode] = out
    rep = json.loads((outs["minmax"] / "report.json").read_text())
    tensors = rep["int8_preparation"]["activation_ranges"]["tensors"]
    residual = tensors[-1]
    assert residual["role"] == "residual"
    assert residual["range"][1] - residual["range"][0] < 0.8 * (residual["converter_range"][1] - residual["converter_range"][0])
    assert all(t["range"][0] == 0.0 for t in tensors if t["role"] == "mul_relu")
    # Percentile ranges move the conv inputs too: their int32 biases must follow.
    converter = read_model(outs["converter"] / "ecbsr_m4c16_x2_int8.tflite")
    for mode in ("minmax", "percentile"):
        measured = read_model(outs[mode] / "ecbsr_m4c16_x2_int8.tflite")
        for (b_new, ok_new), (b_old, ok_old) in zip(_conv_bias_floats(measured), _conv_bias_floats(converter)):
            assert ok_new and ok_old
            np.testing.assert_allclose(b_new, b_old, rtol=1e-3, atol=1e-2)
    # Quality on the held-out photographs (centre crops, tiled through the 96x128 static input).
    images = [(n, photo(n)[40:360, 60:380]) for n in HELD_OUT_PHOTOS]
    runners = open_models([str(outs["converter"] / "ecbsr_m4c16_x2_fp32.tflite")]
                          + [str(outs[m] / "ecbsr_m4c16_x2_int8.tflite") for m in ("converter", "minmax", "percentile")])
    ev = evaluate(runners, images)
    fp32, *int8_rows = ev.rows[1:]
    loss = {m: fp32.mean_psnr - row.mean_psnr for m, row in zip(("converter", "minmax", "percentile"), int8_rows)}
    assert 0.0 <= loss["minmax"] < loss["converter"] and 0.0 <= loss["percentile"] < loss["converter"], loss
    assert loss["minmax"] < 0.1 and loss["percentile"] < 0.1, loss
    # Ranges of another network (one tensor short) do not fit this graph: the file is left as it was.
    path = outs["minmax"] / "ecbsr_m4c16_x2_int8.tflite"
    before = path.read_bytes()
    plain, _ = fused_model(load_checkpoint(REFERENCE_X2))
    ranges = int8_ranges.measure(ExportNet(plain, True, "addrelu").eval(), calibration_set(plain.arch, (16, 16), count=1))
    assert int8_ranges.apply(path, ranges[:-1]) is None and path.read_bytes() == before


@pytest.mark.slow
@pytest.mark.parametrize("act,roles", [("relu", ["conv_relu"]), ("linear", ["conv"])])
def test_relu_and_linear_models_get_measured_ranges(tmp_path, make_ecbsr, act, roles):
    model = make_ecbsr(blocks=1, channels=8, act=act)
    ckpt = tmp_path / f"{act}.pth"
    torch.save(model.state_dict(), ckpt)
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["export", str(ckpt), "--act", act, "-o", str(out), "--formats", "fp32,int8",
                                      "--input-size", "32x40", "--calib-count", "4"])
    assert result.exit_code == 0, result.output
    rep = json.loads((out / "report.json").read_text())
    ranges = rep["int8_preparation"]["activation_ranges"]
    assert ranges["source"] == "ecbdeploy (minmax)"
    inner = model.arch.blocks + 1  # the head and the middle blocks carry an activation; the tail does not
    assert [t["role"] for t in ranges["tensors"]] == roles * inner + ["residual"]
    if act == "relu":
        assert all(t["range"][0] == 0.0 for t in ranges["tensors"][:-1])
    int8 = next(a for a in rep["artifacts"] if a.get("target") == "int8")
    assert int8["passed"] and int8["parity"]["min_psnr_vs_reference"] >= 38.0
