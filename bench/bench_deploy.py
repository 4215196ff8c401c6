"""Deploy and migration benchmarks through a real Mosquitto on 127.0.0.1, side by side in one run.

1. OTA deploy of a 4 KB and a 64 KB bundle to a simulated board (the real firmware on CPython):
   `microfang deploy` queues the job, the gateway sends it in 4 KB chunks, the board stages each
   on flash, verifies, swaps and starts the agent and reports. Measured: time from queueing to
   the board's report, and MQTT payload bytes on the wire both ways (topics + payloads, seen by
   a subscriber on mf/#). Baseline: a plain retained QoS 1 publish of the same signed bytes from
   one paho client to another (no verification, no flash, no acknowledgements per chunk).
   The same deploys to a MicroPython board at the ESP32 heap (microfang's unix port, 110 KB):
   the time, or the reason the board refused (a 64 KB agent's memory does not fit 110 KB).
2. Migration: the hello example moves between two boards; downtime is the time its events
   stop (from the snapshot command to the target's confirmation), as the gateway measures it.

Usage: python bench/bench_deploy.py [--quick]; results go to bench/results/deploy.json.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from brokers import Mosquitto  # noqa: E402
from fleet import make_board  # noqa: E402
from helpers import agent_wat, build_bundle  # noqa: E402
from results_file import save  # noqa: E402
from signing_keys import K1, OPERATOR, board_trust  # noqa: E402

from microfang.deploy import queue_deploy, queue_migrate, wait  # noqa: E402
from microfang.firmware.blockdev import RAMBlockDevice  # noqa: E402
from microfang.firmware.port import Flash  # noqa: E402
from microfang.gateway import Gateway  # noqa: E402
from microfang.tools.build import build  # noqa: E402


def padded_bundle(size: int, version: int, heap_kb: int = 64) -> bytes:
    """A bundle of about `size` bytes: a log-once agent whose data segment fills the rest."""
    filler = max(0, size - 700)  # the rest of the bundle: manifest, code, CBOR framing
    wat = agent_wat(f"""
      (data (i32.const 64) "{'x' * filler}")
      (func (export "mf_on_event") (param i32 i32 i32) (result i32) (i32.const 0))""")
    return build_bundle(wat, **{"agent.version": version, "sandbox.agent_id": "payload",
                                "sandbox.memory.max_heap_kb": heap_kb})


class Sniffer:
    """Counts MQTT topic + payload bytes under mf/# while enabled."""

    def __init__(self, port: int) -> None:
        self.bytes = 0
        self.messages = 0
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-sniffer")
        self.client.on_message = self._count
        self.client.connect("127.0.0.1", port)
        self.client.subscribe("mf/#", qos=0)
        self.client.loop_start()

    def _count(self, client: mqtt.Client, userdata: object, message: mqtt.MQTTMessage) -> None:
        self.bytes += len(message.topic) + len(message.payload)
        self.messages += 1

    def reset(self) -> None:
        self.bytes = self.messages = 0

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def plain_publish(port: int, payload: bytes, reps: int) -> dict:
    """Retained QoS 1 publish of `payload`, publisher to subscriber, timed per delivery."""
    got = threading.Event()
    sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-plain-sub")
    sub.on_message = lambda c, u, m: got.set()
    sub.connect("127.0.0.1", port)
    sub.socket().setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sub.loop_start()
    pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-plain-pub")
    pub.connect("127.0.0.1", port)
    pub.socket().setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    pub.loop_start()
    times = []
    for n in range(reps):
        topic = f"bench/plain/{len(payload)}/{n}"
        sub.subscribe(topic, qos=1)
        time.sleep(0.05)
        got.clear()
        start = time.perf_counter()
        pub.publish(topic, payload, qos=1, retain=True)
        got.wait(10)
        times.append((time.perf_counter() - start) * 1000)
        pub.publish(topic, b"", qos=1, retain=True)  # clear the retained message
    for c in (pub, sub):
        c.loop_stop()
        c.disconnect()
    return {"ms": statistics.median(times), "bytes": len(topic) + len(payload)}


async def deploy_runs(port: int, db: Path, tmp: Path, sizes: list[int], reps: int) -> dict:
    results = {}
    async with Gateway(broker=f"mqtt://127.0.0.1:{port}", db=db, quiet=True) as gw:
        key = gw.add_device("ota1", fleet="bench")
        flash = Flash(RAMBlockDevice(4096, 128), "/ota1")
        board, _ = make_board("ota1", key, port, flash=flash, fleet="bench")
        run = asyncio.create_task(board.run(None))
        while not gw.devices["ota1"].get("online"):
            await asyncio.sleep(0.02)
        sniffer = Sniffer(port)
        version = 0
        try:
            for size in sizes:
                times, wire = [], []
                for _ in range(reps):
                    version += 1
                    path = tmp / f"payload-{version}.mfa"
                    path.write_bytes(padded_bundle(size, version))
                    await asyncio.sleep(0.2)
                    sniffer.reset()
                    start = time.perf_counter()
                    await asyncio.to_thread(wait, db, queue_deploy(db, path, ["ota1"]), 60)
                    times.append((time.perf_counter() - start) * 1000)
                    await asyncio.sleep(0.2)  # the last acknowledgements reach the sniffer
                    wire.append(sniffer.bytes)
                signed = OPERATOR.sign(path.read_bytes())
                results[size] = {"bundle_bytes": len(signed), "ms": statistics.median(times),
                                 "wire_bytes": statistics.median(wire), "signed": signed}
        finally:
            sniffer.close()
            board.stop()
            await run
    return results


