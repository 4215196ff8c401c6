"""paho's MQTT client driven by the gateway's asyncio loop instead of a thread of its own.

    driver = OnLoop(client)      # after connect_async(); instead of client.loop_start()
    ...
    await driver.stop()          # after client.disconnect(); instead of client.loop_stop()

paho's own thread (loop_start) and the event loop took turns on the GIL for every message:
the loop handed each acknowledgement and reply to the thread through paho's socket pair, the
thread handed each message back with call_soon_threadsafe, and the two woke each other up
about 24 times per request and reply (futex calls counted with strace under the wire bench).
Here the loop reads the client's socket when it is readable and writes when paho has packets
queued (paho's external-loop callbacks: on_socket_open/close/register_write/unregister_write),
so the callbacks (on_message, on_publish, on_connect) run on the loop. One task does the rest
of what paho's thread did: the keepalive (loop_misc once a second) and connecting again with
back-off after the connection is lost. Connecting (a TCP connect, a TLS handshake) blocks, so
it runs in a worker thread, as it did in paho's.

`Client` is paho's client writing all the packets a turn of the loop queued (a batch's
acknowledgements and replies) in one send: paho sends each packet by itself, and each send
through the loopback costs the kernel's whole TCP path (a sixth of the gateway's samples under
the wire bench went to paho's sends). It reads the same way, up to READ_BYTES a system call
(paho asks for each packet's first byte, its length bytes and its rest separately), and the
reader goes on while bytes are buffered (for up to READ_S, then again on the next turn of the
loop): everything the broker has sent is taken into the batches' per-device queues ahead of
handling, so a quiet board's message joins its own queue at once instead of waiting in the
socket behind a flood's (batches.py serves the queues in turn).

It also decodes the two packets of every round trip itself when they are in their common form
(a QoS 1 PUBLISH without MQTT v5 properties; a PUBACK of success, two bytes): paho builds a
Properties object and a ReasonCode for each (about a tenth of the gateway's samples); those
messages get one shared empty Properties (read-only for callbacks) and one success code.
Anything else goes to paho's own decoding.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import time
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

MISC_S = 1.0  # keepalive checks (paho sends PINGREQ when due)
READ_BYTES = 1 << 16  # asked of the socket at once
READ_S = 0.001  # the reader's turn, at most, before the loop runs anything else
_WOULD_BLOCK = (BlockingIOError, ssl.SSLWantWriteError, ssl.SSLWantReadError)
_NO_PUBLISH_PROPERTIES = Properties(PacketTypes.PUBLISH)
_NO_PUBACK_PROPERTIES = Properties(PacketTypes.PUBACK)
_PUBACK_SUCCESS = ReasonCode(PacketTypes.PUBACK)


class Client(mqtt.Client):
    """paho's client, its packets gathered and sent by `flush` (OnLoop calls it after each
    loop_write) rather than one send each."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._unsent = bytearray()
        self._read_buf = b""
        self._read_at = 0  # what of _read_buf paho has taken

    @property
    def buffered(self) -> bool:
        """Bytes read from the socket that paho has not taken yet."""
        return self._read_at < len(self._read_buf)

    def _handle_publish(self) -> mqtt.MQTTErrorCode:
        header, packet = self._in_packet["command"], self._in_packet["packet"]
        topic_end = 2 + ((packet[0] << 8) | packet[1]) if len(packet) >= 2 else 0
        if (self._protocol != mqtt.MQTTv5 or header & 0x06 != 0x02 or topic_end == 2
                or len(packet) < topic_end + 3 or packet[topic_end + 2] != 0):
            return super()._handle_publish()  # not QoS 1, an empty topic, or properties: paho's way
        message = mqtt.MQTTMessage(mid=(packet[topic_end] << 8) | packet[topic_end + 1],
                                   topic=bytes(packet[2:topic_end]))
        message.dup = bool(header & 0x08)
        message.qos = 1
        message.retain = bool(header & 0x01)
        message.properties = _NO_PUBLISH_PROPERTIES
        message.payload = bytes(packet[topic_end + 3:])
        message.timestamp = mqtt.time_func()
        self._handle_on_message(message)
        return mqtt.MQTTErrorCode.MQTT_ERR_SUCCESS if self._manual_ack else self._send_puback(message.mid)

    def _handle_pubackcomp(self, cmd: Any) -> mqtt.MQTTErrorCode:
        packet = self._in_packet["packet"]
        if cmd != "PUBACK" or len(packet) != 2:
            return super()._handle_pubackcomp(cmd)
        mid = (packet[0] << 8) | packet[1]
        with self._out_message_mutex:
            if mid in self._out_messages:
                return self._do_on_publish(mid, _PUBACK_SUCCESS, _NO_PUBACK_PROPERTIES)
        return mqtt.MQTTErrorCode.MQTT_ERR_SUCCESS

    def _sock_recv(self, bufsize: int) -> bytes:
        if not self.buffered:
            self._read_buf, self._read_at = super()._sock_recv(READ_BYTES), 0
            if not self._read_buf:
                return b""  # the broker closed the connection
        start = self._read_at
        self._read_at = min(start + bufsize, len(self._read_buf))
        return self._read_buf[start:self._read_at]

    def _sock_send(self, buf: bytes | bytearray) -> int:
        self._unsent += buf
        return len(buf)

    def flush(self) -> bool:
        """Send what is gathered, as much as the socket takes now; whether all of it went."""
        sock = self._sock
        if sock is None:
            self._unsent.clear()
            return True
        while self._unsent:
            try:
                sent = sock.send(self._unsent)
            except _WOULD_BLOCK:
                return False
            except OSError:  # the connection is gone: the reader sees it and paho reconnects
                self._unsent.clear()
                with contextlib.suppress(OSError, AttributeError):
                    sock.shutdown(socket.SHUT_RDWR)  # type: ignore[attr-defined]  # a socket.socket here
                return True
            del self._unsent[:sent]
        return True

    def _sock_close(self) -> None:
        self.flush()  # a DISCONNECT paho wrote just before closing
        self._unsent.clear()
        self._read_buf, self._read_at = b"", 0  # a new connection starts a new stream
        super()._sock_close()


