"""`microfang run`: run agents locally in one supervisor and print what they do."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from rich.table import Table

from microfang import console
from microfang.firmware import bundle
from microfang.firmware.blockdev import FileBlockDevice, RAMBlockDevice
from microfang.firmware.errors import MicrofangError
from microfang.firmware.port import Flash
from microfang.firmware.supervisor import Supervisor
from microfang.responder import LocalResponder
from microfang.sensors import SimulatedSensors
from microfang.tools.build import build

_STYLES = {"event": "dim", "log": "white", "fault": "bold red", "state": "cyan", "request": "magenta", "publish": "green"}


def load_bundle(path: Path) -> bytes:
    """Read a .mfa bundle, building it first when given a manifest (.toml)."""
    if path.suffix == ".toml":
        out, summary = build(path)
        console.info(f"[dim]built {out} ({summary['bundle_bytes']} bytes)[/dim]")
        path = out
    try:
        data = path.read_bytes()
    except OSError as e:
        raise MicrofangError(f"{path}: cannot read: {e.strerror}") from None
    try:
        bundle.decode(data)
    except MicrofangError as e:
        raise MicrofangError(f"{path}: {e}") from None
    return data


def stats_table(supervisor: Supervisor) -> Table:
    table = Table(title="agents")
    for column in ("agent", "state", "events", "fuel used", "fuel left", "memory", "traps", "out of fuel", "restarts"):
        table.add_column(column, justify="left" if column in ("agent", "state") else "right")
    for agent_id, s in supervisor.stats().items():
        table.add_row(agent_id, s["state"], str(s["events"]), f"{s['fuel_used']:,}", f"{s['fuel']:,}",
                      f"{s['memory']:,}/{s['memory_cap']:,} B", str(s["traps"]), str(s["exhausted"]),
                      str(s["restarts"]))
    return table


FLASH_BLOCK = 4096
FLASH_BLOCKS = 64  # 256 KB: a small board's LittleFS partition


def open_flash(path: Path | None) -> Flash:
    """The board flash for a local run: a file image (kept across runs) or RAM."""
    if path is None:
        return Flash(RAMBlockDevice(FLASH_BLOCK, FLASH_BLOCKS))
    try:
        return Flash(FileBlockDevice(str(path), FLASH_BLOCK, FLASH_BLOCKS))
    except OSError as e:
        raise MicrofangError(f"{path}: cannot open flash image: {e.strerror}") from None


def run(paths: list[Path], seconds: float, events: bool = False, flash_path: Path | None = None) -> Supervisor:
    """Spawn the agents at `paths` and run them for `seconds`, printing their output."""
    start = time.monotonic()

    def report(agent_id: str, kind: str, text: str) -> None:
        style = _STYLES.get(kind, "white")
        console.out.print(f"[dim]{time.monotonic() - start:7.3f}[/dim] [bold]{agent_id:<10}[/bold] "
                          f"[{style}]{kind:<7}[/{style}] ", end="")
        console.out.print(text, markup=False, highlight=False)

    responder: LocalResponder | None = None

    def outbox(agent_id: str, kind: str, target: str, body: bytes, request_id: int) -> int:
        report(agent_id, kind, f"{target} #{request_id} ({len(body)} bytes)" if request_id else f"{target} ({len(body)} bytes)")
        if kind == "request" and responder is not None:
            return responder.answer(agent_id, target, body, request_id)
        return 0

    supervisor = Supervisor(report=report, outbox=outbox, sensors=SimulatedSensors(), trace_events=events,
                            flash=open_flash(flash_path))
    responder = LocalResponder(supervisor.post)
    bundles = [load_bundle(p) for p in paths]
    for data in bundles:
        supervisor.spawn(data)
    asyncio.run(supervisor.run(int(seconds * 1000)))
    console.out.print(stats_table(supervisor))
    return supervisor
