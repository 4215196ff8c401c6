"""A board boots whatever its flash holds: an agent file that cannot be read is reported by
name with the reason, and the board runs the others (firmware/main.py load), on CPython and on
microfang's MicroPython at the ESP32 heap, from the same flash image."""

import subprocess
import sys

import pytest
from signing_keys import board_trust

from microfang.boards import PROFILES
from microfang.broker import free_port
from microfang.firmware.blockdev import FileBlockDevice
from microfang.firmware.port import Flash
from microfang.provision import BLOCK, BLOCKS, write_image


def damaged_image(path, hello):
    """hello installed; /agents/echo.mfa holds garbage; /agents/dir.mfa is a directory."""
    config = {"device": "b1", "fleet": "test", "key": b"k" * 32, "host": "127.0.0.1", "port": free_port(),
              **board_trust()}
    write_image(path, config, [hello])
    device = FileBlockDevice(str(path), BLOCK, BLOCKS)
    flash = Flash(device)
    with flash.open("/agents/echo.mfa", "wb") as f:
        f.write(b"\xa2not a bundle at all")
    flash.makedirs("/agents/dir.mfa")
    flash.unmount()
    device.close()


@pytest.mark.parametrize("runtime", ["cpython", "micropython"])
def test_a_board_whose_flash_holds_unreadable_agent_files_reports_each_and_runs_the_others(
        runtime, tmp_path, example_bundle, micropython):
    damaged_image(tmp_path / "b1.img", example_bundle("hello"))
    python = [sys.executable] if runtime == "cpython" else [str(micropython), "-X", PROFILES["esp32"].heapsize_arg()]
    proc = subprocess.run([*python, "-m", "microfang.firmware.main", str(tmp_path / "b1.img"), "2"],
                          capture_output=True, text=True, timeout=60)
    lines = proc.stdout.splitlines()
    assert proc.returncode == 0 and "Traceback" not in proc.stdout + proc.stderr, proc.stdout + proc.stderr
    assert sorted(ln for ln in lines if " fault " in ln) == [
        "[dir.mfa] fault not started: [Errno 21] EISDIR",
        "[echo.mfa] fault not started: truncated CBOR at byte 20"], lines
    assert "[hello] state running" in lines and "[hello] log hello from a wasm agent" in lines, lines
