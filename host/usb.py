"""`microfang deploy BUNDLE --port PORT`: install an agent over USB with mpremote (as a library).

One mpremote session: Ctrl-C stops the board's loop (agents and their memory stay in the
REPL's `microfang.firmware.main.BOARD`), the signed bundle is copied to the board's flash, the
firmware's own installer verifies and starts it exactly as for a deploy over the air, the
agent's status is read back, and the loop is started again. PORT is anything mpremote opens:
/dev/ttyUSB0, COM3, socket://127.0.0.1:PORT.
"""

from __future__ import annotations

from pathlib import Path

from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn

from microfang import console
from microfang.deploy import read_bundle, signed_for
from microfang.firmware.errors import MicrofangError
from microfang.ops import open_store

_MAIN = "import microfang.firmware.main as _mf\n"
_STAGED = "/stage/usb.mfs"


def _open(port: str):  # noqa: ANN202 - mpremote's SerialTransport
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


def _run(transport, code: str) -> str:  # noqa: ANN001
    from mpremote.transport import TransportError, TransportExecError

    try:
        return transport.exec(_MAIN + code).decode().strip()
    except TransportExecError as e:
        lines = e.error_output.strip().splitlines()
        raise MicrofangError(f"the board failed: {lines[-1] if lines else e}") from None
    except TransportError as e:
        raise MicrofangError(f"the board stopped answering: {' '.join(str(e).split())}") from None


def deploy_usb(path: Path, port: str, db: Path) -> None:
    """Install a bundle on the board on `port`, signed with its fleet's key from the registry."""
    data = read_bundle(path)
    if not db.is_file():  # checked before the board is interrupted
        raise MicrofangError(f"{db}: no registry, and the fleet's signing key is kept there (pass --db)")
    transport = _open(port)
    try:
        identity = _run(transport, "print(_mf.BOARD.device if _mf.BOARD else '', "
                                   "_mf.BOARD.link.config.get('fleet', 'default') if _mf.BOARD else '')").split()
        if len(identity) != 2:
            raise MicrofangError(f"{port}: the board is not running the microfang firmware (no booted board)")
        device, fleet = identity
        store = open_store(db)
        try:
            signed, manifest = signed_for(store, fleet, data, path)
        finally:
            store.close()
        staged = _run(transport, f"_mf.BOARD.flash.makedirs('/stage'); print(_mf.BOARD.flash.vfs_path({_STAGED!r}))")
        with Progress(TextColumn(f"copying {path.name} to {device}"), BarColumn(), DownloadColumn(),
                      console=console.err_console, transient=True) as progress:
            bar = progress.add_task("copy", total=len(signed))
            transport.fs_writefile(staged, signed, progress_callback=lambda done, total: progress.update(bar, completed=done))
        result = _run(transport, f"_mf.install({_STAGED!r})")
    finally:
        try:
            transport.exec_raw_no_follow(_MAIN + "if _mf.BOARD:\n    _mf.run()")  # the board goes on, with or without the new agent
        finally:
            transport.close()
    status = result.splitlines()[-1] if result else ""
    if status.startswith("REFUSED "):
        raise MicrofangError(f"{device}: refused: {status[8:]}")
    if not status.startswith("INSTALLED "):
        raise MicrofangError(f"{device}: unexpected answer from the board: {result[-200:]!r}")
    _, agent, version, state, *figures = status.split()
    console.info(f"{device}: {agent} version {version} {state} ({', '.join(figures)})")
