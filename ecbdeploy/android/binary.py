"""Which `benchmark_model` to push: find it, check its ABI, and (only when asked) download it.

Order: --benchmark-binary, $ECBDEPLOY_BENCHMARK_BINARY, the user cache
(~/.cache/ecbdeploy/benchmark_model/<abi>/benchmark_model), filled by --fetch-binary.
"""

from __future__ import annotations

import os
import shutil
import urllib.error
import urllib.request
from pathlib import Path

from ..errors import EcbDeployError
from ..fsutil import atomic_path, ensure_dir

BINARY_ENV = "ECBDEPLOY_BENCHMARK_BINARY"

# ELF e_machine -> Android ABI name.
ELF_MACHINE_ABI = {183: "arm64-v8a", 40: "armeabi-v7a", 62: "x86_64", 3: "x86"}

# The TensorFlow project's nightly prebuilt binaries (TFLite performance-measurement docs).
NIGHTLY_URL = "https://storage.googleapis.com/tensorflow-nightly-public/prod/tensorflow/release/lite/tools/nightly/latest/"
OFFICIAL_PREBUILT = {"arm64-v8a": "android_aarch64_benchmark_model", "armeabi-v7a": "android_arm_benchmark_model"}

DOWNLOAD_TIMEOUT_S = 60


def elf_abi(path: str | Path) -> str | None:
    """Android ABI an ELF executable was built for; None for a `#!` script (nothing to check)."""
    try:
        with open(path, "rb") as f:
            header = f.read(64)
    except OSError as e:
        raise EcbDeployError(f"cannot read benchmark binary {path}: {e.strerror}") from None
    if header.startswith(b"#!"):
        return None
    if len(header) < 20 or header[:4] != b"\x7fELF":
        raise EcbDeployError(f"{path} is not an executable (neither an ELF file nor a #! script)")
    byteorder = {1: "little", 2: "big"}.get(header[5])
    if byteorder is None:
        raise EcbDeployError(f"{path}: ELF header has an unknown byte order ({header[5]})")
    machine = int.from_bytes(header[18:20], byteorder)
    if machine not in ELF_MACHINE_ABI:
        raise EcbDeployError(f"{path} is built for ELF machine {machine}, which is no Android ABI")
    return ELF_MACHINE_ABI[machine]


def check_abi(binary: Path, device_abis: list[str], serial: str) -> str | None:
    """Refuse a binary the device cannot run; returns the binary's ABI (None for a script)."""
    abi = elf_abi(binary)
    if abi is not None and abi not in device_abis:
        raise EcbDeployError(f"{binary} is built for {abi} but device {serial} runs {', '.join(device_abis)}: "
                             f"use a benchmark_model built for {device_abis[0]}")
    return abi


def cache_path(abi: str) -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "ecbdeploy" / "benchmark_model" / abi / "benchmark_model"


def default_url(abi: str) -> str | None:
    name = OFFICIAL_PREBUILT.get(abi)
    return NIGHTLY_URL + name if name else None


def resolve_binary(option: str | None, abi: str, fetch: bool, url: str | None) -> Path:
    """The local benchmark_model to use for a device of `abi`; downloads only when `fetch`."""
    chosen = option or os.environ.get(BINARY_ENV)
    if chosen:
        path = Path(chosen).expanduser().resolve()  # absolute: adb must never read it as an option
        if not path.is_file():
            source = "--benchmark-binary" if option else f"${BINARY_ENV}"
            raise EcbDeployError(f"benchmark binary not found: {path} (from {source})")
        return path
    cached = cache_path(abi)
    if cached.is_file():
        return cached
    if fetch:
        return fetch_binary(abi, url or default_url(abi), cached)
    raise EcbDeployError(
        f"no benchmark_model for {abi}: pass --benchmark-binary PATH, set ${BINARY_ENV}, "
        f"or add --fetch-binary to download the official prebuilt into {cached.parent}/ "
        f"(see android_bench/README.md)")


def fetch_binary(abi: str, url: str | None, dest: Path) -> Path:
    """Download `url` to `dest` once, after checking it is an executable for `abi`."""
    manual = (f"download benchmark_model for {abi} yourself (TensorFlow nightly prebuilts: {NIGHTLY_URL}, "
              f"or build //tensorflow/lite/tools/benchmark:benchmark_model), "
              f"then pass --benchmark-binary PATH or set ${BINARY_ENV}")
    if url is None:
        raise EcbDeployError(f"no official prebuilt benchmark_model for {abi}: {manual}")
    ensure_dir(dest.parent)
    try:
        with atomic_path(dest) as tmp:
            with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response, open(tmp, "wb") as out:
                shutil.copyfileobj(response, out)
            try:
                got = elf_abi(tmp) or "a script"
            except EcbDeployError:
                got = "no executable"  # e.g. an HTML error page
            if got != abi:
                raise EcbDeployError(f"{url} gave {got}, not a benchmark_model for {abi}: {manual}")
        dest.chmod(0o755)
    except (urllib.error.URLError, OSError, ValueError) as e:
        reason = getattr(e, "reason", None) or e
        raise EcbDeployError(f"could not download {url} ({reason}): {manual}") from None
    return dest
