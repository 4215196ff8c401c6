# A small asyncio MQTT 3.1.1 client for the board (MicroPython) and the simulator (CPython).
#
# What a board needs and no more: CONNECT with a last will, keepalive pings, SUBSCRIBE,
# PUBLISH at QoS 0/1 both ways with PUBACK, and a clean DISCONNECT. Packets are built in
# one buffer each and written with a single write() so the broker sees whole packets
# (and TCP_NODELAY sends them at once: FACTS.md "Nagle stall").
#
# The broker is not trusted (DESIGN.md 9): every packet it sends is checked here, and what
# is wrong costs the connection (MQTTError: Link reconnects) or, when the packet is whole
# and acknowledgeable, is acknowledged and dropped with a counted reason (on_drop), so that
# a poison message in a persistent session is not redelivered on every reconnect:
#   a PUBLISH over max_packet      read through in pieces, acknowledged, dropped "oversized"
#   a PUBLISH the heap cannot hold  (no block of its size free, even after a collection; or
#                                  its handler ran out of RAM twice) read through in pieces,
#                                  acknowledged, dropped "no_memory": a board short of RAM is
#                                  not sent the same message on every reconnect
#   a topic that is not UTF-8      acknowledged, dropped "malformed"
#   any other malformed packet     MQTTError (remaining length, short PUBLISH, PUBACK of the
#                                  wrong size, QoS 2, packet id 0, an unexpected type, ...)
#   a silent broker                overdue(): no PINGRESP within the deadline
#   a packet begun, never finished overdue(): not complete within read_timeout_ms
#   a peer that stops reading      a write not drained within read_timeout_ms
# overdue() is polled by the owner's loop (Link), which then drops the connection: no timer
# task per packet.
#
# The client does not reconnect by itself: Link (link.py) owns the retry policy and the
# durable outbox, and simply makes a new MQTTClient after a failure.

import gc
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
MAX_PACKET = 64 * 1024  # the default limit; Link passes the board's own
_SKIP = 512  # an oversized PUBLISH is read through in pieces of this size, never held whole
_REFUSED = {1: "protocol version", 2: "client id rejected", 3: "server unavailable",
            4: "bad user name or password", 5: "not authorized"}


