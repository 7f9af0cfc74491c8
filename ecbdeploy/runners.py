"""One runner interface over PyTorch, ONNX Runtime and LiteRT.

A runner takes an NCHW float32 array in the model's pixel range and returns the NCHW float32
super-resolved array in the same range; layout (NHWC) and quantisation are handled inside.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .arch import ArchSpec
from .errors import EcbDeployError
from .fsutil import native_stderr_to


@dataclass
class Runner:
    name: str  # what runs: "pytorch-multibranch", "pytorch-fused", "onnxruntime", "litert"
    path: Path
    arch: ArchSpec | None
    static_hw: tuple[int, int] | None  # input size the model insists on, if any

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32)
        if x.ndim != 4:
            raise EcbDeployError(f"input must be NCHW (4-D); got shape {x.shape}")
        if self.arch is not None and x.shape[1] != self.arch.colors:
            raise EcbDeployError(f"input has {x.shape[1]} channel(s); the model expects {self.arch.colors}")
        if self.static_hw is not None and tuple(x.shape[2:]) != self.static_hw:
            raise EcbDeployError(
                f"input is {x.shape[2]}x{x.shape[3]}; this model was exported for {self.static_hw[0]}x{self.static_hw[1]}"
            )
        return np.concatenate([self._run(x[i: i + 1]) for i in range(x.shape[0])], axis=0)

    def _run(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError


class TorchRunner(Runner):
    def __init__(self, path, model: torch.nn.Module, arch: ArchSpec, name: str, threads: int | None = None):
        super().__init__(name, Path(path), arch, None)
        self.model = model.eval()
        if threads:
            torch.set_num_threads(threads)

    def _run(self, x):
        with torch.no_grad():
            return self.model(torch.from_numpy(x)).numpy()


class OnnxRunner(Runner):
    def __init__(self, path, threads: int | None = None):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        except Exception as e:  # ORT raises its own exception types for bad files
            raise EcbDeployError(f"ONNX Runtime cannot load {path}: {str(e).splitlines()[0][:200]}") from None
        meta = self.session.get_modelmeta().custom_metadata_map
        arch = ArchSpec.from_dict(json.loads(meta["arch"])) if "arch" in meta else None
        inp = self.session.get_inputs()[0]
        h, w = inp.shape[2], inp.shape[3]
        static = (h, w) if isinstance(h, int) and isinstance(w, int) else None
        super().__init__("onnxruntime", Path(path), arch, static)
        self.input_name = inp.name

    def _run(self, x):
        return self.session.run(None, {self.input_name: x})[0].astype(np.float32)


class TfliteRunner(Runner):
    """LiteRT interpreter (XNNPACK) with explicit threads; NHWC and (u)int8 I/O handled here."""

    def __init__(self, path, threads: int = 2, arch: ArchSpec | None = None):
        from ai_edge_litert.interpreter import Interpreter

        try:
            with native_stderr_to(os.devnull):  # LiteRT prints an INFO line per interpreter
                self.interpreter = Interpreter(model_path=str(path), num_threads=threads)
                self.interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as e:
            raise EcbDeployError(f"LiteRT cannot load {path}: {str(e).splitlines()[0][:200]}") from None
        self.inp = self.interpreter.get_input_details()[0]
        self.out = self.interpreter.get_output_details()[0]
        _, h, w, _ = self.inp["shape"]
        super().__init__("litert", Path(path), arch or arch_from_tflite(path) or arch_from_sidecar(path), (int(h), int(w)))

    def _run(self, x):
        nhwc = np.transpose(x, (0, 2, 3, 1))
        dtype = self.inp["dtype"]
        if dtype != np.float32:
            scale, zero = self.inp["quantization"]
            info = np.iinfo(dtype)
            nhwc = np.clip(np.rint(nhwc / scale + zero), info.min, info.max).astype(dtype)
        self.interpreter.set_tensor(self.inp["index"], nhwc)
        self.interpreter.invoke()
        y = self.interpreter.get_tensor(self.out["index"])
        if self.out["dtype"] != np.float32:
            scale, zero = self.out["quantization"]
            y = (y.astype(np.float32) - zero) * scale
        return np.transpose(y, (0, 3, 1, 2)).astype(np.float32)


def arch_from_tflite(path) -> ArchSpec | None:
    """The architecture ecbdeploy stored in the .tflite metadata, if any."""
    from .tflite_export import read_metadata

    try:
        meta = read_metadata(path)
    except Exception:  # a .tflite from elsewhere may not parse with our schema; fall back
        return None
    return ArchSpec.from_dict(meta["arch"]) if meta and "arch" in meta else None


def arch_from_sidecar(path) -> ArchSpec | None:
    """The architecture recorded for an exported file in its folder's report.json, if any."""
    report = Path(path).parent / "report.json"
    try:
        data = json.loads(report.read_text())
        return ArchSpec.from_dict(data["arch"])
    except (OSError, KeyError, ValueError, json.JSONDecodeError):
        return None


def open_runner(path, *, fused: bool = False, threads: int | None = None, **load_flags) -> Runner:
    """A runner for a checkpoint (.pth/.pt/.ckpt), an .onnx or a .tflite file."""
    path = Path(path)
    suffix = path.suffix.lower()
    if not path.exists():
        raise EcbDeployError(f"model not found: {path}")
    if suffix == ".onnx":
        return OnnxRunner(path, threads)
    if suffix == ".tflite":
        return TfliteRunner(path, threads or 2)
    from .api import fused_model
    from .checkpoint import load_checkpoint

    loaded = load_checkpoint(path, **load_flags)
    if loaded.is_fused:
        return TorchRunner(path, loaded.model, loaded.arch, "pytorch-fused", threads)
    if fused:
        plain, _ = fused_model(loaded)
        return TorchRunner(path, plain, loaded.arch, "pytorch-fused", threads)
    return TorchRunner(path, loaded.model, loaded.arch, "pytorch-multibranch", threads)
