"""Fused network -> a checked, simplified ONNX graph that mobile converters and runtimes like.

The graph holds only Conv, the activation, Add, one Concat (RGB anchor), DepthToSpace in DCR
mode and the output Clip; named input `lr`, output `sr`; architecture in metadata_props.
"""

from __future__ import annotations

import json
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import onnx
import torch
from torch import nn

from .deploy_model import PlainSR
from .errors import EcbDeployError
from .fsutil import atomic_path

INPUT_NAME, OUTPUT_NAME = "lr", "sr"
DEFAULT_OPSET = 17
ACTIVATION_OPS = {"PRelu", "Relu", "LeakyRelu", "Mul"}
ALLOWED_OPS = {"Conv", "Add", "Concat", "DepthToSpace", "Clip"} | ACTIVATION_OPS
FORBIDDEN_OPS = {"Transpose", "Reshape", "Gather", "Shape", "Tile", "Expand"}

# How a PReLU is written into the graph. "native" keeps one PRelu op (what GPU delegates want).
# "addrelu" writes x + relu((a - 1) * x), exact for slopes a <= 1: in TFLite that is a MUL with a
# fused ReLU and an ADD, both run by XNNPACK in int8, where an int8 PRELU (or MAXIMUM) is not.
ACTIVATION_FORMS = ("native", "addrelu")


