"""android_bench/device_state.sh (the device-side helper) runs under a POSIX sh and finds the big cores."""

from __future__ import annotations

import subprocess
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "android_bench" / "device_state.sh"


def fake_sysfs(root: Path, max_khz: list[int]) -> Path:
    for n, khz in enumerate(max_khz):
        freq = root / "devices" / "system" / "cpu" / f"cpu{n}" / "cpufreq"
        freq.mkdir(parents=True)
        (freq / "cpuinfo_max_freq").write_text(f"{khz}\n")
    zone = root / "class" / "thermal" / "thermal_zone0"
    zone.mkdir(parents=True)
    (zone / "type").write_text("cpu-big\n")
    (zone / "temp").write_text("41000\n")
    return root


def test_clusters_fastest_first_with_taskset_masks(tmp_path):
    sysfs = fake_sysfs(tmp_path / "sys", [1800000] * 4 + [2400000] * 3 + [3000000])
    done = subprocess.run(["sh", str(SCRIPT)], env={"PATH": "/usr/bin:/bin", "ECBDEPLOY_SYSFS": str(sysfs)},
                          capture_output=True, text=True, timeout=10, check=False)
    assert done.returncode == 0, done.stderr
    clusters = [line for line in done.stdout.splitlines() if line.startswith("cluster")]
    assert clusters == ["cluster at 3000000 kHz: taskset mask 80", "cluster at 2400000 kHz: taskset mask 70",
                        "cluster at 1800000 kHz: taskset mask f"]
    assert "cpu-big  41000" in done.stdout
