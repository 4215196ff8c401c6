"""Simulated boards for tests: real firmware modules on CPython, each with its own flash."""

from __future__ import annotations

import asyncio

from microfang.firmware.blockdev import RAMBlockDevice
from microfang.firmware.board import Board
from microfang.firmware.port import Flash
from signing_keys import board_trust


class Recorder:
    def __init__(self) -> None:
        self.seen: list[tuple[str, str, str]] = []

    def __call__(self, agent_id: str, kind: str, text: str) -> None:
        self.seen.append((agent_id, kind, text))

    def texts(self, agent_id: str, kind: str) -> list[str]:
        return [t for a, k, t in self.seen if a == agent_id and k == kind]


def make_board(device: str, key: bytes, port: int, flash: Flash | None = None, clock=None, sensors=None,
               **config: object) -> tuple[Board, Recorder]:
    """`sensors`: a callable (agent_id, channel) -> reading, or a table of channels that goes to
    the board's config as /config.cbor "sensors" (firmware/sensors.py) does. The board trusts
    the operator's key (signing_keys.OPERATOR) unless `config` says otherwise."""
    if sensors is not None and not callable(sensors):
        config["sensors"], sensors = sensors, None
    rec = Recorder()
    flash = flash or Flash(RAMBlockDevice(4096, 32), "/" + device)
    cfg = {"device": device, "fleet": "test", "key": key, "host": "127.0.0.1", "port": port, "keepalive": 10,
           "telemetry_ms": 200, **board_trust(), **config}
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


def agent_replies(port: int, tmp_path, data: bytes, expect: int, *, agent: str = "chain", registered=None,
                  settings: dict | None = None, then=None, seconds: float = 20.0, **board_config: object):
    """One board running bundle `data` against a gateway (with `settings` services) on the
    broker at `port`, until the agent's memory log holds `expect` replies (agents.request_chain
    appends each reply there). `registered`: the manifest the host installed (None: none).
    `then(gw, services)`, awaited before the gateway closes, may inspect them. Returns (replies, audit
    actions, what `then` returned)."""
    from microfang.firmware import cbor
    from microfang.gateway import Gateway, Router
    from microfang.config import GatewaySettings
    from microfang.gateway.services import Services

    db = tmp_path / "gw.db"

    async def scenario():
        async with Gateway(broker=f"mqtt://127.0.0.1:{port}", db=db, router=Router(), quiet=True) as gw:
            async with Services(gw, GatewaySettings(db=db, **(settings or {}))) as services:
                board, _ = make_board("b1", gw.add_device("b1", fleet="test"), port, **board_config)
                if registered is not None:
                    gw.store.register_manifest("b1", registered)
                board.spawn(data)
                run = asyncio.create_task(board.run(int(seconds * 1000)))
                log = board.supervisor.log(agent)
                await wait_until(lambda: log.last_seq >= expect, seconds)
                board.stop()
                await run
                extra = None if then is None else await then(gw, services)
                audit = [r[0] for r in gw.store.db.execute("SELECT action FROM audit ORDER BY n")]
                return [cbor.loads(p) for _, p in log.records()], audit, extra

    return asyncio.run(scenario())
