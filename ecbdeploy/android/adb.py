"""Talk to phones through adb: find devices, read their facts, push files, run shell commands.

Every adb call is an argument list with a timeout and captured stderr. `adb shell` hands the
device's sh ONE string, so device-side commands are built from shlex-quoted pieces only.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import EcbDeployError

ADB_ENV = "ADB"
QUICK_TIMEOUT_S = 30  # getprop, mkdir, sha256sum, rm
PUSH_TIMEOUT_S = 300

# adb's own complaints (not the device command's) that mean the device went away.
_DEVICE_GONE = re.compile(
    r"^(?:adb: )?(?:error: )?(?:device '.*' not found|device offline|device unauthorized|"
    r"no devices/emulators found|device still authorizing|closed|protocol fault)", re.MULTILINE)
_GETPROP_LINE = re.compile(r"^\[(.*?)\]: \[(.*)\]$")
_SHA256_LINE = re.compile(r"^([0-9a-f]{64})\s+(.*)$")

_STATE_ADVICE = {
    "unauthorized": "unlock it and accept the 'Allow USB debugging?' prompt, then retry",
    "offline": "replug the USB cable or run `adb reconnect`, then retry",
    "no permissions": "adb may not open it: add a udev rule for the phone (see android_bench/README.md)",
    "authorizing": "wait for the phone to finish authorising adb, then retry",
}


class AdbError(EcbDeployError):
    """adb could not do what was asked."""


class DeviceLost(AdbError):
    """The device went away (unplugged, offline, rebooted) during the run."""


class AdbTimeout(AdbError):
    pass


def find_adb(option: str | None) -> str:
    """adb from --adb, else $ADB, else PATH."""
    chosen = option or os.environ.get(ADB_ENV)
    if chosen:
        path = shutil.which(chosen) if os.sep not in chosen else chosen
        if not path or not os.access(path, os.X_OK) or os.path.isdir(path):
            source = "--adb" if option else f"${ADB_ENV}"
            raise AdbError(f"adb not found or not executable: {chosen} (from {source})")
        return path
    path = shutil.which("adb")
    if path is None:
        raise AdbError("adb not found: install Android platform-tools and put adb on PATH, "
                       f"or pass --adb PATH or set ${ADB_ENV}")
    return path


@dataclass(frozen=True)
class DeviceEntry:
    """One line of `adb devices -l`."""

    serial: str
    state: str
    details: dict[str, str] = field(default_factory=dict)  # model:, product:, transport_id: ...


@dataclass(frozen=True)
class ShellResult:
    returncode: int
    stdout: str
    stderr: str


@dataclass(frozen=True)
class Upload:
    local: Path
    remote: str
    sha256: str  # of the local file


@dataclass(frozen=True)
class DeviceFacts:
    serial: str
    model: str
    manufacturer: str
    soc: str
    android: str
    abi: str
    abis: tuple[str, ...]  # every ABI the device runs, preferred first
    hardware_serial: str  # ro.serialno: the same phone over USB or Wi-Fi

    @property
    def label(self) -> str:
        return f"{self.manufacturer} {self.model} ({self.serial})".strip()


def run_adb(argv: list[str], timeout: float) -> subprocess.CompletedProcess:
    """Run one adb command; on time-out kill its whole process group and raise AdbTimeout."""
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, errors="replace", start_new_session=True)
    except OSError as e:
        raise AdbError(f"cannot run {argv[0]}: {e.strerror}") from None
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.communicate(timeout=5)
        raise AdbTimeout(f"timed out after {timeout:g} s: adb {' '.join(argv[1:])[:200]}") from None
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)


def list_devices(adb: str) -> list[DeviceEntry]:
    result = run_adb([adb, "devices", "-l"], QUICK_TIMEOUT_S)
    if result.returncode != 0:
        raise AdbError(f"`adb devices` failed: {_last_line(result.stderr) or result.returncode}")
    return parse_devices(result.stdout)


def parse_devices(text: str) -> list[DeviceEntry]:
    entries = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("List of devices", "*", "adb server")):
            continue
        m = re.match(r"^(\S+)\s+(no permissions|\S+)\s*(.*)$", line)
        if not m:
            continue
        details = dict(p.split(":", 1) for p in m.group(3).split() if ":" in p)
        entries.append(DeviceEntry(m.group(1), m.group(2), details))
    return entries


def select_devices(entries: list[DeviceEntry], serial: str | None, all_devices: bool) -> list[str]:
    """Serials to benchmark; a one-line EcbDeployError when none fits the request."""
    if not entries:
        raise AdbError("no Android device found (`adb devices` lists none): connect a phone with USB "
                       "debugging on (see android_bench/README.md)")
    by_serial = {e.serial: e for e in entries}
    if serial is not None:
        if serial not in by_serial:
            raise AdbError(f"device {serial} is not attached (adb devices lists: {', '.join(by_serial)})")
        _require_ready(by_serial[serial])
        return [serial]
    if all_devices:
        ready = [e.serial for e in entries if e.state == "device"]
        if not ready:
            for e in entries:
                _require_ready(e)
        return ready
    if len(entries) > 1:
        attached = ", ".join(f"{e.serial} {e.details['model']}" if "model" in e.details else e.serial
                             for e in entries)
        raise AdbError(f"{len(entries)} devices attached ({attached}): pass --serial SERIAL or --all-devices")
    _require_ready(entries[0])
    return [entries[0].serial]


def _require_ready(entry: DeviceEntry) -> None:
    if entry.state != "device":
        advice = _STATE_ADVICE.get(entry.state, "it is not ready for benchmarking")
        raise AdbError(f"device {entry.serial} is {entry.state}: {advice}")


class Device:
    """One attached device, addressed by serial."""

    def __init__(self, adb: str, serial: str):
        self.adb = adb
        self.serial = serial

    def _adb(self, args: list[str], timeout: float) -> subprocess.CompletedProcess:
        result = run_adb([self.adb, "-s", self.serial, *args], timeout)
        if result.returncode != 0 and _DEVICE_GONE.search(result.stderr):
            raise DeviceLost(f"device {self.serial} lost: {_last_line(result.stderr)}")
        return result

    def shell(self, argv: list[str], timeout: float = QUICK_TIMEOUT_S) -> ShellResult:
        """Run argv on the device; each piece is quoted, so no name can inject a command."""
        command = " ".join(shlex.quote(str(a)) for a in argv)
        result = self._adb(["shell", command], timeout)
        return ShellResult(result.returncode, result.stdout, result.stderr)

    def shell_ok(self, argv: list[str], timeout: float = QUICK_TIMEOUT_S) -> str:
        """Like shell(), but a non-zero exit is an AdbError; returns stdout."""
        result = self.shell(argv, timeout)
        if result.returncode != 0:
            detail = _last_line(result.stderr) or _last_line(result.stdout) or f"exit {result.returncode}"
            raise AdbError(f"{self.serial}: `{' '.join(argv)[:120]}` failed: {detail}")
        return result.stdout

    def getprop(self) -> dict[str, str]:
        props = {}
        for line in self.shell_ok(["getprop"]).splitlines():
            m = _GETPROP_LINE.match(line.strip())
            if m:
                props[m.group(1)] = m.group(2)
        return props

    def facts(self) -> DeviceFacts:
        return device_facts(self.serial, self.getprop())

    def sha256(self, remote_paths: list[str]) -> dict[str, str]:
        """sha256 of the device files that exist (missing or odd names are simply absent)."""
        result = self.shell(["sha256sum", *remote_paths])
        wanted = set(remote_paths)
        hashes = {}
        for line in result.stdout.splitlines():
            m = _SHA256_LINE.match(line)
            if m and m.group(2) in wanted:
                hashes[m.group(2)] = m.group(1)
        return hashes

    def push(self, local: Path, remote: str) -> None:
        result = self._adb(["push", str(local), remote], PUSH_TIMEOUT_S)
        if result.returncode != 0:
            raise AdbError(f"{self.serial}: adb push {local} failed: "
                           f"{_last_line(result.stderr) or _last_line(result.stdout)}")

    def push_changed(self, uploads: list[Upload]) -> list[Upload]:
        """Push each file unless the device already holds the same bytes there; returns those pushed."""
        on_device = self.sha256([u.remote for u in uploads])
        pushed = []
        for upload in uploads:
            if on_device.get(upload.remote) != upload.sha256:
                self.push(upload.local, upload.remote)
                pushed.append(upload)
        return pushed


def device_facts(serial: str, props: dict[str, str]) -> DeviceFacts:
    def first(*keys: str) -> str:
        return next((props[k] for k in keys if props.get(k)), "")

    abi = first("ro.product.cpu.abi")
    abis = tuple(a for a in first("ro.product.cpu.abilist").split(",") if a) or ((abi,) if abi else ())
    return DeviceFacts(
        serial=serial, model=first("ro.product.model"), manufacturer=first("ro.product.manufacturer"),
        soc=first("ro.soc.model", "ro.board.platform", "ro.hardware"),
        android=first("ro.build.version.release"), abi=abi, abis=abis,
        hardware_serial=first("ro.serialno") or serial)


def _last_line(text: str) -> str:
    return next((line.strip() for line in reversed(text.splitlines()) if line.strip()), "")
