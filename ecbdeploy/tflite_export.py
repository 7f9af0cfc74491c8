"""ONNX -> TFLite through onnx2tf (in a child process), then ecbdeploy's own checks and edits:

- pixel-unit I/O for integer models: the input/output quantisation is set to scale = range/255
  (zero point 0 for uint8, -128 for int8) exactly; the QUANTIZE ops at the graph's edges
  requantise to the calibrated internal ranges, so nothing else changes;
- the architecture is stored in the .tflite metadata, so a file explains itself;
- the op list is checked against what mobile delegates run natively.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import flatbuffers
import numpy as np

from .arch import ArchSpec
from .errors import EcbDeployError
from .fsutil import atomic_path

METADATA_NAME = "ecbdeploy"


@dataclass(frozen=True)
class TfliteTarget:
    """One TFLite precision: which onnx2tf file it is and what it is for."""

    key: str
    onnx2tf_suffix: str  # file onnx2tf writes: <stem><suffix>
    precision: str
    integer: bool  # needs calibration data
    description: str


# The one table of TFLite targets; CLI choices, conversion and the report all read it.
TFLITE_TARGETS = {
    "fp32": TfliteTarget("fp32", "_float32.tflite", "float32", False, "float32 weights and activations"),
    "fp16": TfliteTarget("fp16", "_float16.tflite", "float16", False, "float16 weights (DEQUANTIZE to float32 at load), float32 compute"),
    "dynamic": TfliteTarget("dynamic", "_dynamic_range_quant.tflite", "dynamic-int8", False, "int8 weights, float activations"),
    "int8": TfliteTarget("int8", "_full_integer_quant.tflite", "int8", True, "full integer: per-channel int8 weights, int8 activations"),
    "int16x8": TfliteTarget("int16x8", "_integer_quant_with_int16_act.tflite", "int16x8", True, "int8 weights, int16 activations, float I/O"),
}
# Float I/O variant of full-integer int8 (QUANTIZE/DEQUANTIZE only at the edges).
INT8_FLOAT_IO_SUFFIX = "_integer_quant.tflite"


def _schema():
    from ai_edge_litert import schema_py_generated as schema

    return schema


def read_model(path: str | Path):
    schema = _schema()
    buf = Path(path).read_bytes()
    return schema.ModelT.InitFromPackedBuf(buf, 0)


def write_model(model, path: str | Path) -> None:
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    with atomic_path(path) as tmp:
        tmp.write_bytes(bytes(builder.Output()))


def _op_names(model) -> list[str]:
    schema = _schema()
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    out = []
    for op in model.subgraphs[0].operators:
        code = model.operatorCodes[op.opcodeIndex]
        builtin = max(code.builtinCode, code.deprecatedBuiltinCode)
        out.append(names.get(builtin, f"CUSTOM:{code.customCode}"))
    return out


def op_counts(path) -> dict[str, int]:
    return dict(Counter(_op_names(read_model(path))))


def edge_only_quantize(path) -> bool:
    """True when every QUANTIZE/DEQUANTIZE touches a graph input or output (none between layers)."""
    model = read_model(path)
    graph = model.subgraphs[0]
    edges = set(graph.inputs) | set(graph.outputs)
    return all((set(op.inputs) | set(op.outputs)) & edges for name, op in zip(_op_names(model), graph.operators)
               if name in ("QUANTIZE", "DEQUANTIZE"))


def finalize(path, metadata: dict, pixel_io: tuple[float, str] | None = None) -> dict | None:
    """Name the I/O tensors `lr`/`sr`, store `metadata`, and for integer I/O set exact pixel units.

    pixel_io=(pixel_range, "uint8"|"int8"): input/output scale = range/255, zero point 0 (uint8) or
    -128 (int8). Only valid when the input feeds QUANTIZE ops and the output comes from one
    (onnx2tf's full-integer files): those requantise to the calibrated internal ranges.
    """
    schema = _schema()
    model = read_model(path)
    graph = model.subgraphs[0]
    graph.tensors[graph.inputs[0]].name = b"lr"
    graph.tensors[graph.outputs[0]].name = b"sr"
    pinned = None
    if pixel_io is not None:
        pixel_range, io_dtype = pixel_io
        names = _op_names(model)
        # onnx2tf is always asked for uint8 I/O, which puts requantising QUANTIZE ops at the edges;
        # int8 I/O is the same bytes shifted by 128, and QUANTIZE requantises int8 -> int8 as well.
        zero_point = 0 if io_dtype == "uint8" else -128
        tensor_type = schema.TensorType.UINT8 if io_dtype == "uint8" else schema.TensorType.INT8
        scale = float(np.float32(pixel_range / 255.0))
        for tensor_index, is_output in ((graph.inputs[0], False), (graph.outputs[0], True)):
            edge_ops = [n for n, op in zip(names, graph.operators)
                        if tensor_index in (op.outputs if is_output else op.inputs)]
            if not edge_ops or any(n != "QUANTIZE" for n in edge_ops):
                raise EcbDeployError(f"cannot set pixel-unit I/O in {Path(path).name}: edge ops are {edge_ops}")
            q = schema.QuantizationParametersT()
            q.scale, q.zeroPoint = [scale], [zero_point]
            graph.tensors[tensor_index].quantization = q
            graph.tensors[tensor_index].type = tensor_type
        pinned = {"scale": scale, "zero_point": zero_point}
    buffer = schema.BufferT()
    buffer.data = np.frombuffer(json.dumps(metadata, sort_keys=True).encode(), dtype=np.uint8)
    model.buffers.append(buffer)
    entry = schema.MetadataT()
    entry.name, entry.buffer = METADATA_NAME, len(model.buffers) - 1
    model.metadata = list(model.metadata or []) + [entry]
    write_model(model, path)
    return pinned


def read_metadata(path) -> dict | None:
    model = read_model(path)
    for entry in model.metadata or []:
        name = entry.name.decode() if isinstance(entry.name, bytes) else entry.name
        if name == METADATA_NAME:
            data = model.buffers[entry.buffer].data
            return json.loads(bytes(np.asarray(data, dtype=np.uint8)).decode())
    return None


def gpu_verdict(path) -> dict:
    """The LiteRT analyzer's GPU-delegate compatibility verdict."""
    import contextlib
    import io

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tensorflow as tf

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        tf.lite.experimental.Analyzer.analyze(model_path=str(path), gpu_compatibility=True)
    text = out.getvalue()
    ok = "looks compatible with GPU delegate" in text
    problems = [line.strip() for line in text.splitlines() if "GPU COMPATIBILITY WARNING" in line or "Not supported op" in line]
    return {"compatible": ok, "problems": problems[:10]}


def venv_env() -> dict:
    """Environment for tools from this Python's venv: its bin on PATH, quiet TensorFlow."""
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env["CUDA_VISIBLE_DEVICES"] = "-1"
    return env


def run_onnx2tf(onnx_path: Path, workdir: Path, *, sample_images: np.ndarray, calibration: np.ndarray | None,
                log_path: Path, dynamic_range: bool = False, verbose: bool = False, timeout: float = 3600) -> Path:
    """Convert in a child process; return the folder holding onnx2tf's .tflite files."""
    workdir, onnx_path = Path(workdir).resolve(), Path(onnx_path).resolve()  # the child runs in workdir
    workdir.mkdir(parents=True, exist_ok=True)
    samples_path = workdir / "sample_images.npy"
    np.save(samples_path, sample_images.astype(np.float32))
    calib_path = None
    if calibration is not None:
        calib_path = workdir / "calibration.npy"
        np.save(calib_path, calibration.astype(np.float32))
    out_folder = workdir / "onnx2tf"
    spec = {"onnx": str(onnx_path), "output_folder": str(out_folder), "sample_images": str(samples_path),
            "calibration": str(calib_path) if calib_path else None, "input_name": "lr",
            "io_dtype": "uint8", "dynamic_range": dynamic_range, "verbose": verbose}
    spec_path = workdir / "spec.json"
    spec_path.write_text(json.dumps(spec))
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "w") as log:
        try:
            proc = subprocess.run([sys.executable, "-m", "ecbdeploy.onnx2tf_worker", str(spec_path)], cwd=workdir,
                                  env=venv_env(), stdout=log, stderr=subprocess.STDOUT, timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            raise EcbDeployError(f"onnx2tf timed out after {timeout:.0f} s (log: {log_path})") from None
    if verbose:  # -v: show what onnx2tf and TensorFlow said (always kept in the log file)
        sys.stderr.write(log_path.read_text(errors="replace"))
    if proc.returncode != 0:
        tail = log_path.read_text(errors="replace").strip().splitlines()[-1:] or ["(no output)"]
        raise EcbDeployError(f"onnx2tf failed (exit {proc.returncode}): {tail[0][:200]} (full log: {log_path})")
    return out_folder


def collect(out_folder: Path, onnx_stem: str, target: TfliteTarget, io_dtype: str, dest: Path) -> Path:
    suffix = INT8_FLOAT_IO_SUFFIX if target.key == "int8" and io_dtype == "float32" else target.onnx2tf_suffix
    src = out_folder / f"{onnx_stem}{suffix}"
    if not src.is_file() or src.stat().st_size == 0:
        raise EcbDeployError(f"onnx2tf did not write {src.name}")
    with atomic_path(dest) as tmp:
        shutil.copyfile(src, tmp)
    return dest


def make_workdir(outdir: Path) -> Path:
    return Path(tempfile.mkdtemp(prefix=".work-", dir=outdir))


def arch_metadata(arch: ArchSpec, **extra) -> dict:
    return {"arch": arch.to_dict(), "layout": "NHWC", **extra}
