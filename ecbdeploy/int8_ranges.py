"""Activation ranges of the int8 .tflite measured by ecbdeploy and written over the converter's.

The TFLite converter (through onnx2tf) gives every int8 activation tensor the min/max it saw
during calibration, with two losses for ECBSR measured on the bundled x2 model:
- a ReLU fused into MUL keeps a negative range it can never produce (a quarter of its levels);
- the last conv's output (the residual, about +-100) shares the range of the sum it feeds
  (0-265), so the detail the network adds gets a step twice as coarse as it needs.
Here the float network that was converted is run on the same calibration samples, each tensor
gets its own range (min/max by default; or the 0.01 / 99.99 percentiles of each sample, widened
over all samples, which trades rare clipped pixels for finer steps) and the .tflite is edited:
tensor scale and zero point, and the int32 biases of every conv that reads a changed tensor
(their scale is input scale x weight scale). The sum before depth-to-space keeps its range: the
clamp pins it to the pixel range, one int8 step per pixel level.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .onnx_export import ExportNet, _PReLUAsAddRelu
from .tflite_export import _op_names, _schema, read_model, write_model

ESTIMATORS = ("minmax", "percentile")
LOW_PERCENTILE, HIGH_PERCENTILE = 0.01, 99.99
# Percentiles are taken on an evenly strided subset of each sample's values (cost, not accuracy).
MAX_VALUES_PER_SAMPLE = 2_000_000


@dataclass
class TensorRange:
    """One int8 activation tensor, in the order the TFLite graph computes them."""

    role: str  # conv, mul_relu, add, prelu, conv_relu, residual
    layer: int
    op: str  # the TFLite op that writes it
    lo: float
    hi: float
    nonnegative: bool


def _layer_tensors(act: nn.Module, c: torch.Tensor) -> list[tuple[str, str, torch.Tensor, bool]] | None:
    """(role, TFLite op, float tensor, nonnegative) for one inner layer whose conv gave `c`."""
    if isinstance(act, _PReLUAsAddRelu):
        r = torch.relu(c * act.slope_minus_one)
        return [("conv", "CONV_2D", c, False), ("mul_relu", "MUL", r, True), ("add", "ADD", c + r, False)]
    if isinstance(act, nn.PReLU):
        return [("conv", "CONV_2D", c, False), ("prelu", "PRELU", act(c), False)]
    if isinstance(act, nn.ReLU):  # the converter fuses it into the conv
        return [("conv_relu", "CONV_2D", torch.relu(c), True)]
    if isinstance(act, nn.Identity):
        return [("conv", "CONV_2D", c, False)]
    return None


def _trace(net: ExportNet, x: torch.Tensor) -> list[tuple[str, int, str, torch.Tensor, bool]] | None:
    out, y = [], x
    for i, (conv, act) in enumerate(zip(net.convs[:-1], net.acts)):
        tensors = _layer_tensors(act, conv(y))
        if tensors is None:
            return None
        out += [(role, i, op, t, nonneg) for role, op, t, nonneg in tensors]
        y = tensors[-1][2]
    out.append(("residual", len(net.convs) - 1, "CONV_2D", net.convs[-1](y), False))
    return out


def _sample_bounds(t: torch.Tensor, estimator: str) -> tuple[float, float]:
    if estimator == "minmax":
        return float(t.min()), float(t.max())
    values = t.detach().reshape(-1).numpy()
    stride = max(1, values.size // MAX_VALUES_PER_SAMPLE)
    lo, hi = np.percentile(values[::stride], [LOW_PERCENTILE, HIGH_PERCENTILE])
    return float(lo), float(hi)


def measure(net: ExportNet, samples: np.ndarray, estimator: str = "minmax") -> list[TensorRange] | None:
    """Ranges of every int8 activation tensor of `net` (the exact network handed to the converter).

    samples: NHWC calibration data in the model's pixel range. None when an activation has no
    known TFLite layout (then the converter's ranges are kept).
    """
    if estimator not in ESTIMATORS:
        raise ValueError(f"unknown range estimator {estimator!r}")
    x = torch.from_numpy(np.ascontiguousarray(np.asarray(samples, np.float32).transpose(0, 3, 1, 2)))
    net.eval()
    ranges: list[TensorRange] | None = None
    with torch.no_grad():
        for i in range(x.shape[0]):
            trace = _trace(net, x[i:i + 1])
            if trace is None:
                return None
            bounds = [_sample_bounds(t, estimator) for _, _, _, t, _ in trace]
            if ranges is None:
                ranges = [TensorRange(role, layer, op, lo, hi, nonneg)
                          for (role, layer, op, _, nonneg), (lo, hi) in zip(trace, bounds)]
            else:
                for r, (lo, hi) in zip(ranges, bounds):
                    r.lo, r.hi = min(r.lo, lo), max(r.hi, hi)
    return ranges


def int8_params(lo: float, hi: float, nonnegative: bool) -> tuple[float, int]:
    """(scale, zero point) of an asymmetric int8 tensor covering [lo, hi] (and 0, as TFLite needs)."""
    lo = 0.0 if nonnegative else min(lo, 0.0)
    hi = max(hi, lo + 1e-6, 0.0)
    scale = float(np.float32((hi - lo) / 255.0))
    zero_point = int(np.clip(np.round(-128 - lo / scale), -128, 127))
    return scale, zero_point


def _producers(model, names: list[str]) -> list[tuple[str, object]]:
    wanted = {"CONV_2D", "MUL", "ADD", "PRELU"}
    return [(n, op) for n, op in zip(names, model.subgraphs[0].operators) if n in wanted]


def apply(path, ranges: list[TensorRange]) -> list[dict] | None:
    """Write `ranges` into the int8 .tflite at `path`; None (file untouched) when the graph's
    producer ops do not match the float network's, op for op."""
    schema = _schema()
    model = read_model(path)
    graph = model.subgraphs[0]
    names = _op_names(model)
    producers = _producers(model, names)
    # The graph ends with the sum (ADD of residual and anchor), which keeps its range.
    if len(producers) != len(ranges) + 1 or any(n != r.op for (n, _), r in zip(producers, ranges)):
        return None
    changes = []
    for (_, op), r in zip(producers, ranges):
        t_index = op.outputs[0]
        tensor = graph.tensors[t_index]
        q = tensor.quantization
        if tensor.type != schema.TensorType.INT8 or q is None or q.scale is None or len(q.scale) != 1:
            return None
        old_scale, old_zp = float(q.scale[0]), int(q.zeroPoint[0])
        scale, zero_point = int8_params(r.lo, r.hi, r.nonnegative)
        new_q = schema.QuantizationParametersT()
        new_q.scale, new_q.zeroPoint = [scale], [zero_point]
        tensor.quantization = new_q
        for n, consumer in zip(names, graph.operators):
            if n == "CONV_2D" and consumer.inputs[0] == t_index:
                _requantize_bias(model, consumer, old_scale, scale)
        changes.append({"role": r.role, "layer": r.layer, "op": r.op,
                        "converter_range": [round((-128 - old_zp) * old_scale, 3), round((127 - old_zp) * old_scale, 3)],
                        "range": [round((-128 - zero_point) * scale, 3), round((127 - zero_point) * scale, 3)]})
    write_model(model, path)
    return changes


def _requantize_bias(model, conv, old_input_scale: float, new_input_scale: float) -> None:
    """A conv's int32 bias is in units of input scale x weight scale; keep its float value."""
    bias = model.subgraphs[0].tensors[conv.inputs[2]]
    buffer = model.buffers[bias.buffer]
    values = np.frombuffer(bytes(bytearray(buffer.data)), dtype=np.int32).astype(np.float64)
    ratio = old_input_scale / new_input_scale
    buffer.data = np.clip(np.round(values * ratio), -2**31, 2**31 - 1).astype(np.int32).view(np.uint8)
    bias.quantization.scale = [float(np.float32(s / ratio)) for s in bias.quantization.scale]
