"""ONNX export: parity with the multi-branch model on real photos, the deploy op set, metadata,
dynamic shapes, the onnxsim fallback and output-folder errors."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch

from ecbdeploy import onnx_export
from ecbdeploy.cli import cli
from ecbdeploy.errors import EcbDeployError
from ecbdeploy.fusion import fuse, photo_input
from ecbdeploy.runners import OnnxRunner

PARITY_TOLERANCE = 1e-4  # max abs error / pixel range, ONNX Runtime vs multi-branch PyTorch


def _reference(model, x, clamp=True):
    with torch.no_grad():
        y = model(torch.from_numpy(x)).numpy()
    return np.clip(y, 0, model.arch.pixel_range) if clamp else y


def _photo(arch, size):
    return photo_input(arch.colors, arch.scale, arch.pixel_range, size=size)


@pytest.mark.parametrize("colors,scale,pixel_range", [(1, 2, 255.0), (1, 3, 255.0), (1, 4, 1.0),
                                                      (3, 2, 1.0), (3, 3, 1.0), (3, 4, 255.0)])
def test_static_export_matches_multibranch_on_a_photo(tmp_path, make_ecbsr, colors, scale, pixel_range):
    model = make_ecbsr(blocks=2, channels=8, colors=colors, scale=scale, pixel_range=pixel_range)
    art = onnx_export.export_onnx(fuse(model), tmp_path / "m.onnx", input_hw=(40, 52))
    x = _photo(model.arch, 64)[:, :, :40, :52].copy()
    y = OnnxRunner(art.path)(x)
    err = np.abs(y - _reference(model, x)).max() / pixel_range
    assert err <= PARITY_TOLERANCE
    assert y.shape == (1, colors, 40 * scale, 52 * scale)


@pytest.mark.parametrize("colors", [1, 3])
def test_graph_holds_only_the_deploy_op_set(tmp_path, make_ecbsr, colors):
    model = make_ecbsr(blocks=2, channels=8, colors=colors, scale=3)
    art = onnx_export.export_onnx(fuse(model), tmp_path / "m.onnx", input_hw=(16, 16))
    graph = onnx.load(str(art.path)).graph
    ops = [n.op_type for n in graph.node]
    expected = {"Conv": 4, "PRelu": 3, "Add": 1, "DepthToSpace": 1, "Clip": 1}
    if colors == 3:
        expected["Concat"] = 1
    assert {op: ops.count(op) for op in set(ops)} == expected
    d2s = next(n for n in graph.node if n.op_type == "DepthToSpace")
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in d2s.attribute}
    assert attrs == {"blocksize": 3, "mode": b"DCR"}
    assert [i.name for i in graph.input] == ["lr"] and [o.name for o in graph.output] == ["sr"]
    assert art.simplified


def test_metadata_records_the_architecture(tmp_path, make_ecbsr):
    model = make_ecbsr(blocks=1, channels=8, colors=3, scale=2, pixel_range=1.0)
    art = onnx_export.export_onnx(fuse(model), tmp_path / "m.onnx", input_hw=(8, 8), metadata={"name": "demo"})
    props = {p.key: p.value for p in onnx.load(str(art.path)).metadata_props}
    assert json.loads(props["arch"]) == model.arch.to_dict()
    assert (props["scale"], props["colors"], props["pixel_range"], props["name"]) == ("2", "3", "1", "demo")
    assert OnnxRunner(art.path).arch == model.arch


@pytest.mark.parametrize("colors", [1, 3])
def test_dynamic_export_runs_at_two_sizes(tmp_path, make_ecbsr, colors):
    model = make_ecbsr(blocks=1, channels=8, colors=colors, scale=2)
    art = onnx_export.export_onnx(fuse(model), tmp_path / "m.onnx", input_hw=None)
    assert art.input_shape[2:] == ["height", "width"]
    runner = OnnxRunner(art.path)
    assert runner.static_hw is None
    photo = _photo(model.arch, 96)
    for h, w in ((23, 37), (64, 48)):
        x = photo[:, :, :h, :w].copy()
        y = runner(x)
        assert y.shape == (1, colors, 2 * h, 2 * w)
        assert np.abs(y - _reference(model, x)).max() / 255.0 <= PARITY_TOLERANCE


def test_no_clamp_leaves_out_the_clip(tmp_path, make_ecbsr):
    model = make_ecbsr(blocks=1, channels=8)
    art = onnx_export.export_onnx(fuse(model), tmp_path / "m.onnx", input_hw=(12, 12), clamp=False)
    assert "Clip" not in art.ops
    x = _photo(model.arch, 12)
    assert np.abs(OnnxRunner(art.path)(x) - _reference(model, x, clamp=False)).max() / 255.0 <= PARITY_TOLERANCE


@pytest.mark.parametrize("colors", [1, 3])
def test_addrelu_form_equals_prelu_for_any_slope(tmp_path, make_ecbsr, colors):
    model = make_ecbsr(blocks=2, channels=8, colors=colors)
    # negative, unit and above-one slopes (the last are rewritten as -a * prelu_{1/a}(-y)), all exact
    with torch.no_grad():
        model.backbone[0].act.weight[:3] = torch.tensor([-0.3, 1.0, 1.5])
        model.backbone[2].act.weight[5] = 3.0
    plain = fuse(model)
    before = [p.clone() for p in plain.parameters()]
    art = onnx_export.export_onnx(plain, tmp_path / "addrelu.onnx", input_hw=(20, 20), activation_form="addrelu")
    assert "PRelu" not in art.ops and (art.ops["Mul"], art.ops["Relu"]) == (3, 3)
    x = _photo(model.arch, 20)
    assert np.abs(OnnxRunner(art.path)(x) - _reference(model, x)).max() / 255.0 <= PARITY_TOLERANCE
    assert all(torch.equal(a, b) for a, b in zip(before, plain.parameters())), "export must not modify its input"


def test_slopes_at_most_one_is_exact_in_pytorch(make_ecbsr):
    model = make_ecbsr(blocks=3, channels=8)
    with torch.no_grad():
        for ecb in model.backbone[:-1]:
            ecb.act.weight.uniform_(0.2, 2.5)
    plain = fuse(model)
    folded = onnx_export.slopes_at_most_one(plain)
    assert max(float(a.weight.detach().max()) for a in folded.acts) <= 1.0
    x = torch.from_numpy(_photo(model.arch, 24))
    with torch.no_grad():
        assert float((folded(x) - plain(x)).abs().max()) / 255.0 <= PARITY_TOLERANCE


def test_onnxsim_failure_keeps_the_checked_graph(tmp_path, make_ecbsr, monkeypatch):
    import onnxsim

    def broken(*args, **kwargs):
        raise RuntimeError("simulated onnxsim crash")

    monkeypatch.setattr(onnxsim, "simplify", broken)
    model = make_ecbsr(blocks=1, channels=8)
    art = onnx_export.export_onnx(fuse(model), tmp_path / "m.onnx", input_hw=(16, 16))
    assert not art.simplified
    assert any("simulated onnxsim crash" in n for n in art.notes)
    onnx.checker.check_model(onnx.load(str(art.path)), full_check=True)
    x = _photo(model.arch, 16)
    assert np.abs(OnnxRunner(art.path)(x) - _reference(model, x)).max() / 255.0 <= PARITY_TOLERANCE


def test_failed_export_leaves_no_file(tmp_path, make_ecbsr, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("exporter exploded")

    monkeypatch.setattr(torch.onnx, "export", broken)
    with pytest.raises(EcbDeployError, match="exporter exploded"):
        onnx_export.export_onnx(fuse(make_ecbsr()), tmp_path / "m.onnx", input_hw=(8, 8))
    assert list(tmp_path.iterdir()) == []


def test_softplus_is_refused_with_a_clear_message(tmp_path, make_ecbsr):
    with pytest.raises(EcbDeployError, match="softplus"):
        onnx_export.export_onnx(fuse(make_ecbsr(act="softplus")), tmp_path / "m.onnx", input_hw=(8, 8))


@pytest.mark.parametrize("fmt", ["official", "basicsr"])
def test_cli_export_onnx_and_run(tmp_path, make_ecbsr, cli_runner, fmt):
    pixel_range = 255.0 if fmt == "official" else 1.0
    colors = 1 if fmt == "official" else 3
    model = make_ecbsr(blocks=1, channels=8, colors=colors, scale=2, pixel_range=pixel_range)
    sd = model.state_dict()
    ckpt = tmp_path / "m.pth"
    torch.save(sd if fmt == "official" else {"params": sd, "params_ema": sd}, ckpt)
    out = tmp_path / "out"
    result = cli_runner.invoke(cli, ["export", str(ckpt), "-o", str(out), "--formats", "onnx", "--input-size", "24x32"])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    (onnx_entry,) = report["artifacts"]
    assert onnx_entry["file"] == "m.onnx" and onnx_entry["parity"]["max_abs_error_relative"] <= PARITY_TOLERANCE
    assert onnx_entry["input"]["shape"] == [1, colors, 24, 32] and onnx_entry["input"]["pixel_range"] == pixel_range
    x = _photo(model.arch, 32)[:, :, :24, :].copy()
    np.save(tmp_path / "x.npy", x)
    result = cli_runner.invoke(cli, ["run", str(out / "m.onnx"), "--input", str(tmp_path / "x.npy"),
                                     "--output", str(tmp_path / "y.npy")])
    assert result.exit_code == 0, result.output
    assert np.abs(np.load(tmp_path / "y.npy") - _reference(model, x)).max() / pixel_range <= PARITY_TOLERANCE


def test_cli_unwritable_output_folder_is_a_one_line_error(tmp_path, make_ecbsr, cli_runner):
    ckpt = tmp_path / "m.pth"
    torch.save(make_ecbsr().state_dict(), ckpt)
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    result = cli_runner.invoke(cli, ["export", str(ckpt), "-o", str(blocker / "out"), "--formats", "onnx"])
    assert result.exit_code == 1
    assert result.output.startswith("Error: cannot create output folder") and "Traceback" not in result.output


def test_cli_dynamic_with_tflite_is_refused(tmp_path, make_ecbsr, cli_runner):
    ckpt = tmp_path / "m.pth"
    torch.save(make_ecbsr().state_dict(), ckpt)
    result = cli_runner.invoke(cli, ["export", str(ckpt), "-o", str(tmp_path / "o"), "--dynamic"])
    assert result.exit_code == 1 and "--dynamic applies to ONNX only" in result.output
