"""`microfang deploy BUNDLE --port PORT`: install an agent over USB with mpremote (as a library).

One mpremote session through the board API of firmware/main.py (identity, stage, install,
run): Ctrl-C stops the board's loop (agents and their memory stay in the
REPL's `microfang.firmware.main.BOARD`), the signed bundle is copied to the board's flash, the
firmware's own installer verifies and starts it exactly as for a deploy over the air, the
agent's status is read back, and the loop is started again. PORT is anything mpremote opens:
/dev/ttyUSB0, COM3, socket://127.0.0.1:PORT.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from microfang import signing
from microfang.deploy import read_bundle
from microfang.firmware.errors import MicrofangError

_MAIN = "import microfang.firmware.main as _mf\n"

Progress = Callable[[int, int], None]  # (bytes copied, bytes in all)


@dataclass
class Installed:
    """What the board says after a USB install."""

    device: str
    agent: str
    version: int
    state: str
    figures: list[str]  # events=.., fuel=.., memory=..


def _open(port: str) -> Any:  # mpremote's SerialTransport
    from mpremote.transport import TransportError
    from mpremote.transport_serial import SerialTransport

    try:
        transport = SerialTransport(port, baudrate=115200)
    except TransportError as e:
        raise MicrofangError(f"{port}: cannot open ({' '.join(str(e).split())})") from None
    try:
        transport.enter_raw_repl(soft_reset=False)  # Ctrl-C, then raw REPL; no reset: Ctrl-D would end a unix board
    except (TransportError, OSError) as e:
        transport.close()
        raise MicrofangError(f"{port}: no MicroPython REPL answered ({' '.join(str(e).split())})") from None
    return transport


def _call(transport: Any, call: str) -> list[str]:
    """Call one function of the board API (firmware/main.py) and return the words of the last
    line it printed."""
    from mpremote.transport import TransportError, TransportExecError

    try:
        out = transport.exec(_MAIN + "_mf." + call).decode().strip()
    except TransportExecError as e:
        lines = e.error_output.strip().splitlines()
        raise MicrofangError(f"the board failed: {lines[-1] if lines else e}") from None
    except TransportError as e:
        raise MicrofangError(f"the board stopped answering: {' '.join(str(e).split())}") from None
    return out.splitlines()[-1].split() if out else []


def deploy_usb(path: Path, port: str, keys: Path | None = None, progress: Progress | None = None,
               supersedes: int = 0) -> Installed:
    """Install a bundle on the board on `port`, signed with the operator's signing key
    (signing.load(keys)); `progress(done, total)` follows the copy. Raises MicrofangError if
    the board refuses it."""
    # Signed before the board is interrupted: a missing key or a bad bundle leaves it running.
    signed, _ = signing.signed_bundle(signing.load(keys), read_bundle(path), str(path), supersedes)
    transport = _open(port)
    try:
        identity = _call(transport, "identity()")
        if len(identity) != 3 or identity[0] != "IDENTITY":
            raise MicrofangError(f"{port}: the board is not running the microfang firmware (no booted board)")
        device = identity[1]
        staged = _call(transport, "stage()")
        if len(staged) != 3 or staged[0] != "STAGE":
            raise MicrofangError(f"{device}: unexpected answer from the board: {' '.join(staged)!r}")
        transport.fs_writefile(staged[2], signed, progress_callback=progress)
        status = _call(transport, f"install({staged[1]!r})")
    finally:
        try:
            transport.exec_raw_no_follow(_MAIN + "if _mf.BOARD:\n    _mf.run()")  # the board goes on, with or without the new agent
        finally:
            transport.close()
    if status[:1] == ["REFUSED"]:
        raise MicrofangError(f"{device}: refused: {' '.join(status[1:])}")
    if status[:1] != ["INSTALLED"] or len(status) < 4:
        raise MicrofangError(f"{device}: unexpected answer from the board: {' '.join(status)[-200:]!r}")
    return Installed(device, status[1], int(status[2]), status[3], status[4:])
