"""The core CLI (`inspect`, `fuse`, `run`) through click's CliRunner, plus the installed console script.

User errors: exit code 1, exactly one line starting with "Error:", never a traceback.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from ecbdeploy.checkpoint import FUSED_FORMAT, load_checkpoint
from ecbdeploy.cli import cli

TOL = 1e-4  # fused vs multi-branch, fraction of the pixel range

# NOTES §1: (blocks, channels, scale) -> (training-form params, fused params), colors=1, PReLU.
KNOWN_COUNTS = {(4, 8, 2): (10_804, 2_748), (4, 16, 2): (39_956, 10_100), (4, 16, 4): (47_120, 11_840)}


def invoke(runner, *args):
    return runner.invoke(cli, [str(a) for a in args], catch_exceptions=True)


def assert_ok(result):
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output


def assert_user_error(result, *needles):
    """Exit 1 and a single line "Error: ..." naming the problem (not an unexpected exception)."""
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    for needle in needles:
        assert needle in lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory, make_ecbsr):
    """Official-format training checkpoints for the three architectures with known counts."""
    folder = tmp_path_factory.mktemp("ckpts")
    paths = {}
    for (blocks, channels, scale) in KNOWN_COUNTS:
        path = folder / f"m{blocks}c{channels}x{scale}.pth"
        torch.save(make_ecbsr(blocks=blocks, channels=channels, scale=scale, seed=channels + scale).state_dict(), path)
        paths[blocks, channels, scale] = path
    return paths


@pytest.fixture(scope="module")
def m4c8(ckpts):
    return ckpts[4, 8, 2]


# --- inspect -------------------------------------------------------------------------------------

@pytest.mark.parametrize("key", list(KNOWN_COUNTS))
def test_inspect_text_param_counts(cli_runner, ckpts, key):
    result = invoke(cli_runner, "inspect", ckpts[key])
    assert_ok(result)
    training, fused = KNOWN_COUNTS[key]
    m = re.search(r"parameters\s*:\s*training (\d+)\s*->\s*fused (\d+)", result.output)
    assert m and (int(m.group(1)), int(m.group(2))) == (training, fused)
    assert "official checkpoint" in result.output
    blocks, channels, scale = key
    assert f"ecbsr_m{blocks}c{channels}_x{scale}" in result.output
    assert "activation   : prelu" in result.output and "pixel range: 0-255" in result.output


@pytest.mark.parametrize("key", list(KNOWN_COUNTS))
def test_inspect_json_param_counts_and_macs(cli_runner, ckpts, key):
    result = invoke(cli_runner, "inspect", ckpts[key], "--json")
    assert_ok(result)
    info = json.loads(result.output)
    blocks, channels, scale = key
    assert (info["params"]["training"], info["params"]["fused"]) == KNOWN_COUNTS[key]
    assert info["format"] == "official" and info["fused"] is False
    assert info["arch"] == {"blocks": blocks, "channels": channels, "colors": 1, "scale": scale, "act": "prelu",
                            "with_idt": False, "pixel_range": 255.0}
    # fused convs: 1->C, blocks x C->C, C->s^2; 9 MACs per weight tap per LR pixel
    assert info["macs_per_lr_pixel"] == 9 * (channels + blocks * channels ** 2 + channels * scale ** 2)
    assert "gmacs" not in info


def test_inspect_input_size_macs(cli_runner, m4c8):
    result = invoke(cli_runner, "inspect", m4c8, "--json", "--input-size", "540x960")
    assert_ok(result)
    info = json.loads(result.output)
    assert info["macs_per_lr_pixel"] == 2_664  # 9 * (8 + 4*64 + 8*4)
    assert info["input_size"] == [540, 960]
    assert info["gmacs"] == pytest.approx(2_664 * 540 * 960 / 1e9)
    text = invoke(cli_runner, "inspect", m4c8, "--input-size", "540X960")
    assert_ok(text)
    assert "2,664 per LR pixel" in text.output and "1.38 GMACs for a 540x960 input" in text.output


@pytest.mark.parametrize("size", ["abc", "540", "0x10", "10x-3", "1.5x2"])
def test_inspect_bad_input_size(cli_runner, m4c8, size):
    assert_user_error(invoke(cli_runner, "inspect", m4c8, "--input-size", size), "invalid size")


def test_inspect_flags(cli_runner, tmp_path, make_ecbsr):
    path = tmp_path / "softplus.pth"
    torch.save({"params": make_ecbsr(blocks=1, channels=4, act="softplus").state_dict()}, path)
    info = json.loads(invoke(cli_runner, "inspect", path, "--json").output)
    assert info["format"] == "basicsr" and info["arch"]["pixel_range"] == 1.0 and info["arch"]["act"] == "relu"
    assert any("assumed relu" in n for n in info["notes"])
    result = invoke(cli_runner, "inspect", path, "--json", "--act", "softplus", "--with-idt", "--pixel-range", "255")
    assert_ok(result)
    arch = json.loads(result.output)["arch"]
    assert (arch["act"], arch["with_idt"], arch["pixel_range"]) == ("softplus", True, 255.0)


# --- fuse ----------------------------------------------------------------------------------------

def test_fuse_writes_a_verified_checkpoint(cli_runner, tmp_path, m4c8):
    out = tmp_path / "deep" / "fused.pth"
    result = invoke(cli_runner, "fuse", m4c8, "-o", out)
    assert_ok(result)
    assert f"wrote {out}" in result.output
    m = re.search(r"random input ([\d.e+-]+), photo 'astronaut' ([\d.e+-]+) \(tolerance ([\d.e+-]+)\)", result.output)
    assert m, result.output
    rand_err, photo_err, tol = (float(v) for v in m.groups())
    assert tol == pytest.approx(TOL * 255, rel=1e-2)
    assert 0 <= rand_err <= tol and 0 <= photo_err <= tol

    raw = torch.load(out, weights_only=True)
    assert raw["ecbdeploy"]["format"] == FUSED_FORMAT
    assert raw["ecbdeploy"]["source"] == m4c8.name
    assert raw["ecbdeploy"]["verification"]["max_abs_photo"] == pytest.approx(photo_err, rel=1e-2)

    info = json.loads(invoke(cli_runner, "inspect", out, "--json").output)
    assert info["fused"] is True and info["params"] == {"training": None, "fused": 2_748}
    text = invoke(cli_runner, "inspect", out)
    assert "(fused)" in text.output and "training -  ->  fused 2748" in text.output


def test_fuse_refuses_a_fused_checkpoint(cli_runner, tmp_path, m4c8):
    out = tmp_path / "f.pth"
    assert_ok(invoke(cli_runner, "fuse", m4c8, "-o", out))
    assert_user_error(invoke(cli_runner, "fuse", out, "-o", tmp_path / "g.pth"), "already a fused checkpoint")
    assert not (tmp_path / "g.pth").exists()


def test_fuse_fails_when_the_tolerance_is_not_met(cli_runner, tmp_path, m4c8):
    out = tmp_path / "f.pth"
    line = assert_user_error(invoke(cli_runner, "fuse", m4c8, "-o", out, "--tolerance", "1e-12"),
                             "fusion check failed", "1e-12 of the pixel range")
    assert "exceeds" in line
    assert not out.exists() and not list(tmp_path.iterdir())  # nothing half-written either


# --- run -----------------------------------------------------------------------------------------

def test_run_training_fused_and_fused_checkpoint_agree(cli_runner, tmp_path, m4c8):
    x = (np.random.default_rng(0).random((2, 1, 13, 11)) * 255).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    fused_ckpt = tmp_path / "fused.pth"
    assert_ok(invoke(cli_runner, "fuse", m4c8, "-o", fused_ckpt))

    outputs = {}
    for name, args, runner_name in [("multi", [m4c8], "pytorch-multibranch"),
                                    ("fused_flag", [m4c8, "--fused"], "pytorch-fused"),
                                    ("fused_ckpt", [fused_ckpt], "pytorch-fused")]:
        out = tmp_path / f"{name}.npy"
        result = invoke(cli_runner, "run", *args, "--input", tmp_path / "x.npy", "--output", out)
        assert_ok(result)
        assert result.output.startswith(f"{runner_name}: (2, 1, 26, 22) -> ")
        outputs[name] = np.load(out)
        assert outputs[name].shape == (2, 1, 26, 22) and outputs[name].dtype == np.float32

    with torch.no_grad():
        reference = load_checkpoint(m4c8).model(torch.from_numpy(x)).numpy()
    assert np.abs(outputs["multi"] - reference).max() <= 1e-6 * 255  # batch of 2 vs one at a time
    assert np.abs(outputs["fused_flag"] - outputs["multi"]).max() <= TOL * 255
    assert np.abs(outputs["fused_ckpt"] - outputs["multi"]).max() <= TOL * 255
    assert np.array_equal(outputs["fused_flag"], outputs["fused_ckpt"])


@pytest.mark.parametrize("array,needle", [
    (np.zeros((1, 13, 11), np.float32), "NCHW"),
    (np.zeros((1, 3, 8, 8), np.float32), "expects 1"),
    (np.array([["a"]] * 1, dtype=object)[None, None], "cannot read"),
])
def test_run_bad_input_array(cli_runner, tmp_path, m4c8, array, needle):
    np.save(tmp_path / "x.npy", array, allow_pickle=True)
    result = invoke(cli_runner, "run", m4c8, "--input", tmp_path / "x.npy", "--output", tmp_path / "y.npy")
    assert_user_error(result, needle)
    assert not (tmp_path / "y.npy").exists()


def test_run_missing_input_and_model(cli_runner, tmp_path, m4c8):
    assert_user_error(invoke(cli_runner, "run", m4c8, "--input", tmp_path / "no.npy", "--output", tmp_path / "y.npy"),
                      "input not found")
    np.save(tmp_path / "x.npy", np.zeros((1, 1, 4, 4), np.float32))
    assert_user_error(invoke(cli_runner, "run", tmp_path / "no.pth", "--input", tmp_path / "x.npy",
                             "--output", tmp_path / "y.npy"), "not found")


# --- bad checkpoints -----------------------------------------------------------------------------

def _bad_checkpoints(folder: Path, m4c8: Path) -> dict[str, tuple[Path, str]]:
    """name -> (path, text the error line must contain)."""
    sd = torch.load(m4c8, weights_only=True)
    cases = {}

    def save(name, obj):
        torch.save(obj, folder / name)
        return folder / name

    (folder / "random.pth").write_bytes(os.urandom(2048))
    cases["random"] = (folder / "random.pth", "checkpoint")
    (folder / "text.pth").write_text("hello world\nnot a checkpoint\n")
    cases["text"] = (folder / "text.pth", "checkpoint")
    cases["tensor"] = (save("tensor.pth", torch.zeros(3)), "found Tensor")
    data = m4c8.read_bytes()
    (folder / "truncated.pth").write_bytes(data[: len(data) // 2])
    cases["truncated"] = (folder / "truncated.pth", "truncated or corrupt")
    cases["missing-key"] = (save("missing.pth", {k: v for k, v in sd.items() if k != "backbone.2.conv1x1_lpl.k0"}),
                            "missing keys: backbone.2.conv1x1_lpl.k0")
    cases["unexpected-key"] = (save("unexpected.pth", dict(sd, **{"head.weight": torch.zeros(1)})),
                               "unexpected keys: head.weight")
    cases["shape"] = (save("shape.pth", dict(sd, **{"backbone.1.conv3x3.bias": torch.zeros(9)})),
                      "inconsistent shapes: backbone.1.conv3x3.bias")
    nan = {k: v.clone() for k, v in sd.items()}
    nan["backbone.3.conv1x1_3x3.k1"][0, 0, 0, 0] = float("nan")
    cases["nan"] = (save("nan.pth", nan), "'backbone.3.conv1x1_3x3.k1' contains NaN or Inf")
    cases["missing-file"] = (folder / "nope.pth", "checkpoint not found")
    return cases


BAD = ["random", "text", "tensor", "truncated", "missing-key", "unexpected-key", "shape", "nan", "missing-file"]


@pytest.fixture(scope="module")
def bad_checkpoints(tmp_path_factory, m4c8):
    return _bad_checkpoints(tmp_path_factory.mktemp("bad"), m4c8)


@pytest.mark.parametrize("command", ["inspect", "fuse", "run"])
@pytest.mark.parametrize("case", BAD)
def test_bad_checkpoint_is_a_one_line_error(cli_runner, tmp_path, bad_checkpoints, command, case):
    path, needle = bad_checkpoints[case]
    extra = {"inspect": [], "fuse": ["-o", tmp_path / "o.pth"],
             "run": ["--input", tmp_path / "x.npy", "--output", tmp_path / "y.npy"]}[command]
    np.save(tmp_path / "x.npy", np.zeros((1, 1, 4, 4), np.float32))
    assert_user_error(invoke(cli_runner, command, path, *extra), needle if command != "run" or case != "missing-file"
                      else "not found")
    assert not (tmp_path / "o.pth").exists() and not (tmp_path / "y.npy").exists()


def test_act_flags_that_contradict_the_weights(cli_runner, tmp_path, m4c8, make_ecbsr):
    assert_user_error(invoke(cli_runner, "inspect", m4c8, "--act", "relu"), "PReLU weights but --act relu")
    relu = tmp_path / "relu.pth"
    torch.save(make_ecbsr(blocks=1, channels=4, act="relu").state_dict(), relu)
    assert_user_error(invoke(cli_runner, "inspect", relu, "--act", "prelu"), "--act prelu", "no PReLU")


def test_unsupported_activation_is_a_usage_error(cli_runner, m4c8):
    result = invoke(cli_runner, "inspect", m4c8, "--act", "gelu")
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "Invalid value for '--act'" in result.output


def test_a_directory_is_a_usage_error(cli_runner, tmp_path):
    """click rejects a folder for CKPT before ecbdeploy sees it: a usage error (exit 2), no traceback."""
    result = invoke(cli_runner, "inspect", tmp_path)
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "is a directory" in result.output


# --- malicious pickles ---------------------------------------------------------------------------

class _System:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch '{self.marker}'",)


@pytest.fixture
def evil(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    torch.save({"params": {"backbone.0.conv3x3.weight": _System(marker)}}, path)
    return path, marker


@pytest.mark.parametrize("command", ["inspect", "fuse", "run"])
def test_malicious_pickle_via_cli_runner(cli_runner, tmp_path, evil, command):
    path, marker = evil
    np.save(tmp_path / "x.npy", np.zeros((1, 1, 4, 4), np.float32))
    extra = {"inspect": ["--json"], "fuse": ["-o", tmp_path / "o.pth"],
             "run": ["--input", tmp_path / "x.npy", "--output", tmp_path / "y.npy"]}[command]
    assert_user_error(invoke(cli_runner, command, path, *extra), "refused to load", "posix.system")
    assert not marker.exists()
    assert not (tmp_path / "o.pth").exists()


def _console_script() -> str:
    candidate = Path(sys.executable).parent / "ecbdeploy"
    if candidate.is_file():
        return str(candidate)
    import shutil

    found = shutil.which("ecbdeploy", path=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
    assert found, "the ecbdeploy console script is not installed next to this Python"
    return found


def test_installed_console_script_never_shows_a_traceback(tmp_path, evil):
    path, marker = evil
    for args in (["inspect", str(path)], ["fuse", str(path), "-o", str(tmp_path / "o.pth")]):
        proc = subprocess.run([_console_script(), *args], check=False, capture_output=True, text=True, timeout=120,
                              cwd=tmp_path)
        assert proc.returncode == 1, proc.stderr
        assert "Traceback" not in proc.stdout + proc.stderr
        assert proc.stdout == ""
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("Error: refused to load"), proc.stderr
        assert not marker.exists()
