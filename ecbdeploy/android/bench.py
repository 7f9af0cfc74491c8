"""The bench-android run: push once, run every model × delegate × threads on each device, record each.

A combination that fails (crash, non-zero exit, unparsable output, time-out, device lost) is
recorded with its error and the run goes on; devices run in parallel, one thread each.
"""

from __future__ import annotations

import itertools
import re
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, fields
from pathlib import Path

from ..errors import EcbDeployError
from ..fsutil import sha256_file, write_text_atomic
from .adb import AdbError, AdbTimeout, Device, DeviceFacts, DeviceLost, Upload
from .benchmark_output import BenchmarkOutput, UnparsableOutput, parse_benchmark_output
from .report import BenchResult, ResultStore

# Figures a parsed benchmark_model output hands to its result record: the fields both declare.
_MEASURED_FIELDS = tuple(f.name for f in fields(BenchResult) if f.name in {g.name for g in fields(BenchmarkOutput)})

REMOTE_DIR = "/data/local/tmp/ecbdeploy/bench-android"
REMOTE_BINARY = f"{REMOTE_DIR}/benchmark_model"


@dataclass(frozen=True)
class DelegateSpec:
    flags: tuple[str, ...]
    name_hint: str  # part of the delegate's name in `Replacing N out of M node(s) with delegate (...)`


# cpu runs the tool's default CPU path (XNNPACK in current builds).
DELEGATES = {
    "cpu": DelegateSpec((), "xnnpack"),
    "gpu": DelegateSpec(("--use_gpu=true",), "gpu"),
    "nnapi": DelegateSpec(("--use_nnapi=true",), "nnapi"),
}


@dataclass(frozen=True)
class Settings:
    delegates: tuple[str, ...]
    threads: tuple[int, ...]
    runs: int
    warmup: int
    op_profiling: bool
    timeout: float  # seconds per combination
    keep: bool


@dataclass(frozen=True)
class ModelFile:
    path: Path
    sha256: str

    @property
    def remote(self) -> str:
        return f"{REMOTE_DIR}/{self.path.name}"


@dataclass(frozen=True)
class Combination:
    index: int  # position in the plan: the order of the results
    model: ModelFile
    delegate: str
    threads: int

    @property
    def name(self) -> str:
        return f"{self.model.path.name} {self.delegate} t{self.threads}"


@dataclass(frozen=True)
class DeviceJob:
    device: Device
    facts: DeviceFacts
    binary: Path  # local benchmark_model for this device's ABI


def model_files(paths: list[str | Path]) -> list[ModelFile]:
    """Hash each model once; refuse two models that would land on the device under one name."""
    models, seen = [], {}
    for p in map(Path, paths):
        if p.name in seen:
            raise EcbDeployError(f"two models are named {p.name} ({seen[p.name]} and {p}): "
                                 "rename one, they share one folder on the device")
        seen[p.name] = p
        models.append(ModelFile(p.resolve(), sha256_file(p)))
    return models


def plan(models: list[ModelFile], settings: Settings) -> list[Combination]:
    combos = itertools.product(models, settings.delegates, settings.threads)
    return [Combination(i, m, d, t) for i, (m, d, t) in enumerate(combos)]


def benchmark_argv(combo: Combination, settings: Settings) -> list[str]:
    argv = [REMOTE_BINARY, f"--graph={combo.model.remote}", f"--num_threads={combo.threads}",
            f"--warmup_runs={settings.warmup}", f"--num_runs={settings.runs}",
            "--report_peak_memory_footprint=true", *DELEGATES[combo.delegate].flags]
    if settings.op_profiling:
        argv.append("--enable_op_profiling=true")
    return argv


def bench_devices(jobs: list[DeviceJob], models: list[ModelFile], settings: Settings, store: ResultStore,
                  progress: Callable[[str], None]) -> None:
    """Benchmark every device, in parallel; returns when all are done."""
    combos = plan(models, settings)
    stop = threading.Event()
    with ThreadPoolExecutor(max_workers=max(1, len(jobs)), thread_name_prefix="bench-android") as pool:
        futures = [pool.submit(bench_device, job, models, combos, settings, store, progress, stop)
                   for job in jobs]
        try:
            for future in futures:
                future.result()  # re-raise a bug in a device thread instead of losing it
        except KeyboardInterrupt:
            progress("interrupted: finishing the running combinations, then cleaning up")
            stop.set()
            raise


def bench_device(job: DeviceJob, models: list[ModelFile], combos: list[Combination], settings: Settings,
                 store: ResultStore, progress: Callable[[str], None], stop: threading.Event) -> None:
    """Push, run every combination, clean up; every outcome lands in `store`."""
    serial = job.device.serial
    lost: DeviceLost | None = None
    try:
        pushed = prepare_device(job.device, job.binary, models)
        progress(f"[{serial}] pushed {len(pushed)} file(s), {len(models) + 1 - len(pushed)} already on the device")
        lost = run_combinations(job, combos, settings, store, progress, stop)
    except AdbError as e:  # from prepare_device: nothing can run on this device
        lost = e if isinstance(e, DeviceLost) else None
        for combo in combos:
            store.add(_failed(job.facts, combo, f"setup failed: {e}"), combo.index)
        progress(f"[{serial}] setup failed: {e}")
    finally:
        if not settings.keep and lost is None:
            cleanup_device(job.device, progress)