async def micropython_runs(port: int, db: Path, tmp: Path, sizes: list[int], reps: int) -> dict:
    """The same deploys to a MicroPython board at the ESP32 heap (microfang's unix port, 110 KB),
    each agent's linear memory just above its data: the time, or the board's refusal."""
    from boards_runtime import RunningBoard

    from microfang.boards import PROFILES
    from microfang.gateway.jobs import JobsFailed
    from microfang.tools import portbuild

    micropython = portbuild.build_unix(lambda line: None)
    results = {}
    async with Gateway(broker=f"mqtt://127.0.0.1:{port}", db=db, quiet=True) as gw:
        config = {"device": "mpota", "fleet": "bench", "key": gw.add_device("mpota", fleet="bench"),
                  "host": "127.0.0.1", "port": port, **board_trust()}
        board = await RunningBoard("micropython", config, tmp, [], micropython).start()
        try:
            while not gw.devices["mpota"].get("online"):
                await asyncio.sleep(0.02)
            version = 0
            for size in sizes:
                times, refused = [], None
                for _ in range(reps):
                    version += 1
                    path = tmp / f"mp-payload-{version}.mfa"
                    path.write_bytes(padded_bundle(size, version, heap_kb=size // 1024 + 1))
                    start = time.perf_counter()
                    try:
                        await asyncio.to_thread(wait, db, queue_deploy(db, path, ["mpota"]), 120)
                    except JobsFailed as e:
                        refused = e.jobs[0]["detail"]
                        break
                    times.append((time.perf_counter() - start) * 1000)
                results[f"{size // 1024}KB"] = {"heap": PROFILES["esp32"].heapsize_arg(),
                                                "ms": statistics.median(times) if times else None,
                                                "refused": refused}
        finally:
            await board.stop()
    return results


async def migration_runs(port: int, db: Path, tmp: Path, reps: int) -> list[float]:
    hello, _ = build(ROOT / "tools" / "sdk" / "examples" / "hello" / "agent.toml", tmp / "hello.mfa")
    downtimes = []
    async with Gateway(broker=f"mqtt://127.0.0.1:{port}", db=db, quiet=True) as gw:
        boards = []
        for name in ("mig1", "mig2"):
            key = gw.add_device(name, fleet="bench")
            boards.append(make_board(name, key, port, fleet="bench")[0])
        runs = [asyncio.create_task(b.run(None)) for b in boards]
        while not all(gw.devices[n].get("online") for n in ("mig1", "mig2")):
            await asyncio.sleep(0.02)
        await asyncio.to_thread(wait, db, queue_deploy(db, hello, ["mig1"]), 60)  # signed: only that moves
        for n in range(reps):
            source, target = ("mig1", "mig2") if n % 2 == 0 else ("mig2", "mig1")
            jobs = await asyncio.to_thread(wait, db, queue_migrate(db, "hello", source, target), 60)
            downtimes.append(float(re.search(r"agent stopped (\d+) ms", jobs[0]["detail"]).group(1)))
            await asyncio.sleep(0.5)
        for b in boards:
            b.stop()
        await asyncio.gather(*runs)
    return downtimes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="one run per size")
    args = parser.parse_args()
    os.environ["MICROFANG_SIGNING_KEY"] = K1.hex()  # the bench's own operator key, never the real keyring
    reps = 1 if args.quick else 3
    sizes = [4 * 1024, 64 * 1024]
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        broker = Mosquitto(tmp).start()
        try:
            ota = asyncio.run(deploy_runs(broker.port, tmp / "gw.db", tmp, sizes, reps))
            rows = {}
            for size in sizes:
                plain = plain_publish(broker.port, ota[size].pop("signed"), reps)
                o = ota[size]
                row = {**o, "plain_ms": plain["ms"], "plain_bytes": plain["bytes"],
                       "time_ratio": o["ms"] / plain["ms"], "bytes_ratio": o["wire_bytes"] / plain["bytes"]}
                rows[f"{size // 1024}KB"] = row
                print(f"OTA {size // 1024} KB ({o['bundle_bytes']:,} B signed): {o['ms']:.0f} ms, "
                      f"{o['wire_bytes']:,.0f} B on the wire | plain retained publish: {plain['ms']:.1f} ms, "
                      f"{plain['bytes']:,} B -> {row['time_ratio']:.1f}x the time, {row['bytes_ratio']:.2f}x the bytes")
            on_micropython = asyncio.run(micropython_runs(broker.port, tmp / "gw-mp.db", tmp, sizes, reps))
            for name, row in on_micropython.items():
                print(f"OTA {name} to MicroPython at -X {row['heap']}: " +
                      (f"{row['ms']:.0f} ms" if row["ms"] is not None else f"refused: {row['refused']}"))
            downtimes = asyncio.run(migration_runs(broker.port, tmp / "gw-mig.db", tmp, 2 if args.quick else 6))
            print(f"migration downtime (hello, CPython boards): median {statistics.median(downtimes):.0f} ms, "
                  f"max {max(downtimes):.0f} ms over {len(downtimes)} moves")
        finally:
            broker.stop()
    save("deploy", ota=rows, ota_micropython_esp32=on_micropython, migration_downtime_ms=downtimes)


if __name__ == "__main__":
    main()
