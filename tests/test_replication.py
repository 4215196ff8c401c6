"""Memory-log replication keeps up (firmware/replicator.py): an agent within its budget appending
50 records a second to a 4 KiB log never sees E_FULL while the gateway is reachable, on both
runtimes (MicroPython at the ESP32 heap), against a real Mosquitto and the gateway; the
gateway's replica holds every record once, in order. Before, 16 records went up per telemetry
tick (5 s): this log filled in about 3 s."""

from __future__ import annotations

import asyncio
import struct
import time

from pathlib import Path

import pytest
from agents import appender
from boards_runtime import RUNTIMES, RunningBoard
from fleet import wait_until

from microfang.firmware.bundle import decode

RATE = 50  # records a second, the goal
SECONDS = 8

APPENDER = appender(every_ms=10, log_kb=4)  # the timer (10 ms, the shortest) asks for more than the goal


async def replication_run(runtime: str, broker_port: int, folder: Path, micropython: Path | None,
                          seconds: float = SECONDS, bundle: bytes = APPENDER) -> tuple[float, list, list[str]]:
    """One board of `runtime` running the appender against a gateway on the broker at
    `broker_port` for `seconds` after its first records arrive: (records/s replicated, the
    gateway's replica, the board's lines). bench/bench_replication.py runs it too."""
    from microfang.gateway import Gateway

    async with Gateway(broker=f"mqtt://127.0.0.1:{broker_port}", db=folder / f"{runtime}.db", quiet=True) as gw:
        gw.store.register_manifest("b1", decode(bundle)[0])
        config = {"device": "b1", "fleet": "test", "key": gw.add_device("b1", fleet="test"), "host": "127.0.0.1",
                  "port": broker_port, "telemetry_ms": 5000}
        board = await RunningBoard(runtime, config, folder, [bundle], micropython).start()
        try:
            assert await wait_until(lambda: gw.store.replica("b1", "appender"), 30), board.lines()
            started, first = time.monotonic(), len(gw.store.replica("b1", "appender"))
            await asyncio.sleep(seconds)
            took, held = time.monotonic() - started, len(gw.store.replica("b1", "appender"))
        finally:
            lines = await board.stop()
        return (held - first) / took, gw.store.replica("b1", "appender"), lines


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_an_agent_appending_50_records_a_second_never_fills_its_log_while_the_gateway_is_reachable(
        runtime, mosquitto, tmp_path, micropython):
    rate, replica, lines = asyncio.run(replication_run(runtime, mosquitto.port, tmp_path, micropython))
    print(f"{runtime}: {rate:.1f} records/s replicated")
    assert not [ln for ln in lines if "mem_append" in ln], [ln for ln in lines if "mem_append" in ln][:3]
    assert [seq for seq, _ in replica] == list(range(1, len(replica) + 1))
    assert [struct.unpack_from("<I", payload)[0] for _, payload in replica] == list(range(1, len(replica) + 1))
    assert rate >= RATE, rate  # the agent appended (and the link replicated) at least at the goal
