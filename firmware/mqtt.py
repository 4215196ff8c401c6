# A small asyncio MQTT 3.1.1 client for the board (MicroPython) and the simulator (CPython).
#
# What a board needs and no more: CONNECT with a last will, keepalive pings, SUBSCRIBE,
# PUBLISH at QoS 0/1 both ways with PUBACK, and a clean DISCONNECT. Packets are built in
# one buffer each and written with a single write() so the broker sees whole packets
# (and TCP_NODELAY sends them at once: FACTS.md "Nagle stall").
#
# The client does not reconnect by itself: Link (link.py) owns the retry policy and the
# durable outbox, and simply makes a new MQTTClient after a failure.

import struct

from . import port
from .errors import MicrofangError

_CONNECT = 0x10
_CONNACK = 0x20
_PUBLISH = 0x30
_PUBACK = 0x40
_SUBSCRIBE = 0x82
_SUBACK = 0x90
_PINGREQ = 0xC0
_PINGRESP = 0xD0
_DISCONNECT = 0xE0
_MAX_PACKET = 64 * 1024  # larger packets are refused: a board cannot hold them


class MQTTError(MicrofangError):
    """The broker refused us, or the connection broke."""


def _varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _str(s):
    raw = s.encode("utf-8") if isinstance(s, str) else s
    return struct.pack(">H", len(raw)) + raw


def _packet(first, body):
    return bytes([first]) + _varint(len(body)) + body


class MQTTClient:
    """One MQTT connection. `on_message(topic, payload)` is called for each PUBLISH received;
    `on_puback(packet_id)` when the broker acknowledges one of our QoS 1 publishes."""

    def __init__(self, client_id, host, port=1883, keepalive=30, will=None, user=None, password=None, tls=False,
                 cafile=None):
        self.client_id = client_id
        self.host = host
        self.port = port
        self.keepalive = keepalive
        self.will = will  # (topic, payload, retain) published by the broker if we vanish
        self.user = user
        self.password = password
        self.tls = tls
        self.cafile = cafile
        self.on_message = None
        self.on_puback = None
        self.on_busy = None  # coroutine function awaited when on_message cannot take a message yet
        self._reader = None
        self._writer = None
        self._next_id = 0
        self.connected = False

    def next_packet_id(self):
        self._next_id = self._next_id % 65535 + 1
        return self._next_id

    async def connect(self, clean_session=False, timeout_ms=5000):
        """Open the TCP connection and complete the MQTT handshake."""
        self._reader, self._writer = await port.open_connection(self.host, self.port, self.tls, timeout_ms, self.cafile)
        flags = 0 if not clean_session else 0x02
        payload = _str(self.client_id)
        if self.will is not None:
            topic, message, retain = self.will
            flags |= 0x04 | 0x08 | (0x20 if retain else 0)  # will, will QoS 1, will retain
            payload += _str(topic) + _str(message)
        if self.user is not None:
            flags |= 0x80
            payload += _str(self.user)
        if self.password is not None:
            flags |= 0x40
            payload += _str(self.password)
        body = _str("MQTT") + bytes([4, flags]) + struct.pack(">H", self.keepalive) + payload
        await self._send(_packet(_CONNECT, body))
        first, body = await port.wait_for(self._read_packet(), timeout_ms)
        if first != _CONNACK or len(body) != 2:
            raise MQTTError("expected CONNACK, got packet type %#x" % first)
        if body[1] != 0:
            reasons = {1: "protocol version", 2: "client id rejected", 3: "server unavailable",
                       4: "bad user name or password", 5: "not authorized"}
            raise MQTTError("broker refused the connection: %s" % reasons.get(body[1], body[1]))
        self.connected = True
        return bool(body[0] & 1)  # session present

    async def _send(self, data):
        if self._writer is None:
            raise MQTTError("not connected")
        self._writer.write(data)
        await self._writer.drain()

    async def _read_packet(self):
        try:
            return await self._read_packet_body()
        except EOFError:  # CPython's IncompleteReadError is one too
            raise MQTTError("connection closed by the broker")

    async def _read_packet_body(self):
        header = await self._reader.readexactly(1)
        length = 0
        shift = 0
        while True:
            b = (await self._reader.readexactly(1))[0]
            length |= (b & 0x7F) << shift
            if not b & 0x80:
                break
            shift += 7
            if shift > 21:
                raise MQTTError("malformed remaining length")
        if length > _MAX_PACKET:
            raise MQTTError("packet of %d bytes is over the %d byte limit" % (length, _MAX_PACKET))
        body = await self._reader.readexactly(length) if length else b""
        return header[0], body

    async def publish(self, topic, payload, qos=1, retain=False, packet_id=0, dup=False):
        """Send a PUBLISH; for QoS 1 returns the packet id whose PUBACK will follow."""
        first = _PUBLISH | (qos << 1) | (0x01 if retain else 0) | (0x08 if dup else 0)
        body = _str(topic)
        if qos:
            packet_id = packet_id or self.next_packet_id()
            body += struct.pack(">H", packet_id)
        await self._send(_packet(first, body + payload))
        return packet_id

    async def subscribe(self, topics, qos=1):
        body = struct.pack(">H", self.next_packet_id())
        for topic in topics:
            body += _str(topic) + bytes([qos])
        await self._send(_packet(_SUBSCRIBE, body))

    async def ping(self):
        await self._send(bytes([_PINGREQ, 0]))

    async def disconnect(self):
        try:
            await self._send(bytes([_DISCONNECT, 0]))
        except (OSError, MQTTError):
            pass
        self.close()

    def close(self):
        self.connected = False
        if self._writer is not None:
            try:
                self._writer.close()
            except OSError:
                pass
        self._writer = None

    async def run(self):
        """Read packets until the connection breaks (raises OSError/MQTTError then)."""
        while True:
            first, body = await self._read_packet()
            kind = first & 0xF0
            if kind == _PUBLISH:
                qos = (first >> 1) & 0x03
                n = struct.unpack_from(">H", body, 0)[0]
                topic = str(body[2 : 2 + n], "utf-8")
                pos = 2 + n
                packet_id = 0
                if qos:
                    packet_id = struct.unpack_from(">H", body, pos)[0]
                    pos += 2
                # The handler returns False when it cannot take the message yet: wait (and read
                # nothing more: TCP backpressure) rather than acknowledge and drop it.
                while self.on_message is not None and self.on_message(topic, body[pos:]) is False:
                    if self.on_busy is not None:
                        await self.on_busy()
                    else:
                        await port.sleep_ms(10)
                # Acknowledge after handing it on: the handler stored or queued it.
                if qos == 1:
                    await self._send(bytes([_PUBACK, 2]) + struct.pack(">H", packet_id))
            elif kind == _PUBACK:
                if self.on_puback is not None:
                    self.on_puback(struct.unpack(">H", body)[0])
            elif kind in (_SUBACK, _PINGRESP):
                pass
            else:
                raise MQTTError("unexpected packet type %#x" % first)
