"""adb helpers: parsing `adb devices -l`, choosing devices, finding adb, device facts, quoting, time-outs."""

from __future__ import annotations

import shlex
import sys
import time

import pytest

from ecbdeploy.android import adb
from ecbdeploy.android.adb import (
    AdbError,
    AdbTimeout,
    DeviceEntry,
    device_facts,
    parse_devices,
    select_devices,
)
from ecbdeploy.errors import EcbDeployError

DEVICES_L = """\
* daemon not running; starting now at tcp:5037
* daemon started successfully
List of devices attached
R58M12ABCDE            device usb:1-1 product:panther model:Pixel_7 device:panther transport_id:3
emulator-5554          unauthorized transport_id:4
192.168.1.7:5555       offline transport_id:5
0123456789ABCDEF\tno permissions (missing udev rules? user is in the plugdev group); see [http://developer.android.com/tools/device.html] usb:1-2 transport_id:6

"""


def test_parse_devices_l():
    entries = parse_devices(DEVICES_L)
    assert [(e.serial, e.state) for e in entries] == [
        ("R58M12ABCDE", "device"), ("emulator-5554", "unauthorized"), ("192.168.1.7:5555", "offline"),
        ("0123456789ABCDEF", "no permissions")]
    assert entries[0].details["model"] == "Pixel_7" and entries[0].details["transport_id"] == "3"
    assert parse_devices("List of devices attached\n\n") == []


def entries(*pairs):
    return [DeviceEntry(s, state) for s, state in pairs]


def test_several_devices_are_named_with_their_model():
    listed = parse_devices(DEVICES_L)
    with pytest.raises(AdbError, match=r"^4 devices attached \(R58M12ABCDE Pixel_7, emulator-5554, "
                                       r"192.168.1.7:5555, 0123456789ABCDEF\): pass --serial SERIAL"):
        select_devices(listed, None, False)


def test_select_the_only_device_or_the_asked_one():
    assert select_devices(entries(("A", "device")), None, False) == ["A"]
    assert select_devices(entries(("A", "device"), ("B", "device")), "B", False) == ["B"]
    assert select_devices(entries(("A", "device"), ("B", "offline"), ("C", "device")), None, True) == ["A", "C"]


@pytest.mark.parametrize("listed, serial, all_devices, message", [
    ([], None, False, "no Android device found"),
    ([("A", "device"), ("B", "device")], None, False, "2 devices attached (A, B): pass --serial SERIAL or --all-devices"),
    ([("A", "device")], "B", False, "device B is not attached (adb devices lists: A)"),
    ([("A", "unauthorized")], None, False, "device A is unauthorized: unlock it and accept"),
    ([("A", "offline")], "A", False, "device A is offline: replug the USB cable or run `adb reconnect`"),
    ([("A", "no permissions")], None, False, "device A is no permissions: adb may not open it: add a udev rule"),
    ([("A", "recovery")], None, False, "device A is recovery: it is not ready for benchmarking"),
    ([("A", "offline"), ("B", "unauthorized")], None, True, "device A is offline"),
])
def test_select_refuses_with_one_clear_line(listed, serial, all_devices, message):
    with pytest.raises(AdbError) as e:
        select_devices(entries(*listed), serial, all_devices)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_find_adb_order_option_env_path(tmp_path, monkeypatch):
    fake = tmp_path / "bin" / "adb"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    other = tmp_path / "other_adb"
    other.write_text("#!/bin/sh\n")
    other.chmod(0o755)
    monkeypatch.setenv("PATH", str(fake.parent))
    monkeypatch.delenv("ADB", raising=False)
    assert adb.find_adb(None) == str(fake)
    monkeypatch.setenv("ADB", str(other))
    assert adb.find_adb(None) == str(other)
    assert adb.find_adb(str(fake)) == str(fake)
    with pytest.raises(AdbError, match=r"adb not found or not executable: .*/nope \(from \$ADB\)"):
        monkeypatch.setenv("ADB", str(tmp_path / "nope"))
        adb.find_adb(None)
    monkeypatch.delenv("ADB")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(AdbError, match=r"^adb not found: install Android platform-tools .* --adb PATH or set \$ADB$"):
        adb.find_adb(None)


def test_adb_error_is_the_projects_user_error():
    assert issubclass(AdbError, EcbDeployError)


def test_device_facts_fall_back_for_the_soc():
    props = {"ro.product.model": "SM-S911B", "ro.product.manufacturer": "samsung", "ro.board.platform": "kalama",
             "ro.hardware": "qcom", "ro.build.version.release": "14", "ro.product.cpu.abi": "arm64-v8a",
             "ro.serialno": "R5CW1"}
    facts = device_facts("192.168.1.7:5555", props)
    assert (facts.soc, facts.abi, facts.abis, facts.hardware_serial) == ("kalama", "arm64-v8a", ("arm64-v8a",), "R5CW1")
    assert device_facts("X", {"ro.hardware": "mt6893"}).soc == "mt6893"
    assert device_facts("X", {"ro.soc.model": "SM8550", "ro.board.platform": "kalama"}).soc == "SM8550"
    assert device_facts("X", {}).hardware_serial == "X"


class RecordingDevice(adb.Device):
    """Captures the argv handed to adb instead of running it."""

    def __init__(self):
        super().__init__("adb", "S1")
        self.argv = None

    def _adb(self, args, timeout):
        self.argv = args
        return adb.subprocess.CompletedProcess(args, 0, "", "")


@pytest.mark.parametrize("name", ["a;touch INJECTED.tflite", "it's.tflite", "$(reboot)`id` & | > x.tflite",
                                  "sp ace\nnew line.tflite"])
def test_shell_quotes_each_piece_into_one_string(name):
    device = RecordingDevice()
    argv = ["/data/local/tmp/x/benchmark_model", f"--graph=/data/local/tmp/x/{name}", "--num_threads=4"]
    device.shell(argv)
    assert device.argv[0] == "shell" and len(device.argv) == 2
    assert shlex.split(device.argv[1]) == argv  # the device's sh sees exactly these words


def test_run_adb_times_out_and_kills_the_whole_group(tmp_path):
    marker = tmp_path / "survived"
    # A child that would outlive its parent if only the parent were killed.
    script = f"import subprocess, sys; subprocess.Popen(['sh', '-c', 'sleep 1; touch {marker}']); import time; time.sleep(30)"
    start = time.monotonic()
    with pytest.raises(AdbTimeout, match="timed out after 0.5 s"):
        adb.run_adb([sys.executable, "-c", script], timeout=0.5)
    assert time.monotonic() - start < 5
    time.sleep(1.5)
    assert not marker.exists()


def test_run_adb_that_cannot_start_is_a_clear_error(tmp_path):
    with pytest.raises(AdbError, match="cannot run .*nope"):
        adb.run_adb([str(tmp_path / "nope"), "devices"], timeout=5)


@pytest.mark.parametrize("stderr, lost", [
    ("adb: device 'S1' not found\n", True),
    ("error: device offline\n", True),
    ("error: closed\n", True),
    ("sh: sha256sum: not found\n", False),
    ("ERROR: Benchmarking failed.\n", False),
])
def test_device_lost_is_told_apart_from_a_failing_command(monkeypatch, stderr, lost):
    monkeypatch.setattr(adb, "run_adb", lambda argv, timeout: adb.subprocess.CompletedProcess(argv, 1, "", stderr))
    device = adb.Device("adb", "S1")
    if lost:
        with pytest.raises(adb.DeviceLost, match=f"^device S1 lost: {stderr.strip()}$"):
            device.shell(["true"])
    else:
        assert device.shell(["true"]).returncode == 1
