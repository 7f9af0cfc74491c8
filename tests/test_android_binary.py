"""The benchmark binary: ELF ABI check, where it comes from, and downloading only when asked (offline-safe)."""

from __future__ import annotations

import time

import pytest

from ecbdeploy.android import binary
from ecbdeploy.android.binary import cache_path, check_abi, elf_abi, fetch_binary, resolve_binary
from ecbdeploy.errors import EcbDeployError


def elf(machine: int, byteorder: str = "little", elf_class: int = 2) -> bytes:
    """A minimal 64-byte ELF header with e_machine set."""
    header = bytearray(64)
    header[:4] = b"\x7fELF"
    header[4], header[5], header[6] = elf_class, 1 if byteorder == "little" else 2, 1
    header[18:20] = machine.to_bytes(2, byteorder)
    return bytes(header)


@pytest.mark.parametrize("machine, abi", [(183, "arm64-v8a"), (40, "armeabi-v7a"), (62, "x86_64"), (3, "x86")])
def test_elf_machine_maps_to_android_abi(tmp_path, machine, abi):
    path = tmp_path / "bm"
    path.write_bytes(elf(machine, elf_class=1 if machine in (40, 3) else 2) + b"rest of the binary")
    assert elf_abi(path) == abi


def test_big_endian_header_is_read_as_such(tmp_path):
    path = tmp_path / "bm"
    path.write_bytes(elf(183, "big"))
    assert elf_abi(path) == "arm64-v8a"


def test_script_has_no_abi_and_other_files_are_refused(tmp_path):
    script = tmp_path / "wrapper.sh"
    script.write_text("#!/system/bin/sh\nexec ./benchmark_model \"$@\"\n")
    assert elf_abi(script) is None
    html = tmp_path / "page"
    html.write_text("<html>404</html>")
    with pytest.raises(EcbDeployError, match="is not an executable"):
        elf_abi(html)
    riscv = tmp_path / "riscv"
    riscv.write_bytes(elf(243))
    with pytest.raises(EcbDeployError, match="built for ELF machine 243, which is no Android ABI"):
        elf_abi(riscv)


def test_check_abi_uses_the_device_abi_list(tmp_path):
    arm = tmp_path / "arm"
    arm.write_bytes(elf(40, elf_class=1))
    assert check_abi(arm, ["arm64-v8a", "armeabi-v7a"], "S1") == "armeabi-v7a"
    with pytest.raises(EcbDeployError, match=r"built for armeabi-v7a but device S1 runs x86_64: use a benchmark_model"
                                             r" built for x86_64"):
        check_abi(arm, ["x86_64"], "S1")


@pytest.fixture
def no_binary_env(tmp_path, monkeypatch):
    monkeypatch.delenv("ECBDEPLOY_BENCHMARK_BINARY", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def test_resolution_order_option_env_cache(tmp_path, monkeypatch, no_binary_env):
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_bytes(elf(183))
    b.write_bytes(elf(183))
    cached = cache_path("arm64-v8a")
    assert cached == tmp_path / "cache" / "ecbdeploy" / "benchmark_model" / "arm64-v8a" / "benchmark_model"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(elf(183))
    assert resolve_binary(None, "arm64-v8a", False, None) == cached
    monkeypatch.setenv("ECBDEPLOY_BENCHMARK_BINARY", str(b))
    assert resolve_binary(None, "arm64-v8a", False, None) == b
    assert resolve_binary(str(a), "arm64-v8a", False, None) == a
    with pytest.raises(EcbDeployError, match=r"benchmark binary not found: .*/missing \(from --benchmark-binary\)"):
        resolve_binary(str(tmp_path / "missing"), "arm64-v8a", False, None)


def test_no_binary_names_the_three_ways(no_binary_env, monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("downloaded without --fetch-binary")

    monkeypatch.setattr(binary.urllib.request, "urlopen", no_network)
    with pytest.raises(EcbDeployError) as e:
        resolve_binary(None, "arm64-v8a", False, "http://127.0.0.1:9/x")
    message = str(e.value)
    assert "--benchmark-binary PATH" in message and "$ECBDEPLOY_BENCHMARK_BINARY" in message
    assert "--fetch-binary" in message and str(cache_path("arm64-v8a").parent) in message


def test_fetch_unreachable_fails_fast_and_leaves_no_file(no_binary_env):
    start = time.monotonic()
    with pytest.raises(EcbDeployError) as e:
        resolve_binary(None, "arm64-v8a", True, "http://127.0.0.1:9/android_aarch64_benchmark_model")
    assert time.monotonic() - start < 5
    message = str(e.value)
    assert message.startswith("could not download http://127.0.0.1:9/android_aarch64_benchmark_model (")
    assert "then pass --benchmark-binary PATH or set $ECBDEPLOY_BENCHMARK_BINARY" in message and "\n" not in message
    assert list(cache_path("arm64-v8a").parent.iterdir()) == []


def test_fetch_once_into_the_cache_and_check_what_came(tmp_path, no_binary_env):
    served = tmp_path / "served"
    served.write_bytes(elf(183) + b"body")
    got = resolve_binary(None, "arm64-v8a", True, served.as_uri())
    assert got == cache_path("arm64-v8a") and got.read_bytes() == served.read_bytes()
    assert got.stat().st_mode & 0o111
    served.unlink()  # a second run must not download again
    assert resolve_binary(None, "arm64-v8a", True, served.as_uri()) == got


def test_fetch_refuses_a_file_for_another_abi_or_a_web_page(tmp_path, no_binary_env):
    wrong = tmp_path / "wrong"
    wrong.write_bytes(elf(62))
    with pytest.raises(EcbDeployError, match="gave x86_64, not a benchmark_model for arm64-v8a"):
        fetch_binary("arm64-v8a", wrong.as_uri(), cache_path("arm64-v8a"))
    page = tmp_path / "page"
    page.write_text("<html>moved</html>")
    with pytest.raises(EcbDeployError, match="gave no executable, not a benchmark_model for arm64-v8a"):
        fetch_binary("arm64-v8a", page.as_uri(), cache_path("arm64-v8a"))
    assert not cache_path("arm64-v8a").exists()


def test_default_urls_are_the_official_nightly_prebuilts(no_binary_env):
    assert binary.default_url("arm64-v8a").endswith("/android_aarch64_benchmark_model")
    assert binary.default_url("armeabi-v7a").endswith("/android_arm_benchmark_model")
    assert binary.default_url("arm64-v8a").startswith("https://storage.googleapis.com/tensorflow-nightly-public/")
    with pytest.raises(EcbDeployError, match="no official prebuilt benchmark_model for x86_64"):
        resolve_binary(None, "x86_64", True, None)
