"""bench-android end to end against test doubles: tests/fakes/bin/adb (fake phones) and
tests/fakes/fake_benchmark_model.py (real-format output). No phone and no real adb involved."""

from __future__ import annotations

import json
import os
import stat
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from ecbdeploy.android.bench import REMOTE_DIR
from ecbdeploy.android.command import bench_android_command

FAKES = Path(__file__).parent / "fakes"
ARM64_PROPS = {
    "ro.product.model": "Pixel 7", "ro.product.manufacturer": "Google", "ro.soc.model": "GS201",
    "ro.board.platform": "gs201", "ro.hardware": "panther", "ro.build.version.release": "14",
    "ro.product.cpu.abi": "arm64-v8a", "ro.product.cpu.abilist": "arm64-v8a,armeabi-v7a,armeabi",
}


class FakePhones:
    """Builds the fake adb's world: devices (folders + props), the config file and the call log."""

    def __init__(self, tmp_path: Path):
        self.tmp = tmp_path
        self.devices: list[dict] = []
        self.config = tmp_path / "fake_adb.json"
        self.log = tmp_path / "adb.log"
        self.save()

    def add(self, serial: str, state: str = "device", **props: str) -> Path:
        root = self.tmp / "phones" / serial
        root.mkdir(parents=True)
        self.devices.append({"serial": serial, "state": state, "root": str(root), "props": {**ARM64_PROPS, **props}})
        self.save()
        return root

    def save(self) -> None:
        self.config.write_text(json.dumps({"log": str(self.log), "devices": self.devices}))

    def root(self, serial: str) -> Path:
        return self.tmp / "phones" / serial

    def remote_dir(self, serial: str) -> Path:
        return self.root(serial) / REMOTE_DIR.lstrip("/")

    def calls(self) -> list[dict]:
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines()]

    def pushes(self) -> list[str]:
        """Device file names pushed to, in order."""
        return [Path(c["args"][2]).name for c in self.calls() if c["args"][:1] == ["push"]]

    def benchmark_calls(self, serial: str) -> list[list[str]]:
        path = self.root(serial) / "benchmark_calls.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@pytest.fixture
