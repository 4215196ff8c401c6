"""The fleet bench's flood phase: one broker client floods the gateway while a quiet board on
the wire asks one echo request at a time and /healthz is polled.

Side by side in one run: the quiet board's round trips alone, then while another client
floods, first with garbage on a registered board's topic, then with replays of one request the
noisy board really signed (dropped by the replay check), then with fresh requests the noisy
board signs, each a new sequence number, over its agent's registered rate limit of 1 request/s
(refused at intake: an error reply each, no request row, audits in aggregate). Goal: the quiet
board's p50 within 2x of its p50 alone; /healthz prompt (its slowest answer is printed).

    python bench/fleet_flood.py      # this phase alone (bench_fleet.py --wire-only runs it too)
"""

from __future__ import annotations

import asyncio
import multiprocessing
import socket
import time
from typing import Any

import paho.mqtt.client as mqtt
from fleet_wire import register, start_gateway, stop
from loadgen import Fleet, percentile

from microfang.broker import free_port
from microfang.firmware import envelope
from microfang.gateway.store import Store

ASKS = 300  # the quiet board's requests per measurement, one at a time


def _flood(port: int, topic: str, payload: bytes | tuple[bytes, str], seconds: float, ready: Any) -> None:
    """A paho client publishing `payload` at QoS 1 as fast as it can for `seconds`; (key, device):
    a fresh echo request signed with the key each time, sequence numbers from 1000 up."""
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="flooder")
    client.max_inflight_messages_set(1000)
    client.max_queued_messages_set(0)
    client.connect("127.0.0.1", port)
    client.socket().setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    client.loop_start()
    ready.set()
    end = time.monotonic() + seconds
    seq = 1000
    while time.monotonic() < end:
        for _ in range(100):
            if isinstance(payload, tuple):
                seq += 1
                payload_now = envelope.seal(payload[0], payload[1], seq, "a1", "request",
                                            {"id": seq, "kind": "echo", "body": b"\xf6"})
            client.publish(topic, payload_now if isinstance(payload, tuple) else payload, qos=1)
        time.sleep(0)  # let paho's thread write
    client.loop_stop()
    client.disconnect()


async def _healthz(http: int) -> float:
    start = time.perf_counter()
    reader, writer = await asyncio.open_connection("127.0.0.1", http)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    await reader.read()
    writer.close()
    return (time.perf_counter() - start) * 1000


async def _quiet(port: int, keys: dict[str, bytes], http: int, first_seq: int, asks: int = ASKS) -> dict[str, Any]:
    """The quiet board's `asks` round trips (one in flight) with /healthz polled every 50 ms."""
    async with Fleet(port, keys, "bench") as fleet:
        board = fleet.boards[0]
        board.seq = first_seq
        board.next_id = first_seq
        health: list[float] = []

        async def poll() -> None:
            while True:
                health.append(await _healthz(http))
                await asyncio.sleep(0.05)

        poller = asyncio.create_task(poll())
        for _ in range(asks):
            board.ask()
            deadline = time.perf_counter() + 10
            while board.asked and time.perf_counter() < deadline:
                await asyncio.sleep(0.0002)
        poller.cancel()
        return {"asked": asks, "answered": len(board.rtt_ms), "p50_ms": percentile(board.rtt_ms, 0.5),
                "p99_ms": percentile(board.rtt_ms, 0.99), "healthz_max_ms": max(health, default=float("nan")),
                "healthz_p50_ms": percentile(health, 0.5)}


COUNTERS = {"microfang_messages_total": "messages", 'microfang_dropped_total{reason="over-quota"}': "over_quota",
            'microfang_dropped_total{reason="replay"}': "replays", 'microfang_dropped_total{reason="malformed"}':
            "malformed", "microfang_router_rate_limited_total": "rate_limited"}


