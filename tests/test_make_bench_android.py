"""`make bench-android` end to end against the fake adb (tests/fakes/bin/adb) and the stand-in
benchmark_model: the table is printed and the JSON/CSV/Markdown are written."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from test_android_bench import FAKES, FakePhones

REPO = Path(__file__).resolve().parent.parent
STAMP = REPO / ".venv" / ".installed"


def _venv_is_current() -> bool:
    """make would reinstall first otherwise; only run where `make install` is up to date."""
    if not STAMP.exists() or shutil.which("make") is None:
        return False
    return all(STAMP.stat().st_mtime >= (REPO / f).stat().st_mtime for f in ("pyproject.toml", "constraints.txt"))


@pytest.mark.skipif(not _venv_is_current(), reason="needs an up-to-date .venv made by `make install`")
def test_make_bench_android_prints_the_table_and_writes_json(tmp_path):
    phones = FakePhones(tmp_path)
    phones.add("PIXEL7")
    out = tmp_path / "export"
    out.mkdir()
    (out / "report.json").write_text("{}")  # an existing export: make must not export again
    for name in ("m_fp32.tflite", "m_int8.tflite"):
        (out / name).write_bytes(b"TFL3" + name.encode())
    binary = tmp_path / "benchmark_model"
    binary.write_text(f"#!/bin/sh\nexec '{sys.executable}' -I -S '{FAKES / 'fake_benchmark_model.py'}' \"$@\"\n")
    binary.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k not in ("ADB", "ECBDEPLOY_BENCHMARK_BINARY", "MAKEFLAGS")}
    env.update(PATH=f"{FAKES / 'bin'}{os.pathsep}/usr/bin{os.pathsep}/bin", FAKE_ADB_CONFIG=str(phones.config),
               FAKE_ADB_PYTHON=sys.executable, XDG_CACHE_HOME=str(tmp_path / "cache"))
    proc = subprocess.run(
        ["make", "-C", str(REPO), "bench-android", f"OUT={out}", "DELEGATES=cpu,gpu",
         f"BENCH_ARGS=--benchmark-binary {binary} --runs 5 --warmup 1 --timeout 20"],
        env=env, capture_output=True, text=True, timeout=300, check=False,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "ecbdeploy export" not in proc.stdout
    assert "m_fp32.tflite" in proc.stdout and "m_int8.tflite" in proc.stdout
    results = json.loads((out / "bench_android.json").read_text())["results"]
    assert len(results) == 4  # 2 models x 2 delegates x default threads
    assert all(r["status"] == "ok" for r in results), results
    assert (out / "bench_android.csv").is_file() and (out / "bench_android.md").is_file()
