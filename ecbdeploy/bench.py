"""`ecbdeploy bench`: time models on this machine, on the same photograph, and summarise.

Every model is opened in this process and the timed runs are interleaved: round r runs each
model once, starting at a different model each round, so a burst of load from other processes
hits all models alike. A time is one runner call (input NCHW float32 in, output NCHW out, so
LiteRT's NHWC conversion is included). Peak memory is measured apart, one fresh child process
per model (see bench_memory), after the timing, so it cannot disturb it.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import EcbDeployError
from .fsutil import write_text_atomic
from .runners import OnnxRunner, Runner, TfliteRunner, TorchRunner

SCHEMA_VERSION = 1
DEFAULT_INPUT_HW = (540, 960)
BENCH_PHOTO = "astronaut"
# What the input is for a model whose file does not say (a .tflite/.onnx from elsewhere).
FALLBACK_SCALE, FALLBACK_PIXEL_RANGE = 2, 255.0
MEMORY_METHOD = ("peak resident memory of a fresh child process running the model (load + 2 runs), minus its "
                 "resident size after importing the runtime (Linux: VmHWM reset after imports)")


@dataclass
class Subject:
    """One row of the table: a file run by one runtime, in multi-branch or fused form."""

    file: Path
    runtime: str  # pytorch | onnxruntime | litert
    form: str  # multibranch | fused | unknown
    runner: Runner

    @property
    def label(self) -> str:
        return f"{self.file.name} [{self.runtime}, {self.form}]"


@dataclass(frozen=True)
class BenchSettings:
    threads: int = 2
    runs: int = 20
    warmup: int = 3
    input_hw: tuple[int, int] | None = None  # for dynamic models and checkpoints
    memory: bool = True
    load_flags: dict | None = None


def _file_form(runner: Runner) -> str:
    """multibranch/fused as recorded by ecbdeploy in the file; an ecbdeploy export is fused."""
    meta: dict = {}
    if isinstance(runner, OnnxRunner):
        meta = dict(runner.session.get_modelmeta().custom_metadata_map)
    elif isinstance(runner, TfliteRunner):
        from .tflite_export import read_metadata

        try:
            meta = read_metadata(runner.path) or {}
        except Exception:  # noqa: BLE001  (a .tflite from elsewhere may not parse with our schema)
            meta = {}
    if "form" in meta:
        return str(meta["form"])
    return "fused" if runner.arch is not None else "unknown"


def open_subjects(paths, threads: int, load_flags: dict | None = None) -> list[Subject]:
    """Runners for every file; a training checkpoint gives two (multi-branch and fused)."""
    from .api import fused_model
    from .checkpoint import load_checkpoint

    subjects = []
    for path in map(Path, paths):
        if not path.exists():
            raise EcbDeployError(f"model not found: {path}")
        suffix = path.suffix.lower()
        if suffix == ".onnx":
            runner = OnnxRunner(path, threads)
            subjects.append(Subject(path, "onnxruntime", _file_form(runner), runner))
        elif suffix == ".tflite":
            runner = TfliteRunner(path, threads)
            subjects.append(Subject(path, "litert", _file_form(runner), runner))
        else:
            loaded = load_checkpoint(path, **(load_flags or {}))
            if not loaded.is_fused:
                subjects.append(Subject(path, "pytorch", "multibranch",
                                        TorchRunner(path, loaded.model, loaded.arch, "pytorch-multibranch", threads)))
            plain, _ = fused_model(loaded)
            subjects.append(Subject(path, "pytorch", "fused", TorchRunner(path, plain, loaded.arch, "pytorch-fused", threads)))
    return subjects


def resolve_input_hw(subjects: list[Subject], requested: tuple[int, int] | None) -> tuple[int, int]:
    """Static-shape models dictate the size; they must agree with each other and with `requested`."""
    static = [(s, s.runner.static_hw) for s in subjects if s.runner.static_hw is not None]
    sizes = {hw for _, hw in static}
    if len(sizes) > 1:
        listed = ", ".join(f"{s.file.name} {hw[0]}x{hw[1]}" for s, hw in static)
        raise EcbDeployError(f"the models were exported for different input sizes ({listed}); bench them in separate calls")
    if static:
        first, hw = static[0]
        if requested is not None and requested != hw:
            raise EcbDeployError(f"--input-size {requested[0]}x{requested[1]} disagrees with {first.file.name}, "
                                 f"which was exported for {hw[0]}x{hw[1]} (a static model dictates the size)")
        return hw
    return requested or DEFAULT_INPUT_HW


def photo_crop(colors: int, scale: int, pixel_range: float, hw: tuple[int, int], name: str = BENCH_PHOTO) -> np.ndarray:
    """1xCxHxW bicubic LR of a real photograph, mirror-extended or centre-cropped to exactly hw."""
    from .images import lr_hr_pair, photo

    lr, _ = lr_hr_pair(photo(name), scale, colors, pixel_range)
    h, w = lr.shape[1:]
    th, tw = hw
    pad_h, pad_w = max(0, th - h), max(0, tw - w)
    # Mirroring keeps photographic statistics (no flat padding the runtimes could race through).
    lr = np.pad(lr, ((0, 0), (pad_h // 2, pad_h - pad_h // 2), (pad_w // 2, pad_w - pad_w // 2)), mode="symmetric")
    top, left = (lr.shape[1] - th) // 2, (lr.shape[2] - tw) // 2
    return np.ascontiguousarray(lr[None, :, top: top + th, left: left + tw], dtype=np.float32)


def _input_channels(runner: Runner) -> int:
    if runner.arch is not None:
        return runner.arch.colors
    if isinstance(runner, TfliteRunner):
        return int(runner.inp["shape"][3])
    if isinstance(runner, OnnxRunner):
        return int(runner.session.get_inputs()[0].shape[1])
    raise EcbDeployError(f"cannot tell how many colour channels {runner.path.name} expects")


def bench_inputs(subjects: list[Subject], hw: tuple[int, int]) -> list[np.ndarray]:
    """The same photo crop for every model, in each model's colours and pixel range."""
    cache: dict[tuple, np.ndarray] = {}
    out = []
    for s in subjects:
        arch = s.runner.arch
        key = (_input_channels(s.runner), arch.scale if arch else FALLBACK_SCALE,
               arch.pixel_range if arch else FALLBACK_PIXEL_RANGE)
        if key not in cache:
            cache[key] = photo_crop(*key, hw)
        out.append(cache[key])
    return out