class OnLoop:
    """Drive `client` (connect_async() called, loop_start() not) on the running loop; `delays`:
    the first and the longest wait between attempts to connect (doubling, reset by a CONNACK)."""

    def __init__(self, client: mqtt.Client, delays: tuple[float, float] = (0.1, 5.0)) -> None:
        self.client = client
        self.delays = delays
        self._loop = asyncio.get_running_loop()
        self._closed = asyncio.Event()
        self._stopping = False
        self._sock: Any = None
        client.on_socket_open = self._opened
        client.on_socket_close = self._on_close
        client.on_socket_register_write = self._want_write
        client.on_socket_unregister_write = self._wrote
        self._task = self._loop.create_task(self._run(), name="microfang[gateway].mqtt")

    # paho's socket callbacks: on the loop, except on_socket_open and the first register_write,
    # which come from the thread connecting.

    def _soon(self, action: Any, *args: Any) -> None:
        try:
            running = asyncio.get_running_loop() is self._loop
        except RuntimeError:
            running = False
        if running:
            action(*args)
        elif not self._loop.is_closed():  # a client collected after its loop closed: nothing to undo
            self._loop.call_soon_threadsafe(action, *args)

    def _opened(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        self._soon(self._add_reader, sock)

    def _add_reader(self, sock: Any) -> None:
        self._sock = sock
        self._loop.add_reader(sock, self._read)

    def _read(self) -> None:
        sock = self.client.socket()
        until = time.perf_counter() + READ_S
        self.client.loop_read()
        # Bytes already read (or, with TLS, decrypted) do not make the socket readable again.
        while self.client.socket() is sock and self._more(sock):
            if time.perf_counter() > until:
                self._loop.call_soon(self._read)  # the rest on the next turn
                return
            self.client.loop_read()

    def _more(self, sock: Any) -> bool:
        return bool(getattr(self.client, "buffered", False)) or (isinstance(sock, ssl.SSLSocket) and sock.pending() > 0)

    def _on_close(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        self._soon(self._forget, sock)

    def _forget(self, sock: Any) -> None:
        with contextlib.suppress(Exception):
            self._loop.remove_reader(sock)
        with contextlib.suppress(Exception):
            self._loop.remove_writer(sock)
        if sock is self._sock:
            self._sock = None
        self._closed.set()

    def _want_write(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        self._soon(self._add_writer, sock)

    def _add_writer(self, sock: Any) -> None:
        if sock.fileno() >= 0:
            self._loop.add_writer(sock, self._write)

    def _write(self) -> None:
        sock = self.client.socket()
        self.client.loop_write()  # paho's queue into the client's buffer (and no writer when it is empty)
        flush = getattr(self.client, "flush", None)
        if flush is not None and not flush() and sock is not None and sock is self.client.socket():
            self._loop.add_writer(sock, self._write)  # the rest when the socket takes it

    def _wrote(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        self._soon(self._remove_writer, sock)

    def _remove_writer(self, sock: Any) -> None:
        with contextlib.suppress(Exception):
            self._loop.remove_writer(sock)

    async def _run(self) -> None:
        """Connect, keep alive, and connect again when the connection is lost."""
        wait = self.delays[0]
        while not self._stopping:
            self._closed.clear()
            try:
                await self._loop.run_in_executor(None, self.client.reconnect)
            except (OSError, ValueError):
                await asyncio.sleep(wait)
                wait = min(wait * 2, self.delays[1])
                continue
            while not self._closed.is_set():
                if self.client.is_connected():
                    wait = self.delays[0]  # a CONNACK: the next loss starts the back-off over
                if self.client.loop_misc() != mqtt.MQTT_ERR_SUCCESS:
                    break
                # Not asyncio.wait_for: in Python 3.11 it swallows a cancel that comes in the turn
                # the socket closes (stop() right after disconnect()), and stop() then waited on.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(MISC_S):
                        await self._closed.wait()
            await asyncio.sleep(wait)
            wait = min(wait * 2, self.delays[1])

    async def stop(self) -> None:
        """Stop driving the client: send what it has queued (its DISCONNECT), close its socket."""
        self._stopping = True
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._task
        sock = self.client.socket()
        if sock is not None:
            with contextlib.suppress(Exception):
                self.client.loop_write()
            self._forget(sock)
            with contextlib.suppress(Exception):
                sock.close()
