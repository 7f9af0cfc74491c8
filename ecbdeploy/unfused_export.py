"""The multi-branch (training-form) ECBSR as an ONNX graph, to time it against the fused network.

The training code pads each 1x1 output with its bias by slice assignment, which torch.onnx writes
as ~10,000 nodes (ScatterND, Shape, Where, ...) that converters choke on. Here every branch keeps
its own convs, but the bias border comes from a bias-free 1x1 conv, a zero Pad and an Add of the
bias: the same values, written as four ops per branch. The tail uses the same DCR depth-to-space
(and optional clamp) as the fused export, so a comparison measures the branches and nothing else.
"""

from __future__ import annotations

import copy
import json
import warnings
from pathlib import Path

import onnx
import torch
import torch.nn.functional as F
from torch import nn

from .deploy_model import dcr_permutation
from .errors import EcbDeployError
from .fsutil import atomic_path
from .onnx_export import (
    DEFAULT_OPSET,
    INPUT_NAME,
    OUTPUT_NAME,
    _DepthToSpaceDCR,
    constants_to_initializers,
    graph_ops,
    simplify_graph,
)
from .train_model import ECB, ECBSR


def bias_padded_1x1(x: torch.Tensor, k0: torch.Tensor, b0: torch.Tensor) -> torch.Tensor:
    """conv1x1(x, k0) + b0, padded by one pixel filled with b0 (the training code's border)."""
    return F.pad(F.conv2d(x, k0), (1, 1, 1, 1)) + b0.view(1, -1, 1, 1)


class ExportableECB(nn.Module):
    """One ECB with all its branches, optionally with its output channels reordered."""

    def __init__(self, ecb: ECB, out_order: torch.Tensor | None = None):
        super().__init__()

        def take(t: torch.Tensor) -> torch.Tensor:
            t = t.detach().clone()
            return t if out_order is None else t[out_order]

        self.register_buffer("w3", take(ecb.conv3x3.weight))
        self.register_buffer("b3", take(ecb.conv3x3.bias))
        expand = ecb.conv1x1_3x3
        self.register_buffer("k0", expand.k0.detach().clone())  # mid channels: not reordered
        self.register_buffer("b0", expand.b0.detach().clone())
        self.register_buffer("k1", take(expand.k1))
        self.register_buffer("b1", take(expand.b1))
        self.edges = nn.ModuleList()
        for edge in (ecb.conv1x1_sbx, ecb.conv1x1_sby, ecb.conv1x1_lpl):
            m = nn.Module()
            m.register_buffer("k0", take(edge.k0))
            m.register_buffer("b0", take(edge.b0))
            m.register_buffer("depthwise", take(edge.scale * edge.mask))  # what the training forward computes
            m.register_buffer("bias", take(edge.bias))
            self.edges.append(m)
        self.with_idt = ecb.with_idt
        self.register_buffer("idt_order", out_order if (ecb.with_idt and out_order is not None) else None)
        self.act = copy.deepcopy(ecb.act) if hasattr(ecb, "act") else nn.Identity()

    def forward(self, x):
        y = F.conv2d(x, self.w3, self.b3, padding=1)
        branches = F.conv2d(bias_padded_1x1(x, self.k0, self.b0), self.k1, self.b1)
        for e in self.edges:
            mid = bias_padded_1x1(x, e.k0, e.b0)
            branches = branches + F.conv2d(mid, e.depthwise, e.bias, groups=e.depthwise.shape[0])
        y = y + branches
        if self.with_idt:
            y = y + (x if self.idt_order is None else x.index_select(1, self.idt_order))
        return self.act(y)


class UnfusedExportNet(nn.Module):
    """The training-form ECBSR written with exportable ops; DCR depth-to-space like ExportNet."""

    def __init__(self, model: ECBSR, clamp: bool = True):
        super().__init__()
        self.arch, self.clamp = model.arch, clamp
        blocks = list(model.backbone)
        # DCR reads the tail's output channels in another order; for one colour it is the same order.
        perm = dcr_permutation(self.arch.colors, self.arch.scale)
        tail_order = None if bool((perm == torch.arange(len(perm))).all()) else perm
        self.blocks = nn.ModuleList([ExportableECB(b) for b in blocks[:-1]] + [ExportableECB(blocks[-1], tail_order)])
        self.eval()

    def forward(self, x):
        y = x
        for block in self.blocks:
            y = block(y)
        anchor = x if self.arch.colors == 1 else torch.cat([x] * (self.arch.scale ** 2), dim=1)
        y = _DepthToSpaceDCR.apply(y + anchor, self.arch.scale)
        if self.clamp:
            y = torch.clamp(y, 0.0, self.arch.pixel_range)
        return y


def export_unfused_onnx(model: ECBSR, path: str | Path, *, input_hw: tuple[int, int], opset: int = DEFAULT_OPSET,
                        clamp: bool = True, simplify: bool = True) -> dict[str, int]:
    """Write the multi-branch network as a static-size ONNX graph (input `lr`, output `sr`);
    return its op counts. The architecture goes into metadata_props like the fused export."""
    if not isinstance(model, ECBSR):
        raise EcbDeployError("the multi-branch export needs a training checkpoint, not a fused one")
    arch = model.arch
    net = UnfusedExportNet(model.eval(), clamp)
    dummy = torch.rand(1, arch.colors, *input_hw) * arch.pixel_range
    with atomic_path(path) as tmp:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                torch.onnx.export(net, (dummy,), str(tmp), input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                                  opset_version=opset, dynamo=False)
            except Exception as e:  # noqa: BLE001  (the exporter raises many types; all mean "could not export")
                raise EcbDeployError(f"torch.onnx export of the multi-branch network failed: "
                                     f"{str(e).splitlines()[0][:200]}") from None
        graph = onnx.load(str(tmp))
        if simplify:  # the same treatment as the fused graph, so neither side is favoured
            graph, simplified, _ = simplify_graph(graph)
            if simplified:
                graph = constants_to_initializers(graph)
        onnx.checker.check_model(graph, full_check=True)
        for key, value in {"arch": json.dumps(arch.to_dict()), "form": "multibranch", "depth_to_space": "DCR",
                           "clamped": str(clamp).lower()}.items():
            entry = graph.metadata_props.add()
            entry.key, entry.value = key, value
        graph.producer_name = "ecbdeploy"
        onnx.save(graph, str(tmp))
    return graph_ops(graph)