def time_interleaved(subjects: list[Subject], inputs: list[np.ndarray], runs: int, warmup: int,
                     progress: Callable[[str], None] = lambda msg: None) -> tuple[list[list[float]], list[tuple]]:
    """(seconds per run, output shape) for every subject; runs interleaved, rotating who goes first."""
    shapes: list[tuple] = [()] * len(subjects)
    for k, (s, x) in enumerate(zip(subjects, inputs)):
        progress(f"warming up {s.label} ({warmup} run{'s' * (warmup != 1)})")
        for _ in range(warmup):
            shapes[k] = s.runner(x).shape
    times: list[list[float]] = [[] for _ in subjects]
    n = len(subjects)
    every = max(1, runs // 10)
    for r in range(runs):
        for k in [(r + i) % n for i in range(n)]:
            start = time.perf_counter()
            y = subjects[k].runner(inputs[k])
            times[k].append(time.perf_counter() - start)
            shapes[k] = y.shape
        if (r + 1) % every == 0 or r + 1 == runs:
            progress(f"timed round {r + 1}/{runs}")
    return times, shapes


def row_figures(subject: Subject, hw: tuple[int, int], seconds: list[float], out_shape: tuple, threads: int) -> dict:
    """Latency statistics and throughput of one subject. GFLOP/s counts the fused network's
    work (2 x MACs per LR pixel x H x W) for every form, so a multi-branch row shows the useful rate."""
    ms = np.asarray(seconds) * 1e3
    median = float(np.median(ms))
    arch = subject.runner.arch
    macs = arch.macs_per_lr_pixel() if arch else None
    out_pixels = int(out_shape[2] * out_shape[3])
    return {
        "file": subject.file.name, "path": str(subject.file), "runtime": subject.runtime, "form": subject.form,
        "runner": subject.runner.name, "arch": arch.to_dict() if arch else None, "threads": threads,
        "input_size": list(hw), "output_size": [int(out_shape[2]), int(out_shape[3])], "runs": len(seconds),
        "times_ms": [round(float(t), 4) for t in ms],
        "median_ms": median, "p90_ms": float(np.percentile(ms, 90)), "min_ms": float(ms.min()),
        "mean_ms": float(ms.mean()), "std_ms": float(ms.std()),
        "output_mpix_per_s": out_pixels / (median / 1e3) / 1e6,
        "macs_per_lr_pixel": macs,
        "gflop_per_s": 2.0 * macs * hw[0] * hw[1] / (median / 1e3) / 1e9 if macs else None,
        "memory": None,
    }


def machine_facts() -> dict:
    from .report import tool_versions

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith(("model name", "hardware")):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        import psutil

        physical = psutil.cpu_count(logical=False)
    except ImportError:
        physical = None
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"cpu_model": cpu, "logical_cores": os.cpu_count(), "physical_cores": physical, "usable_cores": usable,
            "load_average": [round(v, 2) for v in os.getloadavg()] if hasattr(os, "getloadavg") else None,
            "platform": platform.platform(), "python": platform.python_version(), "tools": tool_versions()}


