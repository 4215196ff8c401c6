"""`microfang run`: run agents locally in one supervisor; what they do goes to a report
callback (cli.py prints it)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

from microfang.firmware import bundle
from microfang.firmware.blockdev import FileBlockDevice, RAMBlockDevice
from microfang.firmware.errors import MicrofangError
from microfang.firmware.port import Flash
from microfang.firmware.supervisor import Supervisor
from microfang.responder import LocalResponder
from microfang.sensors import SimulatedSensors
from microfang.tools.build import build

Report = Callable[[float, str, str, str], None]  # (seconds since start, agent id, kind, text)
Built = Callable[[Path, dict], None]  # (bundle written, build summary)


def load_bundle(path: Path, built: Built | None = None) -> bytes:
    """Read a .mfa bundle, building it first when given a manifest (.toml)."""
    if path.suffix == ".toml":
        out, summary = build(path)
        if built is not None:
            built(out, summary)
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


def run(paths: list[Path], seconds: float, report: Report, events: bool = False, flash_path: Path | None = None,
        built: Built | None = None) -> Supervisor:
    """Spawn the agents at `paths` and run them for `seconds`; their logs, faults, state
    changes, requests and publishes (and with `events` every event) go to `report`. Returns
    the supervisor (its stats() are the run's figures)."""
    start = time.monotonic()

    def report_now(agent_id: str, kind: str, text: str) -> None:
        report(time.monotonic() - start, agent_id, kind, text)

    responder: LocalResponder | None = None

    def outbox(agent_id: str, kind: str, target: str, body: bytes, request_id: int) -> int:
        report_now(agent_id, kind, f"{target} #{request_id} ({len(body)} bytes)" if request_id else
                   f"{target} ({len(body)} bytes)")
        if kind == "request" and responder is not None:
            return responder.answer(agent_id, target, body, request_id)
        return 0

    supervisor = Supervisor(report=report_now, outbox=outbox, sensors=SimulatedSensors(), trace_events=events,
                            flash=open_flash(flash_path))
    responder = LocalResponder(supervisor.post)
    bundles = [load_bundle(p, built) for p in paths]
    for data in bundles:
        supervisor.spawn(data)
    asyncio.run(supervisor.run(int(seconds * 1000)))
    return supervisor
