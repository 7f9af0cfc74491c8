"""`ecbdeploy bench-android`: the click command, a thin layer over adb, binary, bench and report."""

from __future__ import annotations

import threading
from dataclasses import asdict

import click

from ..errors import EcbDeployError
from . import adb as adb_mod
from .bench import DELEGATES, DeviceJob, Settings, bench_devices, model_files
from .binary import BINARY_ENV, check_abi, resolve_binary
from .report import Baseline, ResultStore, format_table

DEFAULT_JSON = "bench_android.json"


def _csv_choice(text: str) -> tuple[str, ...]:
    names = tuple(dict.fromkeys(n.strip().lower() for n in text.split(",") if n.strip()))
    unknown = [n for n in names if n not in DELEGATES]
    if unknown or not names:
        raise click.BadParameter(f"{text!r}: use a comma-separated list of {', '.join(DELEGATES)}")
    return names


def _csv_ints(text: str) -> tuple[int, ...]:
    try:
        values = tuple(dict.fromkeys(int(v) for v in text.split(",") if v.strip()))
    except ValueError:
        values = ()
    if not values or min(values) < 1:
        raise click.BadParameter(f"{text!r}: use a comma-separated list of positive integers, e.g. 1,4")
    return values


@click.command("bench-android", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("models", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--serial", metavar="S", help="Device to use (from `adb devices`); needed when several are attached.")
@click.option("--all-devices", is_flag=True,
              help="Benchmark every ready device, in parallel (devices not ready are skipped with a warning).")
@click.option("--delegates", default="cpu,gpu", show_default=True, metavar="LIST",
              help="Comma-separated: cpu (the tool's default CPU path, XNNPACK), gpu (--use_gpu=true), "
                   "nnapi (--use_nnapi=true).")
@click.option("--threads", "threads", default="4", show_default=True, metavar="LIST",
              help="Comma-separated CPU thread counts (--num_threads), e.g. 1,4.")
@click.option("--runs", type=click.IntRange(min=1), default=50, show_default=True,
              help="Measured runs per combination (--num_runs; the tool may run more to fill 1 s).")
@click.option("--warmup", type=click.IntRange(min=0), default=5, show_default=True,
              help="Warm-up runs per combination (--warmup_runs).")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=600, show_default=True,
              help="Seconds one combination may take before it is recorded as timed out.")
@click.option("--benchmark-binary", type=click.Path(dir_okay=False), default=None,
              help=f"Android benchmark_model to push. Default: ${BINARY_ENV}, else the cache "
                   "~/.cache/ecbdeploy/benchmark_model/<abi>/benchmark_model ($XDG_CACHE_HOME if set).")
@click.option("--fetch-binary", is_flag=True,
              help="If no binary is given or cached, download the official prebuilt for the device's ABI "
                   "into the cache (once). Nothing is ever downloaded without this flag.")
@click.option("--binary-url", metavar="URL", default=None,
              help="URL for --fetch-binary. Default: the TensorFlow nightly android_aarch64_benchmark_model "
                   "or android_arm_benchmark_model.")
@click.option("--adb", "adb_option", metavar="PATH", default=None, help="adb to use. Default: $ADB, else PATH.")
@click.option("--op-profiling", is_flag=True,
              help="Also ask for per-op timings (--enable_op_profiling=true); they land in the raw logs.")
@click.option("--json", "json_out", metavar="OUT", default=DEFAULT_JSON, show_default=True,
              help="Write OUT.json, OUT.csv, OUT.md and the raw outputs in OUT_logs/ (rewritten after "
                   "every combination, so an interrupted run keeps what it measured).")
@click.option("--keep", is_flag=True,
              help="Leave the binary and models on the device (the next run skips pushing unchanged files).")
@click.option("--compare", "compare", metavar="OLD.json", type=click.Path(exists=True, dir_okay=False),
              help="Flag REGRESSION where the average is slower than in OLD.json (same device, model, "
                   "delegate and threads) by more than --regression-threshold, or now fails.")
@click.option("--regression-threshold", type=click.FloatRange(min=0), default=10.0, show_default=True,
              metavar="PERCENT", help="Slow-down that counts as a regression with --compare.")
@click.option("--fail-on-regression", is_flag=True,
              help="Exit 1 when --compare finds a regression (default: flag it in the table, exit 0).")
def bench_android_command(models, delegates, threads, runs, warmup, timeout, op_profiling, keep, **options):
    """Benchmark TFLite MODELs on attached Android phones with TFLite's benchmark_model.

    Runs every MODEL × delegate × threads combination through adb, records latency (avg, min,
    std, percentiles), memory and delegate coverage, and prints a table. A failing combination
    is recorded with its error and the run goes on. Exit status: 0 when at least one
    combination ran (regressions are flagged, not fatal, unless --fail-on-regression), 1 when
    none did or on a setup error (no adb, no device, wrong ABI, no binary).
    """
    if options["serial"] and options["all_devices"]:
        raise click.UsageError("use either --serial or --all-devices, not both")
    settings = Settings(delegates=_csv_choice(delegates), threads=_csv_ints(threads), runs=runs, warmup=warmup,
                        op_profiling=op_profiling, timeout=timeout, keep=keep)
    try:
        _bench(models, settings, **options)
    except EcbDeployError as e:
        raise click.ClickException(str(e)) from None


def _bench(models, settings: Settings, *, serial, all_devices, benchmark_binary, fetch_binary, binary_url,
           adb_option, json_out, compare, regression_threshold, fail_on_regression) -> None:
    baseline = Baseline(compare, regression_threshold / 100) if compare else None  # read before OUT is rewritten
    model_list = model_files(models)
    adb = adb_mod.find_adb(adb_option)
    entries = adb_mod.list_devices(adb)
    serials = adb_mod.select_devices(entries, serial, all_devices)
    for entry in entries:
        if all_devices and entry.serial not in serials:
            click.echo(f"warning: skipping device {entry.serial} ({entry.state})", err=True)
    jobs = [_device_job(adb, s, benchmark_binary, fetch_binary, binary_url) for s in serials]

    store = ResultStore(json_out, asdict(settings), [j.facts for j in jobs], baseline)
    store.write()
    lock = threading.Lock()

    def progress(line: str) -> None:
        with lock:  # whole lines from the device threads
            click.echo(line)

    bench_devices(jobs, model_list, settings, store, progress)
    store.finish()
    _summarise(store, fail_on_regression)


def _summarise(store: ResultStore, fail_on_regression: bool) -> None:
    """Print the table; exit 1 when nothing ran, or on a regression if asked to."""
    results, baseline, paths = store.results, store.baseline, store.paths
    failed = [r for r in results if not r.ok]
    regressions = [r for r in results if r.regression]
    click.echo("\n" + format_table(results))
    against = f", {len(regressions)} REGRESSION(S) against {baseline.path}" if baseline else ""
    click.echo(f"\n{len(results) - len(failed)} ok, {len(failed)} failed{against}; "
               f"wrote {paths['json']}, {paths['csv']}, {paths['md']}")
    if results and len(failed) == len(results):
        raise EcbDeployError(f"all {len(results)} combinations failed (first: {failed[0].error}); "
                             f"details in {paths['json']}")
    if regressions and fail_on_regression:
        raise EcbDeployError(f"{len(regressions)} regression(s) against {baseline.path}")


def _device_job(adb: str, serial: str, benchmark_binary, fetch_binary, binary_url) -> DeviceJob:
    device = adb_mod.Device(adb, serial)
    facts = device.facts()
    if not facts.abi:
        raise EcbDeployError(f"device {serial} reports no ro.product.cpu.abi: is it a working Android device?")
    binary = resolve_binary(benchmark_binary, facts.abi, fetch_binary, binary_url)
    binary_abi = check_abi(binary, list(facts.abis), serial)
    click.echo(f"{serial}: {facts.manufacturer} {facts.model}, SoC {facts.soc or '?'}, Android {facts.android}, "
               f"{facts.abi}; benchmark_model {binary} ({binary_abi or 'script, ABI not checked'})")
    return DeviceJob(device, facts, binary)