def busy_warning(facts: dict, threads: int) -> str | None:
    """A warning when other processes already keep the CPU busy (the 1-minute load average)."""
    load, cores = (facts["load_average"] or [0.0])[0], facts["usable_cores"] or 1
    if load + threads <= cores + 0.5:
        return None
    return (f"load average {load:.1f} on {cores} usable core(s): other processes compete for the CPU, so "
            f"figures are noisy; PyTorch's OpenMP threads suffer most (compare with --threads 1)")


def run_bench(paths, settings: BenchSettings, progress: Callable[[str], None] = lambda msg: None) -> dict:
    """Open, time (interleaved) and measure every model; return the result dict (see write_json)."""
    if settings.runs < 1 or settings.warmup < 0 or settings.threads < 1:
        raise EcbDeployError("--runs and --threads must be at least 1, --warmup at least 0")
    progress(f"opening {len(paths)} model(s) with {settings.threads} thread(s)")
    subjects = open_subjects(paths, settings.threads, settings.load_flags)
    hw = resolve_input_hw(subjects, settings.input_hw)
    inputs = bench_inputs(subjects, hw)
    facts = machine_facts()  # the load average before the timing
    busy = busy_warning(facts, settings.threads)
    if busy:
        progress(f"warning: {busy}")
    started = time.time()
    times, shapes = time_interleaved(subjects, inputs, settings.runs, settings.warmup, progress)
    if hasattr(os, "getloadavg"):
        facts["load_average_after"] = [round(v, 2) for v in os.getloadavg()]
    rows = [row_figures(s, hw, t, shape, settings.threads) for s, t, shape in zip(subjects, times, shapes)]
    if settings.memory:
        from .bench_memory import measure_peak_memory

        for row, s, x in zip(rows, subjects, inputs):
            progress(f"peak memory of {s.label} (child process)")
            try:
                row["memory"] = measure_peak_memory(s.file, s.form, x, threads=settings.threads,
                                                    load_flags=settings.load_flags or {})
            except EcbDeployError as e:  # keep the timings already measured
                progress(f"warning: {e}")
                row["memory"] = {"error": str(e)}
    return {
        "tool": "ecbdeploy bench", "schema_version": SCHEMA_VERSION,
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": facts,
        "settings": {"threads": settings.threads, "runs": settings.runs, "warmup": settings.warmup,
                     "input_size": list(hw), "order": "interleaved: one run per model per round, rotating start",
                     "timed_call": "runner(NCHW float32) -> NCHW float32",
                     "memory_method": MEMORY_METHOD if settings.memory else None},
        "input": {"photo": BENCH_PHOTO, "preparation": "bicubic LR at the model's scale, mirror-extended or "
                                                       "centre-cropped to the input size"},
        "timing_wall_s": round(time.time() - started, 1),
        "rows": rows,
        "fusion_comparison": None,
    }


def _fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def format_table(result: dict) -> str:
    rows = result["rows"]
    h, w = result["settings"]["input_size"]
    width = max([len("model")] + [len(r["file"]) for r in rows])
    head = (f"{'model':{width}s} {'runtime':11s} {'form':11s} {'median ms':>10s} {'p90 ms':>9s} {'min ms':>9s} "
            f"{'out MP/s':>9s} {'GFLOP/s':>8s} {'peak MB':>8s}")
    title = (f"input {h}x{w}, {result['settings']['threads']} thread(s), {result['settings']['runs']} runs "
             f"interleaved (medians); CPU: {result['machine']['cpu_model']}")
    lines = [title, head, "-" * len(head)]
    for r in rows:
        mem = (r["memory"] or {}).get("model_peak_mb")
        lines.append(f"{r['file']:{width}s} {r['runtime']:11s} {r['form']:11s} {r['median_ms']:10.2f} "
                     f"{r['p90_ms']:9.2f} {r['min_ms']:9.2f} {r['output_mpix_per_s']:9.2f} "
                     f"{_fmt(r['gflop_per_s'], '8.2f'):>8s} {_fmt(mem, '8.1f'):>8s}")
    comparison = result.get("fusion_comparison")
    if comparison:
        lines += ["", f"{'fusion':11s} {'multi-branch ms':>16s} {'fused ms':>9s} {'speedup':>8s} "
                      f"{'multi-branch MB':>16s} {'fused MB':>9s}"]
        for c in comparison["speedups"]:
            lines.append(f"{c['runtime']:11s} {c['multibranch_median_ms']:16.2f} {c['fused_median_ms']:9.2f} "
                         f"{c['speedup']:7.2f}x {_fmt(c['multibranch_model_peak_mb'], '16.1f'):>16s} "
                         f"{_fmt(c['fused_model_peak_mb'], '9.1f'):>9s}")
    return "\n".join(lines)


def write_json(result: dict, path) -> None:
    write_text_atomic(path, json.dumps(result, indent=2) + "\n")
