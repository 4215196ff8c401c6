"""Boards on the wire, cheaply: a load generator for the gateway benches.

Each emulated board is what the gateway sees of a real one: its own MQTT connection (one TCP
socket, client id = device name), its own device key, envelopes sealed with it
(firmware/envelope.py, the board's own code), QoS 1 publishes acknowledged both ways, replies
opened and verified as the board's link does. What it leaves out is the board itself (no wasm,
no flash): a few hundred bytes of MQTT framing written here instead of paho, and CBOR in C
(the gateway's fastcbor: firmware/cbor.py's exact bytes, tests/test_fastcbor.py), so one
process drives thousands of boards and the bench measures the gateway, not the simulator
(on two cores, the pure-Python codec made the boards cost about a third of the gateway). The firmware
simulator (sim.py, tests/fleet.py) stays the reference for fidelity.

    async with Fleet(port, boards={"b00001": key, ...}, fleet="bench") as fleet:
        await fleet.run(rate=0.2, seconds=10)        # requests per second per board
        fleet.stats()                                # asked, answered, p50/p99 ms, duplicates
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import random
import socket
import struct
import time
from typing import Any

from microfang.firmware import envelope, protocol
from microfang.gateway import fastcbor

CONNECT, CONNACK, PUBLISH, PUBACK, SUBSCRIBE, SUBACK = 1, 2, 3, 4, 8, 9


def _text(value: str) -> bytes:
    data = value.encode()
    return struct.pack(">H", len(data)) + data


def _packet(kind: int, flags: int, body: bytes) -> bytes:
    length, head = len(body), bytearray()
    while True:
        byte, length = length % 128, length // 128
        head.append(byte | (0x80 if length else 0))
        if not length:
            break
    return bytes([kind << 4 | flags]) + bytes(head) + body


async def _read_packet(reader: asyncio.StreamReader) -> tuple[int, int, bytes]:
    first = (await reader.readexactly(1))[0]
    length, shift = 0, 0
    while True:
        byte = (await reader.readexactly(1))[0]
        length |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            break
    return first >> 4, first & 0x0F, await reader.readexactly(length)


class WireBoard:
    """One board: request/reply on up/{agent} and down/{agent}, telemetry on tele."""

    def __init__(self, device: str, key: bytes, fleet: str, agent: str = "a1") -> None:
        self.device, self.key, self.fleet, self.agent = device, key, fleet, agent
        self.seq = 0
        self.next_id = 0
        self._mid = 0
        self.asked: dict[int, float] = {}  # request id -> when sent
        self.rtt_ms: list[float] = []
        self.answered: set[int] = set()
        self.down = envelope.ReplayWindow()  # envelopes taken, by sequence number, as the board's link keeps
        self.redelivered = 0  # the same envelope again (QoS 1 is at least once): the link drops it
        self.duplicates = 0  # a second answer to a request: what exactly-once forbids
        self.bad = 0
        self._writer: asyncio.StreamWriter | None = None
        self._reader_task: asyncio.Task | None = None
        self._subscribed = asyncio.Event()

    def _next_mid(self) -> int:
        self._mid = self._mid % 65535 + 1
        return self._mid

    async def connect(self, port: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        # MQTT 3.1.1, clean session, no keepalive (the bench is short and the board never idle)
        writer.write(_packet(CONNECT, 0, _text("MQTT") + bytes([4, 0x02]) + struct.pack(">H", 0) + _text(self.device)))
        kind, _, body = await _read_packet(reader)
        if kind != CONNACK or body[1] != 0:
            raise ConnectionError(f"{self.device}: broker refused the connection ({body!r})")
        down = protocol.topic(self.fleet, self.device, protocol.DOWN, self.agent)
        writer.write(_packet(SUBSCRIBE, 2, struct.pack(">H", self._next_mid()) + _text(down) + b"\x01"))
        self._writer = writer
        self._reader_task = asyncio.create_task(self._read(reader))
        await self._subscribed.wait()

    def _publish(self, topic: str, payload: bytes) -> None:
        assert self._writer is not None
        self._writer.write(_packet(PUBLISH, 2, _text(topic) + struct.pack(">H", self._next_mid()) + payload))

    def _seal(self, kind: str, body: Any) -> bytes:
        self.seq += 1
        return envelope.seal(self.key, self.device, self.seq, self.agent, kind, body, int(time.time() * 1000),
                             codec=fastcbor)

    def ask(self) -> None:
        """One echo request."""
        self.next_id += 1
        self.asked[self.next_id] = time.perf_counter()
        body = {"id": self.next_id, "kind": "echo", "body": b"\xf6"}
        self._publish(protocol.topic(self.fleet, self.device, protocol.UP, self.agent),
                      self._seal(protocol.K_REQUEST, body))

    def telemetry(self) -> None:
        self._publish(protocol.topic(self.fleet, self.device, protocol.TELE),
                      self._seal(protocol.K_TELE, {"uptime_ms": 1, "agents": {}}))

    async def _read(self, reader: asyncio.StreamReader) -> None:
        assert self._writer is not None
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                kind, flags, body = await _read_packet(reader)
                if kind == SUBACK:
                    self._subscribed.set()
                elif kind == PUBLISH:
                    size = struct.unpack(">H", body[:2])[0]
                    start = 2 + size
                    if flags & 0x06:  # QoS 1: acknowledge it, as the board's link does
                        self._writer.write(_packet(PUBACK, 0, body[start:start + 2]))
                        start += 2
                    self._on_reply(body[start:])

    def _on_reply(self, payload: bytes) -> None:
        try:
            doc = envelope.open_envelope(payload, lambda dev: self.key if dev == self.device else None,
                                         codec=fastcbor)
            request_id = doc["body"]["id"]
        except (envelope.EnvelopeError, KeyError, TypeError):
            self.bad += 1
            return
        if not self.down.accept(doc["seq"]):
            self.redelivered += 1
            return
        sent = self.asked.pop(request_id, None)
        if sent is None:
            self.duplicates += request_id in self.answered
            return
        self.answered.add(request_id)
        self.rtt_ms.append((time.perf_counter() - sent) * 1000)

    async def close(self) -> None:
        if self._reader_task is not None:
            self._reader_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader_task
        if self._writer is not None:
            self._writer.write(bytes([0xE0, 0]))  # DISCONNECT
            self._writer.close()


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p))] if ordered else float("nan")


class Fleet:
    """`boards`: device -> key, all in `fleet`; connected on entry (a few hundred at a time)."""

    def __init__(self, port: int, boards: dict[str, bytes], fleet: str) -> None:
        self.port = port
        self.boards = [WireBoard(device, key, fleet) for device, key in boards.items()]

    async def __aenter__(self) -> Fleet:
        for i in range(0, len(self.boards), 200):
            await asyncio.gather(*(b.connect(self.port) for b in self.boards[i:i + 200]))
        return self

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.gather(*(b.close() for b in self.boards))

    async def run(self, rate: float, seconds: float, settle_s: float = 2.0, telemetry_every: int = 0) -> None:
        """Each board asks `rate` times a second (phases spread at random) for `seconds`, then
        up to `settle_s` for the last replies. `telemetry_every`: a telemetry message every N
        requests."""
        period = 1.0 / rate
        start = time.perf_counter()
        due = [(start + random.random() * period, i) for i in range(len(self.boards))]
        heapq.heapify(due)
        ticks = 0
        while due and due[0][0] < start + seconds:
            when, i = heapq.heappop(due)
            delay = when - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            self.boards[i].ask()
            ticks += 1
            if telemetry_every and ticks % telemetry_every == 0:
                self.boards[i].telemetry()
            heapq.heappush(due, (when + period, i))
        deadline = time.perf_counter() + settle_s
        while time.perf_counter() < deadline and any(b.asked for b in self.boards):
            await asyncio.sleep(0.05)

    async def window(self, total: int, window: int) -> float:
        """Keep `window` requests in flight per board until `total` have been answered in all;
        returns the seconds it took."""
        start = time.perf_counter()
        for board in self.boards:
            for _ in range(window):
                board.ask()
        per_board = total // len(self.boards)
        while sum(len(b.answered) for b in self.boards) < per_board * len(self.boards):
            await asyncio.sleep(0.001)
            for board in self.boards:
                missing = window - len(board.asked)
                for _ in range(min(missing, per_board - board.next_id)):
                    board.ask()
            if time.perf_counter() - start > 120:
                break
        return time.perf_counter() - start

    def stats(self) -> dict[str, Any]:
        rtts = [r for b in self.boards for r in b.rtt_ms]
        asked = sum(b.next_id for b in self.boards)
        answered = sum(len(b.answered) for b in self.boards)
        return {"boards": len(self.boards), "asked": asked, "answered": answered, "lost": asked - answered,
                "duplicates": sum(b.duplicates for b in self.boards), "bad": sum(b.bad for b in self.boards),
                "redelivered": sum(b.redelivered for b in self.boards),
                "p50_ms": percentile(rtts, 0.5), "p99_ms": percentile(rtts, 0.99)}

