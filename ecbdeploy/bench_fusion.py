"""`ecbdeploy bench CKPT --compare-fusion`: the multi-branch network against the fused one, each
pair in the same runtime (PyTorch, ONNX Runtime, LiteRT): the speed-up re-parameterisation buys.

Both ONNX graphs are static-size, DCR depth-to-space, clamped, simplified alike; both TFLite files
are onnx2tf fp32 conversions of them. They live in a temporary folder removed afterwards.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from .api import fused_model
from .arch import ArchSpec
from .bench import DEFAULT_INPUT_HW, BenchSettings, run_bench
from .calibration import onnx2tf_sample_images
from .checkpoint import load_checkpoint
from .errors import EcbDeployError
from .onnx_export import export_onnx
from .tflite_export import TFLITE_TARGETS, arch_metadata, collect, finalize, op_counts, run_onnx2tf

COMPARE_FORMATS = ("onnx", "tflite")
RUNTIME_ORDER = ("pytorch", "onnxruntime", "litert")
FORMS = ("multibranch", "fused")


def parse_formats(text: str) -> tuple[str, ...]:
    formats = tuple(dict.fromkeys(f.strip().lower() for f in text.split(",") if f.strip()))
    unknown = [f for f in formats if f not in COMPARE_FORMATS]
    if unknown:
        raise EcbDeployError(f"unknown format(s) {', '.join(unknown)} for --compare-fusion; "
                             f"choose from {', '.join(COMPARE_FORMATS)} (PyTorch is always timed)")
    return formats


def _tflite_fp32(onnx_path: Path, arch: ArchSpec, form: str, workdir: Path) -> Path:
    """onnx2tf fp32 conversion of `onnx_path`, with ecbdeploy's metadata (arch, form)."""
    folder = workdir / f"onnx2tf_{form}"
    folder.mkdir()
    src = folder / onnx_path.name  # onnx2tf rewrites its input file, so it gets a copy
    shutil.copyfile(onnx_path, src)
    out = run_onnx2tf(src, folder, sample_images=onnx2tf_sample_images(), calibration=None,
                      log_path=folder / "onnx2tf.log")
    dest = workdir / f"{onnx_path.stem}_fp32.tflite"
    collect(out, src.stem, TFLITE_TARGETS["fp32"], "float32", dest)
    finalize(dest, arch_metadata(arch, target="fp32", form=form))
    return dest


def build_fusion_files(ckpt, hw: tuple[int, int], formats: tuple[str, ...], workdir: Path, load_flags: dict,
                       progress: Callable[[str], None]) -> tuple[list[Path], dict]:
    """(files to bench, graph sizes): the checkpoint itself, then a multi-branch and a fused file
    per requested format."""
    from .unfused_export import export_unfused_onnx

    if Path(ckpt).suffix.lower() in (".onnx", ".tflite"):
        raise EcbDeployError(f"--compare-fusion needs a training checkpoint, not {Path(ckpt).name}")
    loaded = load_checkpoint(ckpt, **load_flags)
    if loaded.is_fused:
        raise EcbDeployError(f"--compare-fusion needs a training (multi-branch) checkpoint; {ckpt} is already fused")
    plain, _ = fused_model(loaded)
    files, graphs = [Path(ckpt)], {}
    if not formats:
        return files, graphs
    stem = Path(ckpt).stem
    onnx_files = {form: workdir / f"{stem}_{form}.onnx" for form in FORMS}
    progress(f"exporting the multi-branch and the fused network to ONNX ({hw[0]}x{hw[1]})")
    multibranch_ops = export_unfused_onnx(loaded.model, onnx_files["multibranch"], input_hw=hw)
    fused_art = export_onnx(plain, onnx_files["fused"], input_hw=hw, metadata={"form": "fused"})
    graphs["onnx"] = {form: {"nodes": sum(ops.values()), "ops": ops}
                      for form, ops in (("multibranch", multibranch_ops), ("fused", fused_art.ops))}
    if "onnx" in formats:
        files += [onnx_files[form] for form in FORMS]
    if "tflite" in formats:
        graphs["tflite"] = {}
        for form in FORMS:
            progress(f"converting the {form} ONNX graph to TFLite fp32 with onnx2tf")
            path = _tflite_fp32(onnx_files[form], loaded.arch, form, workdir)
            ops = op_counts(path)
            graphs["tflite"][form] = {"nodes": sum(ops.values()), "ops": ops}
            files.append(path)
    return files, graphs


def fusion_speedups(rows: list[dict]) -> list[dict]:
    """Per runtime: multi-branch median / fused median (and both peak memories)."""
    by_runtime: dict[str, dict[str, dict]] = {}
    for row in rows:
        by_runtime.setdefault(row["runtime"], {})[row["form"]] = row
    out = []
    for runtime in RUNTIME_ORDER:
        pair = by_runtime.get(runtime, {})
        if not all(form in pair for form in FORMS):
            continue
        mb, fu = pair["multibranch"], pair["fused"]
        out.append({
            "runtime": runtime, "multibranch_median_ms": mb["median_ms"], "fused_median_ms": fu["median_ms"],
            "speedup": mb["median_ms"] / fu["median_ms"],
            "multibranch_model_peak_mb": (mb["memory"] or {}).get("model_peak_mb"),
            "fused_model_peak_mb": (fu["memory"] or {}).get("model_peak_mb"),
        })
    return out


def compare_fusion(ckpt, settings: BenchSettings, formats: tuple[str, ...] = COMPARE_FORMATS,
                   progress: Callable[[str], None] = lambda msg: None) -> dict:
    """Bench the multi-branch and fused forms of `ckpt` in every runtime; temp files are removed."""
    hw = settings.input_hw or DEFAULT_INPUT_HW
    with tempfile.TemporaryDirectory(prefix="ecbdeploy-bench-") as tmp:
        files, graphs = build_fusion_files(ckpt, hw, formats, Path(tmp), settings.load_flags or {}, progress)
        result = run_bench(files, settings, progress)
    for row in result["rows"]:
        if row["runtime"] != "pytorch":
            row["path"] = None  # a temporary file, gone now
    result["fusion_comparison"] = {"checkpoint": str(ckpt), "formats": ["pytorch", *formats], "graphs": graphs,
                                   "speedups": fusion_speedups(result["rows"])}
    return result
