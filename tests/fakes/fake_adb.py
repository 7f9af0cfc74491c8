"""TEST DOUBLE for `adb`: emulates the devices described in $FAKE_ADB_CONFIG. Tests only.

Config (JSON):
    {"log": "/path/adb.log",            # optional: one JSON line per call ({"serial", "args"})
     "devices": [{"serial": "A1", "state": "device" | "unauthorized" | "offline",
                  "root": "/tmp/.../A1", "props": {"ro.product.cpu.abi": "arm64-v8a", ...}}]}

A device's file system is its `root` folder; the device path /data/local/tmp is <root>/data/local/tmp.
`devices -l`, `-s SERIAL`, `push LOCAL REMOTE` and `shell CMD...` are emulated. A shell command
runs in the host's /bin/sh (cwd <root>) with "/data/local/tmp" rewritten to the device folder,
which is exactly what a real device's sh does with the one string adb hands it; `getprop` and
`pkill` are answered here instead. A device whose root holds a file named LOST has been
unplugged: the current command ends with exit 255 and later ones fail as adb does.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

DEVICE_TMP = "/data/local/tmp"


def main(argv: list[str]) -> int:
    config = json.loads(Path(os.environ["FAKE_ADB_CONFIG"]).read_text())
    serial = None
    if len(argv) >= 2 and argv[0] == "-s":
        serial, argv = argv[1], argv[2:]
    _log(config, serial, argv)
    if not argv:
        return _fail("adb: usage: no command given")
    command, args = argv[0], argv[1:]
    if command == "devices":
        return _devices(config, "-l" in args)
    device = _pick_device(config, serial)
    if isinstance(device, int):
        return device
    if command == "shell":
        return _shell(device, " ".join(args))
    if command == "push":
        return _push(device, *args)
    return _fail(f"adb: unknown command {command} (this test double knows devices, shell, push)")


def _devices(config: dict, long: bool) -> int:
    print("List of devices attached")
    for d in config["devices"]:
        if _lost(d):
            continue
        extra = ""
        if long and d["state"] == "device":
            model = d["props"].get("ro.product.model", "fake").replace(" ", "_")
            extra = f" product:fake model:{model} device:fake transport_id:1"
        print(f"{d['serial']}\t{d['state']}{extra}")
    print()
    return 0


def _pick_device(config: dict, serial: str | None) -> dict | int:
    present = [d for d in config["devices"] if not _lost(d)]
    if serial is None:
        if not present:
            return _fail("adb: no devices/emulators found")
        if len(present) > 1:
            return _fail("adb: more than one device/emulator")
        device = present[0]
    else:
        device = next((d for d in present if d["serial"] == serial), None)
        if device is None:
            return _fail(f"adb: device '{serial}' not found")
    if device["state"] == "offline":
        return _fail("adb: device offline")
    if device["state"] == "unauthorized":
        return _fail("adb: device unauthorized.\nThis adb server's $ADB_VENDOR_KEYS is not set")
    return device


def _shell(device: dict, command: str) -> int:
    if command == "getprop":
        for key, value in sorted(device["props"].items()):
            print(f"[{key}]: [{value}]")
        return 0
    if command.startswith("pkill"):
        return 0  # never signal host processes
    root = Path(device["root"])
    host_tmp = str(root / DEVICE_TMP.lstrip("/"))
    Path(host_tmp).mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PATH": "/usr/bin:/bin"}
    done = subprocess.run(["/bin/sh", "-c", command.replace(DEVICE_TMP, host_tmp)], cwd=root, env=env, check=False,
                          capture_output=True)
    # Show device paths, as the device would (e.g. in sha256sum's output).
    sys.stdout.buffer.write(done.stdout.replace(host_tmp.encode(), DEVICE_TMP.encode()))
    sys.stderr.buffer.write(done.stderr.replace(host_tmp.encode(), DEVICE_TMP.encode()))
    rc = done.returncode
    if _lost(device):
        return 255  # the connection dropped mid-command
    return 128 - rc if rc < 0 else rc  # adbd reports death by signal N as 128+N


def _push(device: dict, *args: str) -> int:
    if len(args) != 2:
        return _fail("adb: push: this test double takes exactly LOCAL REMOTE")
    local, remote = Path(args[0]), args[1]
    if not local.is_file():
        return _fail(f"adb: error: cannot stat '{local}': No such file or directory")
    if not remote.startswith(DEVICE_TMP + "/"):
        return _fail(f"adb: error: failed to copy '{local}' to '{remote}': remote Read-only file system")
    target = Path(device["root"]) / remote.lstrip("/")
    if remote.endswith("/") or target.is_dir():
        target = target / local.name
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(local, target)
    size = local.stat().st_size
    print(f"{local}: 1 file pushed, 0 skipped. 100.0 MB/s ({size} bytes in 0.000s)")
    return 0


def _lost(device: dict) -> bool:
    return (Path(device["root"]) / "LOST").exists()


def _log(config: dict, serial: str | None, argv: list[str]) -> None:
    if config.get("log"):
        line = json.dumps({"serial": serial, "args": argv}) + "\n"
        fd = os.open(config["log"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line.encode())  # one write per line: parallel devices do not interleave
        finally:
            os.close(fd)


def _fail(message: str) -> int:
    print(message, file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