class _DepthToSpaceDCR(torch.autograd.Function):
    """Exports as one ONNX DepthToSpace(mode=DCR); PyTorch's own PixelShuffle exports as CRD."""

    @staticmethod
    def forward(ctx, x, scale: int):
        n, c, h, w = x.shape
        y = x.reshape(n, scale, scale, c // (scale * scale), h, w).permute(0, 3, 4, 1, 5, 2)
        return y.reshape(n, c // (scale * scale), h * scale, w * scale)

    @staticmethod
    def symbolic(g, x, scale: int):
        return g.op("DepthToSpace", x, blocksize_i=scale, mode_s="DCR")


class _PReLUAsAddRelu(nn.Module):
    def __init__(self, prelu: nn.PReLU):
        super().__init__()
        self.register_buffer("slope_minus_one", prelu.weight.detach().clone().view(1, -1, 1, 1) - 1.0)

    def forward(self, x):
        return x + torch.relu(x * self.slope_minus_one)


class ExportNet(nn.Module):
    """The deploy network in DCR layout, written with the ops the exported graph should hold."""

    def __init__(self, plain: PlainSR, clamp: bool = True, activation_form: str = "native"):
        super().__init__()
        dcr = plain.with_layout("dcr", clamp=False)
        self.arch, self.clamp = plain.arch, clamp
        self.convs = dcr.convs
        acts = list(dcr.acts)
        if activation_form not in ACTIVATION_FORMS:
            raise EcbDeployError(f"unknown activation form {activation_form!r}")
        if activation_form == "addrelu" and self.arch.act == "prelu":
            dcr = slopes_at_most_one(dcr)
            self.convs = dcr.convs
            acts = [_PReLUAsAddRelu(a) for a in dcr.acts]
        self.acts = nn.ModuleList(acts)

    def forward(self, x):
        y = x
        for conv, act in zip(self.convs[:-1], self.acts):
            y = act(conv(y))
        anchor = x if self.arch.colors == 1 else torch.cat([x] * (self.arch.scale ** 2), dim=1)
        y = _DepthToSpaceDCR.apply(self.convs[-1](y) + anchor, self.arch.scale)
        if self.clamp:
            y = torch.clamp(y, 0.0, self.arch.pixel_range)
        return y


def slopes_at_most_one(plain: PlainSR) -> PlainSR:
    """An equivalent network whose PReLU slopes are all <= 1 (a copy; the input is unchanged).

    For a > 1, prelu_a(y) = -a * prelu_{1/a}(-y): negate the channel in the conv before, use slope
    1/a, and fold the factor -a into the next conv's input column. Exact in float.
    """
    out = plain.with_layout(plain.layout, plain.clamp)
    with torch.no_grad():
        for i, act in enumerate(out.acts):
            slope = act.weight
            flip = slope > 1.0
            if not bool(flip.any()):
                continue
            conv, nxt = out.convs[i], out.convs[i + 1]
            conv.weight[flip] *= -1.0
            conv.bias[flip] *= -1.0
            nxt.weight[:, flip] *= -slope[flip].view(1, -1, 1, 1)
            slope[flip] = 1.0 / slope[flip]
    return out


@dataclass
class OnnxArtifact:
    path: Path
    simplified: bool
    ops: dict[str, int]
    input_shape: list  # NCHW; strings for dynamic axes
    output_shape: list
    activation_form: str
    notes: list[str] = field(default_factory=list)


def graph_ops(model: onnx.ModelProto) -> dict[str, int]:
    return dict(Counter(n.op_type for n in model.graph.node))


def check_op_set(ops: dict[str, int], colors: int) -> None:
    """Raise if the graph holds ops a mobile runtime would not run natively."""
    bad = sorted(set(ops) - ALLOWED_OPS)
    if bad:
        raise EcbDeployError(f"exported graph holds ops outside the deploy set: {', '.join(bad)}")
    if ops.get("Concat", 0) > (1 if colors == 3 else 0):
        raise EcbDeployError(f"exported graph holds {ops['Concat']} Concat ops")


def _shape(value_info) -> list:
    return [d.dim_param if d.dim_param else d.dim_value for d in value_info.type.tensor_type.shape.dim]


def export_onnx(plain: PlainSR, path: str | Path, *, input_hw: tuple[int, int] | None, opset: int = DEFAULT_OPSET,
                clamp: bool = True, activation_form: str = "native", metadata: dict | None = None,
                simplify: bool = True) -> OnnxArtifact:
    """Export, check, simplify (falling back to the checked graph) and write `path` atomically.

    input_hw=None makes height and width dynamic.
    """
    if plain.arch.act == "softplus":
        raise EcbDeployError("softplus has no native op in mobile runtimes; ecbdeploy exports prelu, relu, rrelu and linear")
    arch = plain.arch
    net = ExportNet(plain, clamp, activation_form).eval()
    h, w = input_hw or (32, 48)
    dummy = torch.rand(1, arch.colors, h, w) * arch.pixel_range
    dynamic_axes = None if input_hw else {INPUT_NAME: {2: "height", 3: "width"}, OUTPUT_NAME: {2: "out_height", 3: "out_width"}}
    notes = []
    with atomic_path(path) as tmp:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                torch.onnx.export(net, (dummy,), str(tmp), input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                                  opset_version=opset, dynamic_axes=dynamic_axes, dynamo=False)
            except Exception as e:  # the exporter raises many types; all mean "could not export"
                raise EcbDeployError(f"torch.onnx export failed: {str(e).splitlines()[0][:200]}") from None
        model = onnx.load(str(tmp))
        try:
            onnx.checker.check_model(model, full_check=True)
        except onnx.checker.ValidationError as e:
            raise EcbDeployError(f"exported ONNX graph failed onnx.checker: {str(e).splitlines()[0][:200]}") from None
        simplified = False
        if simplify:
            model, simplified, why = simplify_graph(model)
            if simplified:
                model = constants_to_initializers(model)
                onnx.checker.check_model(model, full_check=True)
            else:
                notes.append(f"onnxsim failed, kept the checked unsimplified graph: {why}")
        for key, value in {"arch": json.dumps(arch.to_dict()), "scale": str(arch.scale), "colors": str(arch.colors),
                           "pixel_range": f"{arch.pixel_range:g}", "layout": "NCHW", "depth_to_space": "DCR",
                           "clamped": str(clamp).lower(), "activation_form": activation_form,
                           **(metadata or {})}.items():
            entry = model.metadata_props.add()
            entry.key, entry.value = key, str(value)
        model.producer_name = "ecbdeploy"
        onnx.save(model, str(tmp))
    ops = graph_ops(model)
    if simplified:
        check_op_set(ops, arch.colors)
    return OnnxArtifact(Path(path), simplified, ops, _shape(model.graph.input[0]), _shape(model.graph.output[0]),
                        activation_form, notes)


def constants_to_initializers(model: onnx.ModelProto) -> onnx.ModelProto:
    """Move Constant nodes (the Clip bounds) into initializers so the graph holds compute ops only."""
    keep = []
    for node in model.graph.node:
        if node.op_type == "Constant" and len(node.attribute) == 1 and node.attribute[0].name == "value":
            tensor = onnx.TensorProto()
            tensor.CopyFrom(node.attribute[0].t)
            tensor.name = node.output[0]
            model.graph.initializer.append(tensor)
        else:
            keep.append(node)
    del model.graph.node[:]
    model.graph.node.extend(keep)
    return model


def simplify_graph(model: onnx.ModelProto) -> tuple[onnx.ModelProto, bool, str]:
    """(model, simplified?, reason). onnxsim's own check compares outputs on random input."""
    try:
        import onnxsim

        simplified, ok = onnxsim.simplify(model)
    except Exception as e:  # onnxsim raises anything from RuntimeError to its C++ errors
        return model, False, str(e).splitlines()[0][:200] if str(e) else type(e).__name__
    if not ok:
        return model, False, "onnxsim's output check failed"
    return simplified, True, ""