def run_combinations(job: DeviceJob, combos: list[Combination], settings: Settings, store: ResultStore,
                     progress: Callable[[str], None], stop: threading.Event) -> DeviceLost | None:
    """Run and record each combination in turn; once the device is gone the rest are recorded as not run."""
    lost: DeviceLost | None = None
    for combo in combos:
        if stop.is_set():
            break
        if lost is not None:
            result = _failed(job.facts, combo, f"not run: {lost}")
        else:
            try:
                result = run_combination(job.device, job.facts, combo, settings, store.paths["logs"])
            except DeviceLost as e:
                lost = e
                result = _failed(job.facts, combo, str(e))
        store.add(result, combo.index)
        outcome = f"{result.avg_us / 1000:.3f} ms" if result.ok else f"FAILED: {result.error}"
        progress(f"[{job.device.serial}] {combo.name}: {outcome}")
    return lost


def prepare_device(device: Device, binary: Path, models: list[ModelFile]) -> list[Upload]:
    """Push what the device lacks (adb push creates the folder); returns what was pushed."""
    binary_upload = Upload(binary, REMOTE_BINARY, sha256_file(binary))
    pushed = device.push_changed([binary_upload, *(Upload(m.path, m.remote, m.sha256) for m in models)])
    if binary_upload in pushed:
        device.shell_ok(["chmod", "755", REMOTE_BINARY])
    return pushed


def cleanup_device(device: Device, progress: Callable[[str], None]) -> None:
    try:
        device.shell_ok(["rm", "-rf", REMOTE_DIR])
    except AdbError as e:
        progress(f"[{device.serial}] could not remove {REMOTE_DIR}: {e}")


def run_combination(device: Device, facts: DeviceFacts, combo: Combination, settings: Settings,
                    logs_dir: Path) -> BenchResult:
    """Run one combination; a failure becomes the record's error. Raises only DeviceLost."""
    result = _record(facts, combo)
    start = time.monotonic()
    try:
        shell = device.shell(benchmark_argv(combo, settings), timeout=settings.timeout)
    except AdbTimeout:
        _stop_remote_binary(device)
        return _fail(result, f"timed out after {settings.timeout:g} s")
    except DeviceLost:
        raise
    except AdbError as e:
        return _fail(result, str(e))
    finally:
        result.seconds = round(time.monotonic() - start, 3)
    text = shell.stdout + shell.stderr
    result.log = _save_log(logs_dir, facts.serial, combo, text)
    try:
        out = parse_benchmark_output(text)
    except UnparsableOutput as e:
        if shell.returncode != 0:
            return _fail(result, f"{_exit_reason(shell.returncode)}: {e}")
        return _fail(result, f"unparsable output: {e}")
    if shell.returncode != 0:
        return _fail(result, f"{_exit_reason(shell.returncode)} after printing timings")
    for name in _MEASURED_FIELDS:
        setattr(result, name, getattr(out, name))
    result.output_format = out.format
    coverage = out.delegation_for(DELEGATES[combo.delegate].name_hint)
    if coverage is not None:
        result.delegate_name = coverage.delegate
        result.delegated_nodes, result.total_nodes = coverage.replaced, coverage.total
    return result


def _stop_remote_binary(device: Device) -> None:
    """A time-out kills the local adb; make sure the benchmark stops burning the phone's CPU too."""
    try:
        device.shell(["pkill", "-f", REMOTE_BINARY])
    except AdbError:
        pass


def _exit_reason(returncode: int) -> str:
    # The device's sh reports a process killed by signal N as exit 128+N.
    if returncode > 128:
        try:
            return f"crashed ({signal.Signals(returncode - 128).name})"
        except ValueError:
            pass
    return f"exited with code {returncode}"


def _save_log(logs_dir: Path, serial: str, combo: Combination, text: str) -> str:
    name = _safe(f"{combo.model.path.name}.{combo.delegate}.t{combo.threads}") + ".txt"
    path = logs_dir / _safe(serial) / name
    write_text_atomic(path, text)
    return str(path.relative_to(logs_dir.parent))


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", name)


def _record(facts: DeviceFacts, combo: Combination) -> BenchResult:
    return BenchResult(device=facts.serial, device_id=facts.hardware_serial, model=combo.model.path.name,
                       model_sha256=combo.model.sha256, delegate=combo.delegate, threads=combo.threads)


def _fail(result: BenchResult, error: str) -> BenchResult:
    result.status, result.error = "failed", error
    return result


def _failed(facts: DeviceFacts, combo: Combination, error: str) -> BenchResult:
    return _fail(_record(facts, combo), error)
