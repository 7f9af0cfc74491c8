"""Peak memory of one model, measured in a fresh child process so no other model's memory counts.

The child imports the runtime, takes its resident size as the baseline, then opens the model and
runs it; the figure is the resident high-water mark minus that baseline. On Linux the high-water
mark is VmHWM from /proc/self/status, reset to the current size after the imports (clear_refs
"5"): getrusage's ru_maxrss is not used there because a child started by exec inherits its
parent's high-water mark (measured here: a 10 MB child reported its 312 MB parent's peak).
Elsewhere ru_maxrss minus the baseline is used.

Run as `python -m ecbdeploy.bench_memory SPEC.json`; prints one JSON line.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

from .errors import EcbDeployError

MB = 1024 * 1024
TIMEOUT_S = 900


def _status_mb(field: str) -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024 / MB  # the kernel reports kB
    except OSError:
        pass
    return None


def _reset_high_water_mark() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _ru_maxrss_mb() -> float:
    value = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return value / MB if sys.platform == "darwin" else value * 1024 / MB  # bytes on macOS, kB on Linux


def _import_runtime(suffix: str) -> None:
    """Load the runtime's libraries before the baseline: they are the same for every model."""
    if suffix == ".onnx":
        import onnxruntime  # noqa: F401
    elif suffix == ".tflite":
        import ai_edge_litert.interpreter  # noqa: F401


def _open(spec: dict):
    from .checkpoint import load_checkpoint
    from .fusion import fuse
    from .runners import TorchRunner, open_runner

    path = Path(spec["model"])
    if path.suffix.lower() in (".onnx", ".tflite"):
        return open_runner(path, threads=spec["threads"])
    loaded = load_checkpoint(path, **spec["load_flags"])
    if spec["form"] == "fused" and not loaded.is_fused:
        return TorchRunner(path, fuse(loaded.model), loaded.arch, "pytorch-fused", spec["threads"])
    return TorchRunner(path, loaded.model, loaded.arch, "pytorch-" + spec["form"], spec["threads"])


def measure_in_this_process(spec: dict) -> dict:
    import numpy as np

    from . import runners  # noqa: F401  (imports torch, which every runner module needs)

    _import_runtime(Path(spec["model"]).suffix.lower())
    x = np.load(spec["input"])
    on_linux = _reset_high_water_mark() and _status_mb("VmHWM") is not None
    baseline = _status_mb("VmRSS") if on_linux else _ru_maxrss_mb()
    runner = _open(spec)
    for _ in range(spec["runs"]):
        runner(x)
    peak = _status_mb("VmHWM") if on_linux else _ru_maxrss_mb()
    return {"baseline_rss_mb": round(baseline, 1), "peak_rss_mb": round(peak, 1),
            "model_peak_mb": round(peak - baseline, 1),
            "method": "VmHWM after reset minus VmRSS after imports" if on_linux else "ru_maxrss minus ru_maxrss after imports"}


def measure_peak_memory(model: Path, form: str, x, *, threads: int, load_flags: dict, runs: int = 2) -> dict:
    """Run `model` `runs` times on `x` in a child process; return its memory figures (MB)."""
    import numpy as np

    from .tflite_export import venv_env

    with tempfile.TemporaryDirectory(prefix="ecbdeploy-mem-") as tmp:
        np.save(Path(tmp) / "x.npy", x)
        spec = {"model": str(Path(model).resolve()), "form": form, "threads": threads, "load_flags": load_flags,
                "input": str(Path(tmp) / "x.npy"), "runs": runs}
        (Path(tmp) / "spec.json").write_text(json.dumps(spec))
        try:
            proc = subprocess.run([sys.executable, "-m", "ecbdeploy.bench_memory", str(Path(tmp) / "spec.json")],
                                  capture_output=True, text=True, timeout=TIMEOUT_S, env=venv_env(), check=False)
        except subprocess.TimeoutExpired:
            raise EcbDeployError(f"memory measurement of {Path(model).name} timed out after {TIMEOUT_S} s") from None
    if proc.returncode != 0:
        lines = (proc.stderr or proc.stdout).strip().splitlines() or ["(no output)"]
        raise EcbDeployError(f"memory measurement of {Path(model).name} failed: {lines[-1][:200]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(spec_path: str) -> int:
    spec = json.loads(Path(spec_path).read_text())
    try:
        result = measure_in_this_process(spec)
    except EcbDeployError as e:
        print(str(e), file=sys.stderr)
        return 1
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
