"""`ecbdeploy export`: checkpoint -> fused -> ONNX -> TFLite, with parity checked at every stage.

The recipe is a list of small steps run in order; each step adds its figures to the report.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import calibration, int8_ranges, parity
from . import report as report_mod
from .api import fused_model
from .checkpoint import load_checkpoint
from .equalize import equalize
from .errors import EcbDeployError
from .fsutil import ensure_dir, native_stderr_to, sha256_file
from .onnx_export import DEFAULT_OPSET, ExportNet, export_onnx
from .runners import OnnxRunner, TfliteRunner, TorchRunner
from .tflite_export import (
    TFLITE_TARGETS,
    arch_metadata,
    collect,
    edge_only_quantize,
    finalize,
    gpu_verdict,
    make_workdir,
    op_counts,
    run_onnx2tf,
)

FORMATS = ("onnx",) + tuple(TFLITE_TARGETS)
DEFAULT_FORMATS = ("onnx", "fp32", "fp16", "int8")
# Output resolution the default input size aims at (a 1080p frame).
DEFAULT_OUTPUT_HW = (1080, 1920)

# Per stage: (metric, limit). max_abs_rel: max abs error vs the multi-branch model as a fraction of
# the pixel range (must be <= limit); min_psnr: PSNR between outputs in dB (must be >= limit).
DEFAULT_TOLERANCES = {
    "fusion": ("max_abs_rel", 1e-4),
    "onnx": ("max_abs_rel", 1e-4),
    "fp32": ("max_abs_rel", 1e-3),
    "fp16": ("max_abs_rel", 5e-3),
    "dynamic": ("min_psnr", 40.0),
    "int8": ("min_psnr", 38.0),
    "int16x8": ("min_psnr", 45.0),
}

# Allowed TFLite ops per precision (the clamp becomes MINIMUM + RELU or RELU_N1_TO_1-like ops).
FLOAT_OPS = {"CONV_2D", "PRELU", "RELU", "LEAKY_RELU", "ADD", "CONCATENATION", "DEPTH_TO_SPACE", "MINIMUM", "MAXIMUM",
             "MUL", "RELU6", "RELU_0_TO_1"}
FORBIDDEN_TFLITE_OPS = {"TRANSPOSE", "RESHAPE", "GATHER", "GATHER_ND", "STRIDED_SLICE", "PAD", "SHAPE"}


@dataclass
class ExportConfig:
    outdir: Path
    formats: tuple[str, ...] = DEFAULT_FORMATS
    input_hw: tuple[int, int] | None = None  # None: DEFAULT_OUTPUT_HW / scale
    dynamic: bool = False
    opset: int = DEFAULT_OPSET
    clamp: bool = True
    io_dtype: str = "uint8"
    name: str | None = None
    calib_dir: Path | None = None
    calib_count: int = calibration.DEFAULT_CALIB_COUNT
    tolerances: dict = field(default_factory=lambda: dict(DEFAULT_TOLERANCES))
    threads: int = 2
    int8_form: str = "auto"  # auto | native | addrelu
    int8_ranges: str = "minmax"  # minmax | percentile (measured by ecbdeploy) | converter
    speed_runs: int = 10
    verbose: bool = False
    load_flags: dict = field(default_factory=dict)


def _check(stage: str, figures: dict, tolerances: dict) -> tuple[bool, dict]:
    metric, limit = tolerances[stage]
    if metric == "max_abs_rel":
        value = figures["max_abs_error_relative"]
        ok = value <= limit
    else:
        value = figures["min_psnr_vs_reference"]
        ok = value >= limit
    return ok, {"metric": metric, "limit": limit, "value": value}


def default_input_hw(scale: int) -> tuple[int, int]:
    return DEFAULT_OUTPUT_HW[0] // scale, DEFAULT_OUTPUT_HW[1] // scale


def choose_int8_form(plain, requested: str) -> str:
    """int8 PRELU is not run by XNNPACK (3.5x slower than fp32); x + relu((a-1) x) is."""
    if requested != "auto":
        return requested
    return "addrelu" if plain.arch.act == "prelu" else "native"


def _io_figures(runner) -> tuple[dict, dict]:
    def describe(detail):
        scale, zero = detail["quantization"]
        return {"name": detail["name"], "shape": [int(v) for v in detail["shape"]], "dtype": np.dtype(detail["dtype"]).name,
                "layout": "NHWC", "quantization": {"scale": float(scale), "zero_point": int(zero)} if scale else None}
    return describe(runner.inp), describe(runner.out)


def _time_invoke(runners: dict, x: np.ndarray, runs: int) -> dict[str, list[float]]:
    """Latencies (ms) of the interpreter's invoke alone, runs interleaved so that background load
    hits every model alike."""
    for r in runners.values():
        r(x)  # warm-up; also leaves the input tensor set
    times = {k: [] for k in runners}
    for _ in range(runs):
        for k, r in runners.items():
            t = time.perf_counter()
            r.interpreter.invoke()
            times[k].append((time.perf_counter() - t) * 1e3)
    return times


def export(ckpt, config: ExportConfig, progress=lambda msg: None) -> dict:
    """Run the whole chain; return the report (also written to OUTDIR/report.json).

    The recipe: load -> fuse -> reference outputs -> ONNX -> TFLite -> report; each step adds
    its figures to the report.
    """
    unknown = set(config.formats) - set(FORMATS)
    if unknown:
        raise EcbDeployError(f"unknown format(s): {', '.join(sorted(unknown))}; choose from {', '.join(FORMATS)}")
    tflite_keys = [k for k in TFLITE_TARGETS if k in config.formats]
    if config.dynamic and tflite_keys:
        raise EcbDeployError("--dynamic applies to ONNX only; TFLite needs a static input size (use --formats onnx)")
    outdir = ensure_dir(config.outdir).resolve()
    started = time.time()

    progress("loading checkpoint")
    loaded = load_checkpoint(ckpt, **config.load_flags)
    name = config.name or Path(ckpt).stem
    hw = None if config.dynamic else (config.input_hw or default_input_hw(loaded.arch.scale))

    progress("fusing ECBs and verifying the fusion")
    plain, check = fused_model(loaded, config.tolerances["fusion"][1])
    rep = report_mod.new_report(name, ckpt, loaded, hw, config)
    rep["fusion"] = check.to_dict() if check else {"note": "checkpoint was already fused"}

    progress("computing reference outputs on real photographs")
    images, references = _reference_step(ckpt, loaded, plain, hw, config, outdir, rep)

    workdir = make_workdir(outdir)
    first_outputs: dict[str, np.ndarray] = {}  # each TFLite file's output on the first photo, for the picture
    try:
        onnx_art = _onnx_step(ckpt, plain, name, hw, config, outdir, workdir, images, references, rep, progress)
        if tflite_keys:
            _export_tflite(plain, onnx_art, tflite_keys, name, hw, config, outdir, workdir, images, references, rep,
                           progress, first_outputs)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    _conclude(rep, started)
    progress("writing report")
    report_mod.write_all(outdir, rep, images, first_outputs)
    return rep


def _reference_step(ckpt, loaded, plain, hw, config, outdir, rep):
    """Multi-branch outputs on the held-out photos (the reference of every stage), and the fused stage."""
    arch = loaded.arch
    images = parity.parity_images(arch, hw)
    reference_model = plain if loaded.is_fused else loaded.model
    reference_runner = TorchRunner(ckpt, reference_model, arch, "pytorch-fused" if loaded.is_fused else "pytorch-multibranch")
    references = parity.run_all(reference_runner, images)
    if config.clamp:
        references = [np.clip(r, 0.0, arch.pixel_range) for r in references]
    rep["bicubic"] = parity.bicubic_quality(images, arch)
    rep["reference"] = {"runner": reference_runner.name, "clamped": config.clamp, "images": [img.name for img in images],
                        "lr": "bicubic downscale rounded to 8-bit values (what a uint8 model takes)"}
    report_mod.save_reference(outdir, images, references, arch)
    fused_runner = TorchRunner(ckpt, plain.with_layout("crd", config.clamp), arch, "pytorch-fused")
    figures = parity.compare(parity.run_all(fused_runner, images), references, images, arch)
    ok, tol = _check("fusion", figures, config.tolerances)
    rep["stages"].append({"stage": "fused", "runner": "pytorch-fused", "parity": figures, "tolerance": tol, "passed": ok})
    return images, references


def _onnx_step(ckpt, plain, name, hw, config, outdir, workdir, images, references, rep, progress):
    """Export, check and simplify the ONNX graph; its ONNX Runtime parity. Kept in OUTDIR only if asked."""
    arch = plain.arch
    keep = "onnx" in config.formats
    progress(f"exporting ONNX (opset {config.opset}, {'dynamic' if hw is None else f'{hw[0]}x{hw[1]}'} input)")
    onnx_path = (outdir if keep else workdir) / f"{name}.onnx"
    art = export_onnx(plain, onnx_path, input_hw=hw, opset=config.opset, clamp=config.clamp,
                      metadata={"name": name, "source": Path(ckpt).name})
    for note in art.notes:
        progress(f"warning: {note}")
    figures = parity.compare(parity.run_all(OnnxRunner(onnx_path, config.threads), images), references, images, arch)
    ok, tol = _check("onnx", figures, config.tolerances)
    if keep:
        rep["artifacts"].append(report_mod.onnx_entry(art, outdir, figures, tol, ok, arch))
    rep["stages"].append({"stage": "onnx", "runner": "onnxruntime", "parity": figures, "tolerance": tol, "passed": ok,
                          "simplified": art.simplified, "ops": art.ops})
    return art


def _conclude(rep, started) -> None:
    """Order the entries, collect the failures and set the status."""
    order = ["fused", *FORMATS]
    rep["stages"].sort(key=lambda st: order.index(st["stage"]))
    rep["artifacts"].sort(key=lambda art: order.index(art["target"]))
    rep["wall_time_s"] = round(time.time() - started, 1)
    rep["failures"] = [f"{s['stage']}: {s['tolerance']['metric']} {s['tolerance']['value']:.4g} "
                       f"(limit {s['tolerance']['limit']:g})" for s in rep["stages"] if not s["passed"]]
    rep["failures"] += [f"{a['file']}: graph check: {'; '.join(a['graph_check']['problems'])}"
                        for a in rep["artifacts"] if not a["graph_check"]["passed"]]
    rep["status"] = "failed" if rep["failures"] else "passed"


def _export_tflite(plain, onnx_art, keys, name, hw, config, outdir, workdir, images, references, rep, progress,
                   first_outputs):
    arch = plain.arch
    needs_calib = any(TFLITE_TARGETS[k].integer for k in keys)
    calib = None
    if needs_calib:
        progress(f"preparing {config.calib_count} calibration samples "
                 f"({'from ' + str(config.calib_dir) if config.calib_dir else 'built-in photographs'})")
        calib = calibration.calibration_set(arch, hw, config.calib_dir, config.calib_count)
        rep["calibration"] = {"source": str(config.calib_dir) if config.calib_dir else "builtin:scikit-image",
                              "count": int(calib.shape[0]), "shape": list(calib.shape),
                              "value_range": [float(calib.min()), float(calib.max())]}
    samples = calibration.onnx2tf_sample_images()

    int8_form = choose_int8_form(plain, config.int8_form) if "int8" in keys else "native"
    int8_plain, int8_calib = plain, calib
    if "int8" in keys:
        # For int8 only (fp32/fp16/int16x8 convert the original): calibration that covers every uint8
        # input code, and a range-equalised copy of the network (same float output, fuller int8 channels).
        progress("equalising channel ranges for int8")
        if config.io_dtype != "float32":
            int8_calib = calibration.cover_pixel_range(calib, arch.pixel_range)
        equalised = equalize(plain, int8_calib)
        int8_plain = equalised.plain
        rep["int8_preparation"] = {"input_range_covers_pixel_range": config.io_dtype != "float32",
                                   "calibration_value_range": [float(int8_calib.min()), float(int8_calib.max())],
                                   "equalisation": equalised.to_dict()}
    # Which ONNX graph each target converts from; int8 always gets its own, from int8_plain.
    plan: dict[str, list[str]] = {}
    for k in keys:
        plan.setdefault("int8" if k == "int8" else "native", []).append(k)
    for group, form_keys in plan.items():
        form = int8_form if group == "int8" else "native"
        label = form if group == "native" else f"int8_{form}"
        # onnx2tf rewrites its input file (op names), so it always gets its own copy.
        src = workdir / f"{name}_{label}.onnx"
        if group == "native":
            shutil.copyfile(onnx_art.path, src)
        else:
            export_onnx(int8_plain, src, input_hw=hw, opset=config.opset, clamp=config.clamp, activation_form=form)
        integer = any(TFLITE_TARGETS[k].integer for k in form_keys)
        progress(f"converting with onnx2tf ({', '.join(form_keys)}; activation form '{form}')")
        group_calib = int8_calib if group == "int8" else calib
        out_folder = run_onnx2tf(src, workdir / label, sample_images=samples, calibration=group_calib if integer else None,
                                 log_path=outdir / "logs" / f"onnx2tf_{label}.log", dynamic_range="dynamic" in form_keys,
                                 verbose=config.verbose)
        for k in form_keys:
            target = TFLITE_TARGETS[k]
            dest = outdir / f"{name}_{k}.tflite"
            collect(out_folder, src.stem, target, config.io_dtype, dest)
            integer_io = k == "int8" and config.io_dtype != "float32"
            io_pin = finalize(dest, arch_metadata(arch, name=name, target=k, activation_form=form, clamped=config.clamp,
                                                  io_dtype=config.io_dtype if k == "int8" else "float32"),
                              pixel_io=(arch.pixel_range, config.io_dtype) if integer_io else None)
            if k == "int8":
                _set_int8_ranges(dest, int8_plain, form, int8_calib, config, rep, progress)
            progress(f"checking {dest.name}")
            with native_stderr_to(outdir / "logs" / "litert.log"):
                entry, first_outputs[k] = _tflite_entry(dest, k, form, io_pin, arch, images, references, config)
            rep["artifacts"].append(entry)
            rep["stages"].append({"stage": k, "runner": "litert", **{f: rep["artifacts"][-1][f]
                                                                      for f in ("parity", "tolerance", "passed")}})
    if "fp32" in keys and "int8" in keys:
        progress("timing fp32 vs int8 on this machine (LiteRT, XNNPACK)")
        runners = {k: TfliteRunner(outdir / f"{name}_{k}.tflite", config.threads, arch) for k in ("fp32", "int8")}
        x = images[0].lr
        with native_stderr_to(outdir / "logs" / "litert.log"):
            times = _time_invoke(runners, x, config.speed_runs)
        median = {k: float(np.median(v)) for k, v in times.items()}
        best = {k: float(np.min(v)) for k, v in times.items()}
        # The ratio uses the best run of each: background load only ever adds time.
        rep["speed"] = {"runtime": "litert-xnnpack", "threads": config.threads, "input_size": list(hw),
                        "runs": config.speed_runs, "median_ms": median, "min_ms": best,
                        "int8_speedup_vs_fp32": best["fp32"] / best["int8"], "int8_activation_form": int8_form}


def _set_int8_ranges(path, int8_plain, form, int8_calib, config, rep, progress) -> None:
    """Replace the converter's activation ranges with ecbdeploy's own (see int8_ranges)."""
    prep = rep.setdefault("int8_preparation", {})
    if config.int8_ranges == "converter":
        prep["activation_ranges"] = {"source": "converter (onnx2tf / TFLite calibration min-max)"}
        return
    progress(f"measuring int8 activation ranges ({config.int8_ranges})")
    net = ExportNet(int8_plain, config.clamp, form).eval()
    ranges = int8_ranges.measure(net, int8_calib, config.int8_ranges)
    changes = int8_ranges.apply(path, ranges) if ranges is not None else None
    if changes is None:
        prep["activation_ranges"] = {"source": "converter (graph layout not recognised; ranges kept)"}
        return
    prep["activation_ranges"] = {"source": f"ecbdeploy ({config.int8_ranges})", "tensors": changes}


def _graph_check(path, key: str, colors: int) -> dict:
    ops = op_counts(path)
    problems = []
    forbidden = sorted(set(ops) & FORBIDDEN_TFLITE_OPS)
    if forbidden:
        problems.append(f"forbidden ops {forbidden}")
    allowed = set(FLOAT_OPS)
    if key in ("fp16",):
        allowed.add("DEQUANTIZE")
    if TFLITE_TARGETS[key].integer or key == "dynamic":
        allowed |= {"QUANTIZE", "DEQUANTIZE"}
    extra = sorted(set(ops) - allowed)
    if extra:
        problems.append(f"unexpected ops {extra}")
    if ops.get("CONCATENATION", 0) > (1 if colors == 3 else 0):
        problems.append(f"{ops['CONCATENATION']} CONCATENATION ops")
    if ops.get("DEPTH_TO_SPACE", 0) != 1:
        problems.append("no single DEPTH_TO_SPACE op")
    # int16x8 is TFLite's mixed mode: ops without int16 kernels (PRELU, DEPTH_TO_SPACE) fall back to float.
    if key == "int8" and not edge_only_quantize(path):
        problems.append("QUANTIZE/DEQUANTIZE between layers")
    return {"passed": not problems, "problems": problems}, ops


def _tflite_entry(path, key, form, io_pin, arch, images, references, config) -> tuple[dict, np.ndarray]:
    """The report entry of one .tflite file, and its output on the first photo."""
    runner = TfliteRunner(path, config.threads, arch)
    outputs = parity.run_all(runner, images)
    figures = parity.compare(outputs, references, images, arch)
    ok, tol = _check(key, figures, config.tolerances)
    graph, ops = _graph_check(path, key, arch.colors)
    inp, out = _io_figures(runner)
    for d in (inp, out):
        d["pixel_range"] = arch.pixel_range
    target = TFLITE_TARGETS[key]
    return {
        "file": path.name, "format": "tflite", "target": key, "precision": target.precision,
        "description": target.description, "sha256": sha256_file(path), "size_bytes": path.stat().st_size,
        "activation_form": form, "input": inp, "output": out, "pixel_io": io_pin, "ops": ops, "graph_check": graph,
        "gpu": gpu_verdict(path), "parity": figures, "tolerance": tol, "passed": ok,
    }, outputs[0]


def load_report(outdir) -> dict:
    path = Path(outdir) / "report.json"
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise EcbDeployError(f"no report.json in {outdir}: is it an ecbdeploy export folder?") from None
    except json.JSONDecodeError as e:
        raise EcbDeployError(f"{path} is not valid JSON: {e}") from None