def _counters(http: int) -> dict[str, int]:
    """The gateway's message counters (COUNTERS) from its /metrics."""
    import urllib.request

    text = urllib.request.urlopen(f"http://127.0.0.1:{http}/metrics", timeout=10).read().decode()
    found = dict.fromkeys(COUNTERS.values(), 0)
    for line in text.splitlines():
        metric, _, value = line.rpartition(" ")
        if metric in COUNTERS:
            found[COUNTERS[metric]] = int(float(value))
    return found


def flood_isolation(port: int, where: str) -> dict[str, Any]:
    keys = register(where, "quiet", 1)
    noisy = register(where, "noisy", 1)
    (noisy_name, noisy_key), = noisy.items()
    store = Store(where)  # the noisy agent's manifest as the host installed it: 1 request/s
    store.register_manifest(noisy_name, {"agent_id": "a1", "version": 1, "budgets": {"requests_per_s": 1},
                                         "permissions": {"allowed": ["request"], "denied": []}})
    store.set_agent(noisy_name, "a1", 1, {"requests_per_s": 1})
    store.close()
    http = free_port()
    gateway = start_gateway(port, where, "flood", http)
    topic = f"mf/bench/{noisy_name}/up/a1"
    refused = envelope.seal(noisy_key, noisy_name, 1, "a1", "request", {"id": 1, "kind": "echo", "body": b"\xf6"})
    floods: dict[str, bytes | tuple[bytes, str]] = {"garbage": b"\xff\x00garbage", "refused": refused,
                                                    "rate_limited": (noisy_key, noisy_name)}
    figures: dict[str, Any] = {}
    try:
        asyncio.run(_quiet(port, keys, http, 0, 100))  # warm-up: a fresh database, first connections
        figures["alone"] = asyncio.run(_quiet(port, keys, http, 100))
        ctx = multiprocessing.get_context("spawn")
        for n, (name, payload) in enumerate(floods.items(), 1):
            ready = ctx.Event()
            proc = ctx.Process(target=_flood, args=(port, topic, payload, 30.0, ready), daemon=True)
            proc.start()
            ready.wait(30)
            time.sleep(1)  # the flood under way
            before, start = _counters(http), time.monotonic()
            try:
                figures[name] = asyncio.run(_quiet(port, keys, http, 100 + n * ASKS))
                after, took = _counters(http), time.monotonic() - start
                # What the gateway took of the flood meanwhile: handled, and dropped over quota at intake.
                figures[name]["gateway_per_s"] = {k: round((after[k] - before[k]) / took) for k in after}
            finally:
                proc.terminate()
                proc.join(10)
            figures[name]["p50_vs_alone"] = figures[name]["p50_ms"] / figures["alone"]["p50_ms"]
    finally:
        stop([gateway])
    return figures


def report(figures: dict[str, Any]) -> None:
    alone = figures["alone"]
    print(f"quiet board alone: p50 {alone['p50_ms']:.2f} ms, p99 {alone['p99_ms']:.1f} ms, /healthz max "
          f"{alone['healthz_max_ms']:.1f} ms")
    for name in ("garbage", "refused", "rate_limited"):
        row = figures[name]
        print(f"  while another client floods ({name}): {row['answered']}/{row['asked']} answered, p50 "
              f"{row['p50_ms']:.2f} ms ({row['p50_vs_alone']:.2f}x alone, goal <= 2x), p99 {row['p99_ms']:.1f} ms, "
              f"/healthz p50 {row['healthz_p50_ms']:.1f} ms, max {row['healthz_max_ms']:.1f} ms; the gateway took "
              + ", ".join(f"{k} {v}/s" for k, v in row["gateway_per_s"].items() if v))


def main() -> None:
    import sys
    import tempfile
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from brokers import Mosquitto
    from results_file import save

    with tempfile.TemporaryDirectory() as tmp:
        broker = Mosquitto(Path(tmp)).start()
        try:
            figures = flood_isolation(broker.port, str(Path(tmp) / "flood.db"))
        finally:
            broker.stop()
    report(figures)
    save("fleet_flood", **figures)


if __name__ == "__main__":
    main()