def phones(tmp_path, monkeypatch):
    """Fake adb first on PATH (a real adb, if any, cannot answer), no $ADB, a private cache."""
    monkeypatch.setenv("PATH", f"{FAKES / 'bin'}{os.pathsep}/usr/bin{os.pathsep}/bin")
    monkeypatch.delenv("ADB", raising=False)
    monkeypatch.delenv("ECBDEPLOY_BENCHMARK_BINARY", raising=False)
    monkeypatch.delenv("FAKE_BENCH_SCALE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("FAKE_ADB_PYTHON", sys.executable)
    world = FakePhones(tmp_path)
    monkeypatch.setenv("FAKE_ADB_CONFIG", str(world.config))
    monkeypatch.chdir(tmp_path)
    return world


@pytest.fixture
def fake_binary(tmp_path) -> Path:
    """The stand-in benchmark_model: a #! script (its ABI cannot be checked, so it is not)."""
    path = tmp_path / "bin" / "benchmark_model"
    path.parent.mkdir()
    path.write_text(f"#!/bin/sh\nexec '{sys.executable}' -I -S '{FAKES / 'fake_benchmark_model.py'}' \"$@\"\n")
    path.chmod(0o755)
    return path


def make_models(folder: Path, *names: str) -> list[str]:
    folder.mkdir(exist_ok=True)
    paths = []
    for name in names:
        p = folder / name
        p.write_bytes(b"TFL3" + name.encode())  # distinct bytes per model
        paths.append(str(p))
    return paths


def bench(*args: str, binary: Path | None = None):
    argv = [*args, "--runs", "20", "--warmup", "2", "--timeout", "10"]
    if binary is not None:
        argv += ["--benchmark-binary", str(binary)]
    return CliRunner().invoke(bench_android_command, argv, catch_exceptions=False)


def read_results(out: Path) -> list[dict]:
    return json.loads(out.read_text())["results"]


def elf_header(machine: int) -> bytes:
    """A minimal 64-byte ELF64 little-endian header with e_machine set."""
    header = bytearray(64)
    header[:4] = b"\x7fELF"
    header[4], header[5], header[6] = 2, 1, 1  # 64-bit, little-endian, version 1
    header[16:18] = (2).to_bytes(2, "little")  # ET_EXEC
    header[18:20] = machine.to_bytes(2, "little")
    return bytes(header)


# ---- the happy path ------------------------------------------------------------------------------

def test_one_device_every_combination_recorded_with_exact_figures(phones, fake_binary, tmp_path):
    phones.add("A1")
    models = make_models(tmp_path / "m", "fp32.tflite", "litert2.tflite")
    r = bench(*models, "--delegates", "cpu,gpu", "--threads", "1,4", "--json", "out/res", binary=fake_binary)
    assert r.exit_code == 0, r.output

    results = read_results(tmp_path / "out" / "res.json")
    assert [(x["model"], x["delegate"], x["threads"]) for x in results] == [
        ("fp32.tflite", "cpu", 1), ("fp32.tflite", "cpu", 4), ("fp32.tflite", "gpu", 1), ("fp32.tflite", "gpu", 4),
        ("litert2.tflite", "cpu", 1), ("litert2.tflite", "cpu", 4), ("litert2.tflite", "gpu", 1),
        ("litert2.tflite", "gpu", 4)]
    assert all(x["status"] == "ok" for x in results)
    cpu1, cpu4, gpu1 = results[0], results[1], results[2]
    assert (cpu1["avg_us"], cpu4["avg_us"]) == (24000.0, 6000.0)
    assert cpu1["peak_memory_mb"] == 57.3867 and cpu1["memory_overall_mb"] == 13.6133
    assert (cpu1["delegate_name"], cpu1["delegated_nodes"], cpu1["total_nodes"]) == ("TfLiteXNNPackDelegate", 13, 13)
    assert (gpu1["delegate_name"], gpu1["delegated_nodes"]) == ("TfLiteGpuDelegateV2", 13)
    assert results[4]["output_format"] == "litert2" and results[4]["avg_us"] == 24000.0
    assert results[4]["peak_memory_mb"] == 14.02

    doc = json.loads((tmp_path / "out" / "res.json").read_text())
    assert doc["complete"] is True
    assert doc["devices"][0]["model"] == "Pixel 7" and doc["devices"][0]["soc"] == "GS201"
    assert doc["devices"][0]["abi"] == "arm64-v8a" and doc["devices"][0]["android"] == "14"
    csv_lines = (tmp_path / "out" / "res.csv").read_text().splitlines()
    assert csv_lines[0].startswith("device,device_id,model,") and len(csv_lines) == 9
    md = (tmp_path / "out" / "res.md").read_text()
    assert "| A1 | fp32.tflite | gpu | 4 | 6.000 |" in md and "Google Pixel 7" in md
    assert (tmp_path / "out" / cpu1["log"]).read_text().count("Inference timings in us") == 1
    table = [line.split() for line in r.output.splitlines()]
    assert ["A1", "fp32.tflite", "gpu", "4", "6.000", "5.880", "0.040", "57.4", "13/13", "-", "ok"] in table


def test_flags_reach_the_tool_as_asked(phones, fake_binary, tmp_path):
    phones.add("A1")
    models = make_models(tmp_path / "m", "x.tflite")
    r = bench(*models, "--delegates", "cpu,gpu,nnapi", "--threads", "2", "--op-profiling", binary=fake_binary)
    assert r.exit_code == 0, r.output
    calls = phones.benchmark_calls("A1")
    graph = f"--graph={phones.remote_dir('A1')}/x.tflite"
    common = [graph, "--num_threads=2", "--warmup_runs=2", "--num_runs=20", "--report_peak_memory_footprint=true"]
    assert calls == [common + ["--enable_op_profiling=true"],
                     common + ["--use_gpu=true", "--enable_op_profiling=true"],
                     common + ["--use_nnapi=true", "--enable_op_profiling=true"]]
    nnapi = read_results(tmp_path / "bench_android.json")[2]
    assert (nnapi["delegated_nodes"], nnapi["total_nodes"]) == (11, 13)


def test_all_devices_benchmarks_each_ready_device_and_skips_the_others(phones, fake_binary, tmp_path):
    phones.add("A1")
    phones.add("B2", **{"ro.product.model": "Galaxy S23", "ro.soc.model": "", "ro.board.platform": "kalama"})
    phones.add("C3", state="unauthorized")
    models = make_models(tmp_path / "m", "x.tflite")
    r = bench(*models, "--all-devices", "--delegates", "cpu", binary=fake_binary)
    assert r.exit_code == 0, r.output
    assert "skipping device C3 (unauthorized)" in r.output
    results = read_results(tmp_path / "bench_android.json")
    assert [(x["device"], x["status"]) for x in results] == [("A1", "ok"), ("B2", "ok")]
    devices = json.loads((tmp_path / "bench_android.json").read_text())["devices"]
    assert devices[1]["soc"] == "kalama"  # ro.soc.model empty: falls back to ro.board.platform
    assert len(phones.benchmark_calls("A1")) == len(phones.benchmark_calls("B2")) == 1

    r = bench(*models, "--serial", "B2", "--delegates", "cpu", "--json", "b2", binary=fake_binary)
    assert r.exit_code == 0, r.output
    assert [x["device"] for x in read_results(tmp_path / "b2.json")] == ["B2"]
    assert len(phones.benchmark_calls("A1")) == 1 and len(phones.benchmark_calls("B2")) == 2


# ---- device discovery errors ---------------------------------------------------------------------

@pytest.mark.parametrize("setup, args, message", [
    ([], [], "no Android device found"),
    ([("A1", "device"), ("B2", "device")], [], "2 devices attached (A1 Pixel_7, B2 Pixel_7): pass --serial SERIAL or --all-devices"),
    ([("A1", "unauthorized")], [], "device A1 is unauthorized: unlock it and accept"),
    ([("A1", "offline")], [], "device A1 is offline: replug the USB cable"),
    ([("A1", "device")], ["--serial", "ZZ"], "device ZZ is not attached (adb devices lists: A1)"),
    ([("A1", "device"), ("B2", "offline")], ["--serial", "B2"], "device B2 is offline"),
    ([("A1", "offline")], ["--all-devices"], "device A1 is offline"),
])
def test_device_problems_are_one_line_errors(phones, fake_binary, tmp_path, setup, args, message):
    for serial, state in setup:
        phones.add(serial, state=state)
    r = bench(*make_models(tmp_path / "m", "x.tflite"), *args, binary=fake_binary)
    assert r.exit_code == 1
    assert message in r.output
    assert r.output.count("\n") == 1 and "Traceback" not in r.output


def test_adb_missing_names_the_three_ways(phones, fake_binary, tmp_path, monkeypatch):
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    r = bench(*make_models(tmp_path / "m", "x.tflite"), binary=fake_binary)
    assert r.exit_code == 1
    assert "adb not found" in r.output and "--adb PATH" in r.output and "$ADB" in r.output


def test_adb_from_option_and_env_var(phones, fake_binary, tmp_path, monkeypatch):
    phones.add("A1")
    models = make_models(tmp_path / "m", "x.tflite")
    r = bench(*models, "--adb", str(tmp_path / "nope" / "adb"), binary=fake_binary)
    assert r.exit_code == 1 and "not executable" in r.output and "(from --adb)" in r.output
    monkeypatch.setenv("PATH", str(tmp_path))  # only $ADB can lead to the fake now
    monkeypatch.setenv("ADB", str(FAKES / "bin" / "adb"))
    r = bench(*models, "--delegates", "cpu", binary=fake_binary)
    assert r.exit_code == 0, r.output


# ---- the binary ----------------------------------------------------------------------------------

def test_binary_for_another_abi_is_refused_before_anything_is_pushed(phones, tmp_path):
    phones.add("A1")
    x86 = tmp_path / "benchmark_model_x86_64"
    x86.write_bytes(elf_header(62) + b"\0" * 64)
    r = bench(*make_models(tmp_path / "m", "x.tflite"), binary=x86)
    assert r.exit_code == 1
    assert "is built for x86_64 but device A1 runs arm64-v8a, armeabi-v7a, armeabi" in r.output
    assert phones.pushes() == []


def test_32_bit_arm_binary_is_accepted_on_a_64_bit_phone_that_lists_it(phones, tmp_path):
    phones.add("A1")
    arm = tmp_path / "benchmark_model_arm"
    arm.write_bytes(elf_header(40))
    r = bench(*make_models(tmp_path / "m", "x.tflite"), "--delegates", "cpu", binary=arm)
    # The host cannot execute an ARM binary, so the run itself fails; the ABI check let it through.
    assert "armeabi-v7a" in r.output and "ABI" not in r.output.split("\n")[-2]
    assert phones.pushes() == ["benchmark_model", "x.tflite"]


def test_no_binary_and_no_flag_names_the_three_ways_and_downloads_nothing(phones, tmp_path):
    phones.add("A1")
    r = bench(*make_models(tmp_path / "m", "x.tflite"), "--binary-url", "http://127.0.0.1:9/never")
    assert r.exit_code == 1
    assert "--benchmark-binary PATH" in r.output and "$ECBDEPLOY_BENCHMARK_BINARY" in r.output
    assert "--fetch-binary" in r.output
    assert not (tmp_path / "cache").exists()


def test_fetch_from_unreachable_url_fails_fast_with_what_to_do(phones, tmp_path):
    phones.add("A1")
    start = time.monotonic()
    r = bench(*make_models(tmp_path / "m", "x.tflite"), "--fetch-binary", "--binary-url", "http://127.0.0.1:9/bm")
    assert time.monotonic() - start < 10
    assert r.exit_code == 1 and r.output.count("\n") == 1
    assert "could not download http://127.0.0.1:9/bm" in r.output
    assert "--benchmark-binary PATH" in r.output and "$ECBDEPLOY_BENCHMARK_BINARY" in r.output
    assert not (tmp_path / "cache" / "ecbdeploy" / "benchmark_model" / "arm64-v8a" / "benchmark_model").exists()


def test_binary_from_env_var_then_from_cache(phones, fake_binary, tmp_path, monkeypatch):
    phones.add("A1")
    models = make_models(tmp_path / "m", "x.tflite")
    monkeypatch.setenv("ECBDEPLOY_BENCHMARK_BINARY", str(fake_binary))
    assert bench(*models, "--delegates", "cpu").exit_code == 0
    monkeypatch.delenv("ECBDEPLOY_BENCHMARK_BINARY")
    cached = tmp_path / "cache" / "ecbdeploy" / "benchmark_model" / "arm64-v8a" / "benchmark_model"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(fake_binary.read_bytes())
    r = bench(*models, "--delegates", "cpu", "--fetch-binary", "--binary-url", "http://127.0.0.1:9/x")
    assert r.exit_code == 0, r.output  # the cached binary is used: no download attempted
    assert str(cached) in r.output


# ---- failures are recorded, the run goes on ------------------------------------------------------

def test_crash_mid_run_keeps_results_before_and_after(phones, fake_binary, tmp_path):
    phones.add("A1")
    models = make_models(tmp_path / "m", "a.tflite", "crash.tflite", "b.tflite", "fail.tflite", "garbage.tflite")
    r = bench(*models, "--delegates", "cpu", binary=fake_binary)
    assert r.exit_code == 0, r.output
    by_model = {x["model"]: x for x in read_results(tmp_path / "bench_android.json")}
    assert by_model["a.tflite"]["status"] == by_model["b.tflite"]["status"] == "ok"
    assert by_model["b.tflite"]["avg_us"] == 6000.0
    assert by_model["crash.tflite"]["error"].startswith("crashed (SIGSEGV)")
    assert by_model["fail.tflite"]["error"] == "exited with code 1: Failed to apply the delegate.; Benchmarking failed."
    assert by_model["garbage.tflite"]["error"].startswith("unparsable output: no inference timing")
    assert "3 failed" in r.output and "FAILED: crashed (SIGSEGV)" in r.output
    # Without --keep the run's own folder is removed, failures or not, and nothing else.
    assert not phones.remote_dir("A1").exists() and phones.remote_dir("A1").parent.is_dir()


def test_time_out_is_recorded_and_the_next_combination_runs(phones, fake_binary, tmp_path):
    phones.add("A1")
    models = make_models(tmp_path / "m", "hang.tflite", "ok.tflite")
    start = time.monotonic()
    r = CliRunner().invoke(bench_android_command, [*models, "--delegates", "cpu", "--timeout", "1",
                                                   "--benchmark-binary", str(fake_binary)])
    assert time.monotonic() - start < 8
    assert r.exit_code == 0, r.output
    hang, ok = read_results(tmp_path / "bench_android.json")
    assert hang["error"] == "timed out after 1 s" and ok["status"] == "ok"
    assert any(c["args"][:2] == ["shell", f"pkill -f {REMOTE_DIR}/benchmark_model"] for c in phones.calls())


def test_device_lost_marks_the_rest_not_run_and_keeps_earlier_results(phones, fake_binary, tmp_path):
    phones.add("A1")
    models = make_models(tmp_path / "m", "a.tflite", "lose.tflite", "b.tflite", "c.tflite")
    r = bench(*models, "--delegates", "cpu", binary=fake_binary)
    assert r.exit_code == 0, r.output
    a, lose, b, c = read_results(tmp_path / "bench_android.json")
    assert a["status"] == "ok"
    assert lose["error"].startswith("exited with code 255")  # the connection dropped mid-run
    assert b["error"] == "device A1 lost: adb: device 'A1' not found"  # the next call finds it gone
    assert c["error"] == "not run: device A1 lost: adb: device 'A1' not found"
    assert not any(c["args"][:2] == ["shell", f"rm -rf {REMOTE_DIR}"] for c in phones.calls())


def test_setup_failure_records_every_combination_and_still_cleans_up(phones, fake_binary, tmp_path, monkeypatch):
    from ecbdeploy.android import adb

    def push_fails(self, local, remote):
        raise adb.AdbError(f"{self.serial}: adb push {local} failed: No space left on device")

    monkeypatch.setattr(adb.Device, "push", push_fails)
    phones.add("A1")
    r = bench(*make_models(tmp_path / "m", "a.tflite", "b.tflite"), "--delegates", "cpu", binary=fake_binary)
    assert r.exit_code == 1 and "all 2 combinations failed (first: setup failed: A1: adb push" in r.output
    results = read_results(tmp_path / "bench_android.json")
    assert [x["error"].endswith("No space left on device") for x in results] == [True, True]
    assert phones.calls()[-1]["args"] == ["shell", f"rm -rf {REMOTE_DIR}"]


def test_every_combination_failing_exits_1_but_keeps_the_file(phones, fake_binary, tmp_path):
    phones.add("A1")
    r = bench(*make_models(tmp_path / "m", "crash.tflite"), "--delegates", "cpu", binary=fake_binary)
    assert r.exit_code == 1
    assert "all 1 combinations failed (first: crashed (SIGSEGV)" in r.output
    assert read_results(tmp_path / "bench_android.json")[0]["status"] == "failed"


def test_results_are_on_disk_after_each_combination(phones, fake_binary, tmp_path, monkeypatch):
    """Stop the run after the second combination: the JSON already holds both, as valid JSON."""
    from ecbdeploy.android import bench as bench_mod

    phones.add("A1")
    models = make_models(tmp_path / "m", "a.tflite", "b.tflite", "c.tflite")
    real_run, seen = bench_mod.run_combination, []

    def run_then_interrupt(*args, **kwargs):
        if len(seen) == 2:
            seen.append(json.loads((tmp_path / "bench_android.json").read_text()))
            raise KeyboardInterrupt
        seen.append(None)
        return real_run(*args, **kwargs)

    monkeypatch.setattr(bench_mod, "run_combination", run_then_interrupt)
    r = CliRunner().invoke(bench_android_command, [*models, "--delegates", "cpu", "--benchmark-binary",
                                                   str(fake_binary)])
    assert r.exit_code != 0
    on_disk = seen[2]
    assert [x["model"] for x in on_disk["results"]] == ["a.tflite", "b.tflite"] and on_disk["complete"] is False
    assert [x["model"] for x in read_results(tmp_path / "bench_android.json")] == ["a.tflite", "b.tflite"]


# ---- device shell quoting ------------------------------------------------------------------------

def test_names_with_spaces_quotes_and_semicolons_work_and_inject_nothing(phones, fake_binary, tmp_path):
    phones.add("A1")
    names = ["a;touch INJECTED.tflite", "it's $(touch INJECTED2) `touch INJECTED3`.tflite", "sp ace.tflite"]
    models = make_models(tmp_path / "my models", *names)
    r = bench(*models, "--delegates", "cpu", "--keep", binary=fake_binary)
    assert r.exit_code == 0, r.output
    results = read_results(tmp_path / "bench_android.json")
    assert [x["model"] for x in results] == names and all(x["status"] == "ok" for x in results)
    assert sorted(p.name for p in phones.remote_dir("A1").iterdir()) == sorted([*names, "benchmark_model"])
    assert not [p for p in tmp_path.rglob("INJECTED*")]
    assert [c[0] for c in phones.benchmark_calls("A1")] == [f"--graph={phones.remote_dir('A1')}/{n}" for n in names]


# ---- pushing and cleaning up ---------------------------------------------------------------------

def test_keep_leaves_files_and_the_next_run_skips_unchanged_ones(phones, fake_binary, tmp_path):
    phones.add("A1")
    a, b = make_models(tmp_path / "m", "a.tflite", "b.tflite")
    fake_binary.chmod(0o644)  # as a download would be: the pushed copy must still run
    r = bench(a, b, "--delegates", "cpu", "--keep", binary=fake_binary)
    assert r.exit_code == 0, r.output
    assert sorted(phones.pushes()) == ["a.tflite", "b.tflite", "benchmark_model"]
    assert (phones.remote_dir("A1") / "a.tflite").exists()
    assert (phones.remote_dir("A1") / "benchmark_model").stat().st_mode & stat.S_IXUSR

    Path(b).write_bytes(b"TFL3 changed")
    phones.log.unlink()
    r = bench(a, b, "--delegates", "cpu", "--keep", binary=fake_binary)
    assert r.exit_code == 0, r.output
    assert phones.pushes() == ["b.tflite"]
    assert "pushed 1 file(s), 2 already on the device" in r.output
    assert (phones.remote_dir("A1") / "b.tflite").read_bytes() == b"TFL3 changed"


# ---- --compare -----------------------------------------------------------------------------------

def test_compare_flags_a_slower_run_and_exits_0(phones, fake_binary, tmp_path, monkeypatch):
    phones.add("A1")
    models = make_models(tmp_path / "m", "a.tflite", "b.tflite")
    assert bench(*models, "--delegates", "cpu", "--json", "old", binary=fake_binary).exit_code == 0

    monkeypatch.setenv("FAKE_BENCH_SCALE", "1.25")  # 25% slower everywhere...
    slower = make_models(tmp_path / "m", "crash.tflite")  # ...and a model the baseline does not have
    r = bench(*models, *slower, "--delegates", "cpu", "--json", "new", "--compare", "old.json", binary=fake_binary)
    assert r.exit_code == 0, r.output
    assert r.output.count("+25.0% REGRESSION") == 2
    assert "2 REGRESSION(S) against old.json" in r.output
    a, b, crash = read_results(tmp_path / "new.json")
    assert a["regression"] and a["baseline_avg_us"] == 6000.0 and a["change"] == pytest.approx(0.25)
    assert b["regression"] and b["baseline_avg_us"] == 6000.0
    assert crash["regression"] is False and crash["baseline_avg_us"] is None
    assert "+25.0% REGRESSION" in (tmp_path / "new.md").read_text()

    r = bench(*models, "--delegates", "cpu", "--json", "new2", "--compare", "old.json", "--fail-on-regression",
              binary=fake_binary)
    assert r.exit_code == 1 and "2 regression(s) against old.json" in r.output


def test_compare_within_threshold_is_no_regression_and_a_new_failure_is(phones, fake_binary, tmp_path, monkeypatch):
    phones.add("A1")
    baseline = [{"device_id": "A1", "model": m, "delegate": "cpu", "threads": 4, "status": "ok", "avg_us": 6000.0}
                for m in ("a.tflite", "crash.tflite")]
    (tmp_path / "old.json").write_text(json.dumps({"results": baseline}))
    monkeypatch.setenv("FAKE_BENCH_SCALE", "1.1")  # exactly at the 10% threshold: not a regression
    models = make_models(tmp_path / "m", "a.tflite", "crash.tflite")
    r = bench(*models, "--delegates", "cpu", "--json", "new", "--compare", "old.json", binary=fake_binary)
    assert r.exit_code == 0, r.output
    a, crash = read_results(tmp_path / "new.json")
    assert a["change"] == pytest.approx(0.10) and a["regression"] is False
    assert crash["regression"] is True and crash["baseline_avg_us"] == 6000.0  # worked before, fails now
    assert "+10.0%" in r.output and "REGRESSION (now failing)" in r.output and "% REGRESSION" not in r.output


def test_compare_with_a_file_that_is_not_ours_is_a_clear_error(phones, fake_binary, tmp_path):
    phones.add("A1")
    (tmp_path / "old.json").write_text("[1, 2]")
    r = bench(*make_models(tmp_path / "m", "a.tflite"), "--compare", "old.json", binary=fake_binary)
    assert r.exit_code == 1 and "--compare old.json: not a bench-android JSON" in r.output


# ---- usage ---------------------------------------------------------------------------------------

def test_usage_errors(phones, fake_binary, tmp_path):
    models = make_models(tmp_path / "m", "a.tflite")
    assert "not both" in bench(*models, "--serial", "A", "--all-devices", binary=fake_binary).output
    r = bench(*models, "--delegates", "cpu,tpu", binary=fake_binary)
    assert r.exit_code == 2 and "use a comma-separated list of cpu, gpu, nnapi" in r.output
    r = bench(*models, "--threads", "0", binary=fake_binary)
    assert r.exit_code == 2 and "positive integers" in r.output
    other = tmp_path / "other"
    other.mkdir()
    (other / "a.tflite").write_bytes(b"y")
    r = bench(*models, str(other / "a.tflite"), binary=fake_binary)
    assert r.exit_code == 1 and "two models are named a.tflite" in r.output


def test_help_explains_every_option():
    out = CliRunner().invoke(bench_android_command, ["--help"]).output
    for option in ["--serial", "--all-devices", "--delegates", "--threads", "--runs", "--warmup", "--timeout",
                   "--benchmark-binary", "--fetch-binary", "--binary-url", "--adb", "--op-profiling", "--json",
                   "--keep", "--compare", "--regression-threshold", "--fail-on-regression"]:
        assert option in out
