"""A broker that lies: an asyncio TCP server on 127.0.0.1 speaking just enough MQTT 3.1.1 for
one board (CONNACK, SUBACK, PUBACK, PINGRESP), which sends one chosen packet (a malformed one,
a poison message) right after the board's first SUBSCRIBE. It records what the board sends,
by connection, so a test can tell a reconnect from a counted drop."""

from __future__ import annotations

import asyncio
import struct


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def publish(topic: bytes | str, payload: bytes, packet_id: int | None = 7) -> bytes:
    """A PUBLISH packet: QoS 1 with `packet_id`, QoS 0 when it is None."""
    raw = topic.encode() if isinstance(topic, str) else topic
    body = struct.pack(">H", len(raw)) + raw + (b"" if packet_id is None else struct.pack(">H", packet_id)) + payload
    return bytes([0x30 if packet_id is None else 0x32]) + varint(len(body)) + body


class EvilBroker:
    """`bad`: bytes sent after the first SUBSCRIBE of the first connection (of every one with
    `again`: a persistent session redelivering an unacknowledged message); `pingresp`: False
    for a broker that never answers a PINGREQ on that connection."""

    def __init__(self, bad: bytes = b"", pingresp: bool = True, again: bool = False) -> None:
        self.bad = bad
        self.pingresp = pingresp
        self.again = again
        self.connections: list[list[tuple[int, bytes]]] = []  # per connection: (packet type, body) from the board
        self.changed = asyncio.Event()
        self.server: asyncio.base_events.Server | None = None
        self.port = 0

    async def __aenter__(self) -> EvilBroker:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()

    def pubacks(self, connection: int) -> list[int]:
        """Packet ids the board acknowledged on a connection (0-based)."""
        if connection >= len(self.connections):
            return []
        return [struct.unpack(">H", body)[0] for kind, body in self.connections[connection] if kind == 0x40]

    def count(self, connection: int, kind: int) -> int:
        if connection >= len(self.connections):
            return 0
        return sum(1 for k, _ in self.connections[connection] if k == kind)

    async def wait(self, check, seconds: float = 10.0) -> bool:
        """Until `check()` is true (True) or `seconds` pass (False)."""
        try:
            async with asyncio.timeout(seconds):
                while not check():
                    self.changed.clear()
                    await self.changed.wait()
        except TimeoutError:
            return False
        return True

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        number = len(self.connections)
        seen: list[tuple[int, bytes]] = []
        self.connections.append(seen)
        try:
            while True:
                first = (await reader.readexactly(1))[0]
                length, shift = 0, 0
                while True:
                    b = (await reader.readexactly(1))[0]
                    length |= (b & 0x7F) << shift
                    shift += 7
                    if not b & 0x80:
                        break
                body = await reader.readexactly(length)
                kind = first & 0xF0
                seen.append((kind, body))
                self.changed.set()
                if kind == 0x10:
                    writer.write(b"\x20\x02\x00\x00")
                elif kind == 0x80:
                    writer.write(b"\x90\x03" + body[:2] + b"\x01")
                    if number == 0 or self.again:
                        writer.write(self.bad)
                elif kind == 0x30 and first & 0x06:
                    writer.write(b"\x40\x02" + body[2 + struct.unpack(">H", body[:2])[0]:][:2])
                elif kind == 0xC0 and (self.pingresp or number > 0):
                    writer.write(b"\xd0\x00")
                elif kind == 0xE0:
                    break
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()
            self.changed.set()
