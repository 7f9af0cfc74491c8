"""Checkpoint loading: every supported format, architecture inference, flags and defaults, and bad
input (each a one-line EcbDeployError naming the problem), including a malicious pickle."""

from __future__ import annotations

import os
import pathlib
import pickle
import shlex

import pytest
import torch

from ecbdeploy.arch import ArchSpec
from ecbdeploy.checkpoint import FUSED_FORMAT, load_checkpoint, read_checkpoint_file, save_fused
from ecbdeploy.deploy_model import PlainSR
from ecbdeploy.errors import EcbDeployError
from ecbdeploy.fusion import fuse
from ecbdeploy.train_model import ECBSR

TOL = 1e-4  # fused vs multi-branch, fraction of the pixel range


def same_weights(model: torch.nn.Module, sd: dict) -> bool:
    got = model.state_dict()
    return set(got) == set(sd) and all(torch.equal(got[k], sd[k]) for k in sd)


def output(model, colors=1, pixel_range=255.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand((1, colors, 6, 5), generator=g) * pixel_range
    with torch.no_grad():
        return model(x)


def load_error(path, **flags) -> str:
    with pytest.raises(EcbDeployError) as err:
        load_checkpoint(path, **flags)
    msg = str(err.value)
    assert "\n" not in msg and msg.strip() == msg and msg
    return msg


@pytest.fixture(scope="module")
def small(make_ecbsr):
    """A M2C8 x2 PReLU model and its state_dict."""
    model = make_ecbsr(blocks=2, channels=8, seed=1)
    return model, {k: v.clone() for k, v in model.state_dict().items()}


@pytest.fixture
def official(tmp_path, small):
    path = tmp_path / "official.pth"
    torch.save(small[1], path)
    return path


# --- formats -------------------------------------------------------------------------------------

def test_official_bare_state_dict(official, small):
    loaded = load_checkpoint(official)
    assert loaded.format == "official" and not loaded.is_fused
    assert isinstance(loaded.model, ECBSR) and not loaded.model.training
    assert loaded.arch == ArchSpec(blocks=2, channels=8, colors=1, scale=2, act="prelu", pixel_range=255.0)
    assert same_weights(loaded.model, small[1])
    assert torch.equal(output(loaded.model), output(small[0]))
    assert any("pixel range 255" in n for n in loaded.notes)


def test_official_legacy_serialization(tmp_path, small):
    path = tmp_path / "legacy.pth"
    torch.save(small[1], path, _use_new_zipfile_serialization=False)
    assert same_weights(load_checkpoint(path).model, small[1])


def test_basicsr_params(tmp_path, small):
    path = tmp_path / "basicsr.pth"
    torch.save({"params": small[1]}, path)
    loaded = load_checkpoint(path)
    assert loaded.format == "basicsr"
    assert loaded.arch.pixel_range == 1.0  # BasicSR trains in 0-1
    assert same_weights(loaded.model, small[1])


def test_basicsr_prefers_ema_unless_told(tmp_path, small):
    ema = {k: v if k.endswith(".mask") else v + 0.5 for k, v in small[1].items()}
    assert not torch.equal(ema["backbone.0.conv3x3.weight"], small[1]["backbone.0.conv3x3.weight"])
    path = tmp_path / "basicsr_ema.pth"
    torch.save({"params": small[1], "params_ema": ema}, path)

    loaded = load_checkpoint(path)
    assert same_weights(loaded.model, ema)
    assert any("params_ema" in n for n in loaded.notes)

    loaded = load_checkpoint(path, prefer_ema=False)
    assert same_weights(loaded.model, small[1])
    assert any("--no-ema" in n for n in loaded.notes)


def test_basicsr_ema_only(tmp_path, small):
    path = tmp_path / "ema_only.pth"
    torch.save({"params_ema": small[1]}, path)
    assert same_weights(load_checkpoint(path, prefer_ema=False).model, small[1])


@pytest.mark.parametrize("prefix", ["module.", "module.module."])
def test_basicsr_module_prefix(tmp_path, small, prefix):
    path = tmp_path / "ddp.pth"
    torch.save({"params": {prefix + k: v for k, v in small[1].items()}}, path)
    assert same_weights(load_checkpoint(path).model, small[1])


def test_lightning_style_state_dict_with_model_prefix(tmp_path, small):
    path = tmp_path / "lightning.ckpt"
    torch.save({"epoch": 3, "state_dict": {"model." + k: v for k, v in small[1].items()}}, path)
    loaded = load_checkpoint(path)
    assert loaded.format == "wrapped" and loaded.arch.pixel_range == 255.0
    assert same_weights(loaded.model, small[1])
    assert any("'state_dict'" in n for n in loaded.notes)


def test_model_entry(tmp_path, small):
    path = tmp_path / "wrapped.pth"
    torch.save({"model": small[1], "optimizer_step": 10}, path)
    loaded = load_checkpoint(path)
    assert loaded.format == "wrapped"
    assert same_weights(loaded.model, small[1])


def test_half_precision_weights_are_upcast(tmp_path, small):
    path = tmp_path / "fp16.pth"
    torch.save({k: v.half() for k, v in small[1].items()}, path)
    model = load_checkpoint(path).model
    assert all(v.dtype == torch.float32 for v in model.state_dict().values())
    assert float((output(model) - output(small[0])).abs().max()) < 1.0  # fp16 rounding of the weights


@pytest.mark.parametrize("pixel_range", [255.0, 1.0])
def test_fused_checkpoint_round_trip(tmp_path, make_ecbsr, pixel_range):
    model = make_ecbsr(blocks=1, channels=6, colors=3, scale=3, act="softplus", with_idt=True,
                       pixel_range=pixel_range, seed=4)
    plain = fuse(model)
    path = save_fused(tmp_path / "sub" / "fused.pth", plain, {"source": "x.pth"})
    assert path.is_file() and not list(path.parent.glob("*.part"))

    loaded = load_checkpoint(path)
    assert loaded.format == FUSED_FORMAT and loaded.is_fused
    assert isinstance(loaded.model, PlainSR) and not loaded.model.training
    assert loaded.arch == model.arch  # with_idt, act and pixel range come from the metadata
    assert same_weights(loaded.model, plain.state_dict())
    y = output(model, colors=3, pixel_range=pixel_range)
    assert float((output(loaded.model, colors=3, pixel_range=pixel_range) - y).abs().max()) <= TOL * pixel_range

    raw = torch.load(path, weights_only=True)  # no ecbdeploy code needed to read it
    assert set(raw) == {"ecbdeploy", "state_dict"}
    assert raw["ecbdeploy"]["format"] == FUSED_FORMAT and raw["ecbdeploy"]["source"] == "x.pth"
    assert raw["ecbdeploy"]["arch"] == model.arch.to_dict()
    assert all(isinstance(v, torch.Tensor) for v in raw["state_dict"].values())


def test_fused_checkpoint_ignores_flags_it_does_not_need(tmp_path, make_ecbsr):
    path = save_fused(tmp_path / "f.pth", fuse(make_ecbsr(blocks=0, channels=4)))
    assert load_checkpoint(path, with_idt=True, pixel_range=1.0, act="relu").arch.pixel_range == 255.0


# --- architecture inference, flags, defaults ----------------------------------------------------

@pytest.mark.parametrize("blocks,channels,colors,scale,act", [
    (0, 4, 1, 2, "prelu"), (1, 3, 3, 3, "prelu"), (3, 5, 1, 4, "prelu"), (2, 6, 3, 4, "relu"),
])
def test_architecture_is_inferred(tmp_path, make_ecbsr, blocks, channels, colors, scale, act):
    model = make_ecbsr(blocks=blocks, channels=channels, colors=colors, scale=scale, act=act)
    path = tmp_path / "m.pth"
    torch.save(model.state_dict(), path)
    arch = load_checkpoint(path).arch
    assert (arch.blocks, arch.channels, arch.colors, arch.scale, arch.act) == (blocks, channels, colors, scale, act)
    assert arch.with_idt is False


@pytest.mark.parametrize("act", ["relu", "rrelu", "softplus", "linear"])
def test_act_flag_for_activations_without_weights(tmp_path, make_ecbsr, act):
    model = make_ecbsr(blocks=1, channels=4, act=act, seed=2)
    path = tmp_path / "m.pth"
    torch.save(model.state_dict(), path)
    default = load_checkpoint(path)
    assert default.arch.act == "relu"
    assert any("assumed relu" in n for n in default.notes)
    loaded = load_checkpoint(path, act=act)
    assert loaded.arch.act == act
    assert torch.equal(output(loaded.model), output(model))
    if act in ("softplus", "linear"):  # a wrong guess changes the outputs
        assert not torch.allclose(output(default.model), output(model))


def test_with_idt_flag(tmp_path, make_ecbsr):
    model = make_ecbsr(blocks=2, channels=4, with_idt=True, seed=3)
    path = tmp_path / "m.pth"
    torch.save(model.state_dict(), path)
    assert load_checkpoint(path).arch.with_idt is False  # not stored in the weights
    loaded = load_checkpoint(path, with_idt=True)
    assert loaded.arch.with_idt is True
    assert torch.equal(output(loaded.model), output(model))


def test_pixel_range_flag_overrides_the_default(official, tmp_path, small):
    assert load_checkpoint(official, pixel_range=1.0).arch.pixel_range == 1.0
    path = tmp_path / "b.pth"
    torch.save({"params": small[1]}, path)
    loaded = load_checkpoint(path, pixel_range=255.0)
    assert loaded.arch.pixel_range == 255.0
    assert not any("default" in n for n in loaded.notes)


def test_sidecar_json_supplies_what_the_weights_cannot(tmp_path, make_ecbsr):
    model = make_ecbsr(blocks=1, channels=4, act="softplus", with_idt=True, pixel_range=1.0)
    path = tmp_path / "m.pth"
    torch.save(model.state_dict(), path)
    path.with_suffix(".json").write_text('{"arch": {"act": "softplus", "with_idt": true, "pixel_range": 1.0}}')
    loaded = load_checkpoint(path)
    assert loaded.arch == model.arch
    assert load_checkpoint(path, pixel_range=255.0, with_idt=False).arch.pixel_range == 255.0


# --- bad input -----------------------------------------------------------------------------------

def test_missing_file(tmp_path):
    assert "not found" in load_error(tmp_path / "nope.pth")


def test_directory(tmp_path):
    assert "folder" in load_error(tmp_path)


@pytest.mark.parametrize("content", [
    pytest.param(os.urandom(4096), id="random-bytes"),
    pytest.param(b"hello world\nthis is a text file\n", id="text"),
    pytest.param(b"", id="empty"),
    pytest.param(b'{"params": {}}', id="json"),
])
def test_not_a_checkpoint(tmp_path, content):
    path = tmp_path / "bad.pth"
    path.write_bytes(content)
    msg = load_error(path)
    assert "checkpoint" in msg and "bad.pth" in msg


def test_random_bytes_never_escape_as_another_exception(tmp_path):
    """The unpickler raises KeyError, IndexError, ... on some byte patterns (fixed seeds found them)."""
    import random

    for seed in range(120):
        rnd = random.Random(seed)
        path = tmp_path / f"r{seed}.pth"
        path.write_bytes(bytes(rnd.getrandbits(8) for _ in range(rnd.randint(1, 64))))
        load_error(path)


@pytest.mark.parametrize("obj,needle", [
    (torch.zeros(3), "found Tensor"),
    ([1, 2], "found list"),
    ({}, "no weights"),
    ({"backbone.0.conv3x3.weight": 3}, "is a int"),
    ({0: torch.zeros(1)}, "not keyed by parameter names"),
    ({"params": torch.zeros(2)}, "weights entry is a Tensor"),
    ({"ecbdeploy": {"format": "other"}, "state_dict": {}}, "unknown ecbdeploy checkpoint format"),
    ({"ecbdeploy": {"format": FUSED_FORMAT, "arch": {"blocks": 1}}, "state_dict": {"x": torch.zeros(1)}},
     "invalid architecture metadata"),
    ({"conv.weight": torch.zeros(4, 1, 3, 3)}, "backbone.<i>.conv3x3.weight"),
])
def test_not_an_ecbsr_checkpoint(tmp_path, obj, needle):
    path = tmp_path / "x.pth"
    torch.save(obj, path)
    assert needle in load_error(path)


@pytest.mark.parametrize("fraction", [0.0, 0.1, 0.5, 0.9, 0.999])
@pytest.mark.parametrize("legacy", [False, True])
def test_truncated_file(tmp_path, small, fraction, legacy):
    full = tmp_path / "full.pth"
    torch.save(small[1], full, _use_new_zipfile_serialization=not legacy)
    data = full.read_bytes()
    cut = tmp_path / "cut.pth"
    cut.write_bytes(data[: max(1, int(len(data) * fraction))])
    msg = load_error(cut)
    assert "cut.pth" in msg


def test_missing_keys_are_named(tmp_path, small):
    sd = dict(small[1])
    del sd["backbone.1.conv1x1_sbx.scale"], sd["backbone.2.act.weight"]
    path = tmp_path / "m.pth"
    torch.save(sd, path)
    msg = load_error(path)
    assert "missing keys" in msg
    assert "backbone.1.conv1x1_sbx.scale" in msg and "backbone.2.act.weight" in msg


def test_missing_middle_block_is_named(tmp_path, small):
    sd = {k: v for k, v in small[1].items() if not k.startswith("backbone.1.conv3x3.")}
    path = tmp_path / "m.pth"
    torch.save(sd, path)
    assert "backbone.<i>.conv3x3.weight" in load_error(path)


def test_unexpected_keys_are_named(tmp_path, small):
    sd = dict(small[1], **{"backbone.1.extra.weight": torch.zeros(2), "upsampler.weight": torch.zeros(1)})
    path = tmp_path / "m.pth"
    torch.save(sd, path)
    msg = load_error(path)
    assert "unexpected keys" in msg and "backbone.1.extra.weight" in msg and "upsampler.weight" in msg


@pytest.mark.parametrize("key,shape", [
    ("backbone.1.conv3x3.weight", (8, 7, 3, 3)),
    ("backbone.1.conv1x1_3x3.k1", (8, 16, 1, 1)),
    ("backbone.0.act.weight", (4,)),
    ("backbone.3.conv3x3.weight", (5, 8, 3, 3)),  # tail: 5 outputs is no colours x scale^2
    ("backbone.0.conv3x3.weight", (8, 9)),
    ("backbone.0.conv3x3.weight", (8, 0, 3, 3)),  # no input colour at all
])
def test_inconsistent_shapes(tmp_path, small, key, shape):
    sd = dict(small[1], **{key: torch.zeros(shape)})
    path = tmp_path / "m.pth"
    torch.save(sd, path)
    msg = load_error(path)
    assert "inconsistent shapes" in msg or "unsupported" in msg


def test_inconsistent_shape_names_the_key(tmp_path, small):
    sd = dict(small[1], **{"backbone.2.conv1x1_lpl.k0": torch.zeros(8, 3, 1, 1)})
    path = tmp_path / "m.pth"
    torch.save(sd, path)
    msg = load_error(path)
    assert "inconsistent shapes" in msg and "backbone.2.conv1x1_lpl.k0" in msg and "(8, 3, 1, 1)" in msg


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_weights_are_named(tmp_path, small, bad):
    sd = {k: v.clone() for k, v in small[1].items()}
    sd["backbone.2.conv1x1_sby.bias"][1] = bad
    path = tmp_path / "m.pth"
    torch.save({"params_ema": sd}, path)
    msg = load_error(path)
    assert "backbone.2.conv1x1_sby.bias" in msg and "NaN or Inf" in msg


def test_unsupported_activation(official):
    msg = load_error(official, act="gelu")
    assert "unsupported activation 'gelu'" in msg and "prelu" in msg


def test_act_prelu_on_a_checkpoint_without_prelu(tmp_path, make_ecbsr):
    path = tmp_path / "relu.pth"
    torch.save(make_ecbsr(blocks=1, channels=4, act="relu").state_dict(), path)
    msg = load_error(path, act="prelu")
    assert "--act prelu" in msg and "no PReLU" in msg


def test_other_act_on_a_prelu_checkpoint(official):
    assert "PReLU weights but --act relu" in load_error(official, act="relu")


def test_bad_scale_and_colours(tmp_path, small):
    sd = dict(small[1])
    sd["backbone.3.conv3x3.weight"] = torch.zeros(25, 8, 3, 3)  # x5
    path = tmp_path / "m.pth"
    torch.save(sd, path)
    assert "unsupported scale 5" in load_error(path)


# --- malicious pickles ---------------------------------------------------------------------------

class _System:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {shlex.quote(str(self.marker))}",)


class _Touch:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return pathlib.Path.touch, (pathlib.Path(self.marker),)


def write_payload(path, marker, kind: str, how: str):
    payload = (_System if kind == "system" else _Touch)(marker)
    obj = {"params": {"backbone.0.conv3x3.weight": payload}} if kind == "touch" else payload
    if how == "zip":
        torch.save(obj, path)
    elif how == "legacy":
        torch.save(obj, path, _use_new_zipfile_serialization=False)
    else:  # a bare pickle, protocol 2 (as torch writes) or the Python default (framed)
        with open(path, "wb") as f:
            pickle.dump(obj, f, protocol=2 if how == "raw" else None)
    return path


MALICIOUS = [(kind, how) for kind in ("system", "touch") for how in ("zip", "legacy", "raw", "raw-default")]


def test_the_payloads_are_live(tmp_path):
    """Control: an ordinary unpickler really does run them (so refusing them means something)."""
    for kind in ("system", "touch"):
        marker = tmp_path / f"control_{kind}"
        path = write_payload(tmp_path / f"{kind}.pkl", marker, kind, "raw")
        with open(path, "rb") as f:
            pickle.load(f)
        assert marker.exists()


@pytest.mark.parametrize("kind,how", MALICIOUS)
def test_malicious_pickle_is_refused_and_not_run(tmp_path, kind, how):
    marker = tmp_path / "pwned"
    path = write_payload(tmp_path / "evil.pth", marker, kind, how)
    with pytest.raises(EcbDeployError) as err:
        read_checkpoint_file(path)
    msg = str(err.value)
    assert "evil.pth" in msg and "\n" not in msg
    if how != "raw-default":  # torch's unpickler rejects the framed pickle before reading a global
        assert "refused to load" in msg and "nothing in it was run" in msg
    assert not marker.exists()
    load_error(path)
    assert not marker.exists()


@pytest.mark.parametrize("text", ['{"arch": "ecbsr"}', "[1, 2]", '{"other": 1}', "not json", "\udcff"])
def test_unrelated_sidecar_json_is_ignored(tmp_path, small, text):
    """A .json next to the checkpoint that is not ecbdeploy's sidecar does not get in the way."""
    path = tmp_path / "m.pth"
    torch.save(small[1], path)
    path.with_suffix(".json").write_bytes(text.encode("utf-8", "surrogateescape"))
    loaded = load_checkpoint(path)
    assert loaded.arch.pixel_range == 255.0 and loaded.arch.with_idt is False


@pytest.mark.parametrize("arch", ['{"pixel_range": "abc"}', '{"with_idt": "false"}', '{"act": 3}'])
def test_malformed_sidecar_is_a_one_line_error(tmp_path, small, arch):
    path = tmp_path / "m.pth"
    torch.save(small[1], path)
    path.with_suffix(".json").write_text(f'{{"arch": {arch}}}')
    assert "m.json" in load_error(path)
