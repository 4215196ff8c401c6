"""Simulated boards for tests: real firmware modules on CPython, each with its own flash."""

from __future__ import annotations

import asyncio

from microfang.firmware.blockdev import RAMBlockDevice
from microfang.firmware.board import Board
from microfang.firmware.port import Flash


class Recorder:
    def __init__(self) -> None:
        self.seen: list[tuple[str, str, str]] = []

    def __call__(self, agent_id: str, kind: str, text: str) -> None:
        self.seen.append((agent_id, kind, text))

    def texts(self, agent_id: str, kind: str) -> list[str]:
        return [t for a, k, t in self.seen if a == agent_id and k == kind]


def make_board(device: str, key: bytes, port: int, flash: Flash | None = None, clock=None, sensors=None,
               **config: object) -> tuple[Board, Recorder]:
    rec = Recorder()
    flash = flash or Flash(RAMBlockDevice(4096, 32), "/" + device)
    cfg = {"device": device, "fleet": "test", "key": key, "host": "127.0.0.1", "port": port, "keepalive": 10,
           "telemetry_ms": 200, **config}
    if clock is None:
        return Board(cfg, flash, report=rec, sensors=sensors), rec
    return Board(cfg, flash, report=rec, clock=clock, sensors=sensors), rec


async def wait_until(check, seconds: float = 10.0) -> bool:
    """Poll `check()` every 20 ms until it is true (True) or `seconds` pass (False)."""
    deadline = asyncio.get_running_loop().time() + seconds
    while asyncio.get_running_loop().time() < deadline:
        if check():
            return True
        await asyncio.sleep(0.02)
    return False