class MQTTError(MicrofangError):
    """The broker refused us, sent something malformed, or the connection broke."""


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
    """One MQTT connection. `on_message(topic, payload)` is called for each PUBLISH received
    (it returns False when it cannot take the message yet: the client then awaits `on_busy()`
    and asks again); `on_puback(packet_id)` when the broker acknowledges one of our QoS 1
    publishes; `on_drop(reason, text)` for each message acknowledged and dropped here."""

    def __init__(self, client_id, host, port=1883, keepalive=30, will=None, user=None, password=None, tls=False,
                 cafile=None, on_message=None, on_puback=None, on_busy=None, on_drop=None, max_packet=MAX_PACKET,
                 read_timeout_ms=10000, clock=port.ticks_ms):
        self.client_id = client_id
        self.host = host
        self.port = port
        self.keepalive = keepalive
        self.will = will  # (topic, payload, retain) published by the broker if we vanish
        self.user = user
        self.password = password
        self.tls = tls
        self.cafile = cafile
        self.on_message = on_message
        self.on_puback = on_puback
        self.on_busy = on_busy
        self.on_drop = on_drop
        self.max_packet = max_packet
        self.read_timeout_ms = read_timeout_ms
        # A PINGRESP is due within half the keepalive: the owner pings every half keepalive,
        # so a silent broker is noticed before the broker itself would give up on us.
        self.ping_timeout_ms = max(keepalive * 1000 // 2, 1)
        self.clock = clock
        self._reader = None
        self._writer = None
        self._next_id = 0
        self._ping_sent = None  # when the unanswered PINGREQ went out
        self._packet_started = None  # when the first byte of a packet still being read came
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
            raise MQTTError("expected CONNACK, got packet type %#x of %d bytes" % (first, len(body)))
        if body[1] != 0:
            raise MQTTError("broker refused %s: %s" % ("login" if body[1] in (4, 5) else "the connection",
                                                       _REFUSED.get(body[1], body[1])))
        self.connected = True
        return bool(body[0] & 1)  # session present

    async def _send(self, data):
        if self._writer is None:
            raise MQTTError("not connected")
        self._writer.write(data)
        try:
            await port.wait_for(self._writer.drain(), self.read_timeout_ms)
        except port.asyncio.TimeoutError:
            raise MQTTError("the broker took no data for %d ms" % self.read_timeout_ms)

    # ---- reading ---------------------------------------------------------------------------

    async def _read(self, n):
        try:
            return await self._reader.readexactly(n)
        except EOFError:  # CPython's IncompleteReadError is one too
            raise MQTTError("connection closed by the broker")

    async def _read_packet(self):
        """The next packet the client keeps, as (first byte, body); an oversized PUBLISH is
        read through, acknowledged and dropped on the way."""
        while True:
            first = (await self._read(1))[0]
            self._packet_started = self.clock()
            length = 0
            shift = 0
            while True:
                b = (await self._read(1))[0]
                length |= (b & 0x7F) << shift
                if not b & 0x80:
                    break
                shift += 7
                if shift > 21:
                    raise MQTTError("malformed remaining length (over 4 bytes)")
            if length <= self.max_packet:
                body = await self._read_body(length)
                if body is not None:
                    self._packet_started = None
                    return first, body
                if first & 0xF0 != _PUBLISH:
                    raise MQTTError("no %d bytes free for a packet of type %#x" % (length, first))
                await self._drop_unread(first, length, "no_memory", "a message of %d bytes: no block that large "
                                        "free on the heap" % length)
                continue
            if first & 0xF0 != _PUBLISH:
                raise MQTTError("packet type %#x of %d bytes is over the %d byte limit" % (first, length,
                                                                                          self.max_packet))
            await self._drop_unread(first, length, "oversized", "a message of %d bytes is over the board's %d byte "
                                    "limit" % (length, self.max_packet))

    async def _read_body(self, length):
        # A small body is read as it comes; a big one into a buffer allocated first (nothing is
        # read yet if that fails, so the packet can still be read through), or None when the
        # heap has no block that large even after a collection.
        if length <= _SKIP:
            return await self._read(length) if length else b""
        try:
            buf = bytearray(length)
        except MemoryError:
            gc.collect()
            try:
                buf = bytearray(length)
            except MemoryError:
                return None
        try:
            await port.read_into(self._reader, buf)
        except EOFError:
            raise MQTTError("connection closed by the broker")
        return buf

    async def _skip(self, n):
        while n > 0:
            n -= len(await self._read(min(n, _SKIP)))

    async def _drop_unread(self, first, length, reason, text):
        # A PUBLISH read through in pieces, never held whole, then acknowledged and dropped.
        qos = _qos(first)
        topic_len = struct.unpack(">H", await self._read(2))[0]
        head = 2 + topic_len + (2 if qos else 0)
        if head > length:
            raise MQTTError("malformed PUBLISH: topic of %d bytes past a packet of %d" % (topic_len, length))
        await self._skip(topic_len)
        packet_id = _packet_id(await self._read(2), 0) if qos else 0
        await self._skip(length - head)
        self._packet_started = None
        self._drop(reason, text)
        if qos:
            await self._puback(packet_id)

    def _drop(self, reason, text):
        if self.on_drop is not None:
            self.on_drop(reason, text)

    async def _puback(self, packet_id):
        await self._send(bytes([_PUBACK, 2]) + struct.pack(">H", packet_id))

    # ---- what the broker sends -------------------------------------------------------------

    async def _on_publish(self, first, body):
        qos = _qos(first)
        if len(body) < 2:
            raise MQTTError("malformed PUBLISH of %d bytes" % len(body))
        n = struct.unpack_from(">H", body, 0)[0]
        pos = 2 + n + (2 if qos else 0)
        if pos > len(body):
            raise MQTTError("malformed PUBLISH: topic of %d bytes%s past a packet of %d" % (
                n, " and packet id" if qos else "", len(body)))
        packet_id = _packet_id(body, pos - 2) if qos else 0
        try:
            topic = str(body[2 : 2 + n], "utf-8")
        except UnicodeError:
            topic = None
            self._drop("malformed", "a topic that is not UTF-8")
        # The handler returns False when it cannot take the message yet: wait (and read
        # nothing more: TCP backpressure) rather than acknowledge and drop it.
        payload = memoryview(body)[pos:]  # a view: a 4 KB chunk is not copied on a 110 KB heap
        short = 0  # MemoryErrors of the handler: one collection and a second try, then a drop
        while topic is not None and self.on_message is not None:
            try:
                if self.on_message(topic, payload) is not False:
                    break
            except MemoryError:
                short += 1
                if short > 1:
                    self._drop("no_memory", "a message of %d bytes on %s: out of RAM handling it" % (len(body), topic))
                    break
                gc.collect()
                continue
            if self.on_busy is not None:
                await self.on_busy()
            else:
                await port.sleep_ms(10)
        payload = body = None  # the message's RAM back before anything else awaits
        # Acknowledge after handing it on: the handler stored or queued it (or it was dropped).
        if qos:
            await self._puback(packet_id)

    async def _on_puback(self, first, body):
        if len(body) != 2:
            raise MQTTError("malformed PUBACK of %d bytes" % len(body))
        if self.on_puback is not None:
            self.on_puback(struct.unpack(">H", body)[0])

    async def _on_suback(self, first, body):
        if len(body) < 3:
            raise MQTTError("malformed SUBACK of %d bytes" % len(body))
        if 0x80 in body[2:]:
            raise MQTTError("the broker refused a subscription")

    async def _on_pingresp(self, first, body):
        if body:
            raise MQTTError("malformed PINGRESP of %d bytes" % len(body))
        self._ping_sent = None

    _HANDLERS = {_PUBLISH: _on_publish, _PUBACK: _on_puback, _SUBACK: _on_suback, _PINGRESP: _on_pingresp}

    async def run(self):
        """Read packets until the connection breaks (raises OSError/MQTTError then)."""
        while True:
            first, body = await self._read_packet()
            handler = self._HANDLERS.get(first & 0xF0)
            if handler is None or (first & 0xF0 != _PUBLISH and first & 0x0F):
                raise MQTTError("unexpected packet type %#x" % first)
            await handler(self, first, body)

    def overdue(self, now):
        """Why the connection must be given up as of `now` (a deadline passed), or None."""
        if self._ping_sent is not None and port.ticks_diff(now, self._ping_sent) >= self.ping_timeout_ms:
            return "no PINGRESP within %d ms" % self.ping_timeout_ms
        if self._packet_started is not None and port.ticks_diff(now, self._packet_started) >= self.read_timeout_ms:
            return "a packet not complete within %d ms" % self.read_timeout_ms
        return None

    def next_deadline(self, now):
        """Milliseconds from `now` until overdue() may change, or None if no deadline runs."""
        due = None
        if self._ping_sent is not None:
            due = self.ping_timeout_ms - port.ticks_diff(now, self._ping_sent)
        if self._packet_started is not None:
            left = self.read_timeout_ms - port.ticks_diff(now, self._packet_started)
            due = left if due is None else min(due, left)
        return due

    # ---- what we send ----------------------------------------------------------------------

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
        """Send a PINGREQ; its PINGRESP is due within ping_timeout_ms (see overdue())."""
        if self._ping_sent is None:
            self._ping_sent = self.clock()
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


def _qos(first):
    qos = (first >> 1) & 0x03
    if qos > 1:
        raise MQTTError("PUBLISH at QoS %d (the board subscribes at 1)" % qos)
    return qos


def _packet_id(data, pos):
    packet_id = struct.unpack_from(">H", data, pos)[0]
    if packet_id == 0:
        raise MQTTError("QoS 1 PUBLISH with packet id 0")
    return packet_id
