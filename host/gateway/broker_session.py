"""The gateway's session with the MQTT broker: connecting (MQTT v5, or 3.1.1 for a broker
that speaks only that), the subscriptions, manual acknowledgements and QoS 1 publishes with
what to do once the broker has each.

    session = BrokerSession(settings, shared=..., on_message=..., on_delivered=...)
    await session.open()          # ConnectionError with the reason if the broker cannot be had
    session.publish(topic, sealed, on_delivered)
    session.ack(mid, qos)         # a message handled and committed (core.py)
    await session.close()

paho's client runs on the event loop (mqttloop.py: no thread of its own), so every callback
here runs on the loop too. The session outlives the process (clean start off, an expiry of
for ever): messages sent while the gateway is down wait at the broker, and one received but
not acknowledged before a crash comes again.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from microfang.firmware import protocol
from microfang.gateway import mqttloop
from microfang.gateway.mqttloop import OnLoop

RECEIVE_MAXIMUM = 65535  # unacknowledged messages the broker may send the gateway (MQTT v5's largest)
SESSION_EXPIRY_S = 0xFFFFFFFF  # MQTT v5: the broker keeps the gateway's session for ever
RECONNECT_S = (0.1, 5.0)  # waits between attempts to reach the broker: the first and the longest
LOGIN_REFUSED = (134, 135)  # CONNACK reason codes: bad user name or password, not authorized (3.1.1's 4, 5)
CONNECT_S = 10.0  # open() gives up after this long
V5_S = 2.0  # a broker that neither accepts nor refuses MQTT v5 this long is asked in 3.1.1

Message = tuple[str, bytes, int, int]  # topic, payload, MQTT message id, QoS


@dataclass(frozen=True)
class BrokerSettings:
    host: str
    port: int
    tls: bool
    client_id: str
    user: str | None = None
    password: str | None = None
    cafile: str | None = None


class BrokerSession:
    """One gateway's connection to the broker. `shared(topic)` is the filter the gateway
    subscribes to for each of protocol.subscriptions(); `on_message(message)` receives each
    message (acknowledge it with ack() once handled); `on_delivered(action)` is called with a
    publish's action once the broker has that publish."""

    def __init__(self, settings: BrokerSettings, *, shared: Callable[[str], str],
                 on_message: Callable[[Message], None], on_delivered: Callable[[Callable[[], None]], None]) -> None:
        self.settings = settings
        self.connected = False
        self._shared = shared
        self._on_message_received = on_message
        self._on_delivered = on_delivered
        self._client: mqtt.Client | None = None
        self._driver: OnLoop | None = None
        self._refused: str | None = None  # why the broker refused or dropped our CONNECT
        self._login_refused: str | None = None  # the broker refused our credentials or subscriptions
        self._subscribing: int | None = None  # the SUBSCRIBE whose SUBACK makes the session connected
        self._delivery: dict[int, Callable[[], None]] = {}  # MQTT message id -> what to do once the broker has it

    async def open(self) -> None:
        """Connect; raise ConnectionError (a login refused, no broker) if that fails."""
        self._client = self._connect(mqtt.MQTTv5)
        deadline = time.monotonic() + CONNECT_S
        v5_until = time.monotonic() + V5_S
        while not self.connected and self._login_refused is None and time.monotonic() < deadline:
            if self._client.protocol == mqtt.MQTTv5 and (self._refused is not None or time.monotonic() > v5_until):
                # A broker that speaks MQTT 3.1.1 only (the embedded amqtt refuses or ignores
                # a v5 CONNECT): that, then.
                await self._stop_driver()
                self._client = self._connect(mqtt.MQTTv311)
            await asyncio.sleep(0.01)
        if not self.connected:
            await self.close()
            s = self.settings
            raise ConnectionError(self._login_refused or f"cannot reach the MQTT broker at {s.host}:{s.port}")

    async def close(self) -> None:
        if self._client is not None:
            self._client.disconnect()
            await self._stop_driver()

    def ack(self, mid: int, qos: int) -> None:
        assert self._client is not None
        self._client.ack(mid, qos)

    def publish(self, topic: str, sealed: bytes, on_delivered: Callable[[], None] | None = None) -> None:
        """Publish at QoS 1; `on_delivered` is handed to on_delivered() once the broker has it."""
        assert self._client is not None
        info = self._client.publish(topic, sealed, qos=1)
        if on_delivered is not None:
            self._delivery[info.mid] = on_delivered

    def publish_once(self, topic: str, payload: bytes, retain: bool = False) -> None:
        """Publish at QoS 0 (outputs.py: users' copies, nothing waits on them); dropped while
        the session is down."""
        if self._client is not None and self.connected:
            self._client.publish(topic, payload, qos=0, retain=retain)

    def _connect(self, version: mqtt.MQTTProtocolVersion) -> mqtt.Client:
        """A paho client connecting, driven by the event loop (mqttloop.py). MQTT v5 lets the gateway say how many
        unacknowledged messages the broker may send it (Receive Maximum): each waits for its
        batch's commit to be acknowledged, and the broker must not hold a quiet board's message
        behind a flood's (with MQTT 3.1.1 Mosquitto allows max_inflight_messages, 20 by default)."""
        s = self.settings
        v5 = version == mqtt.MQTTv5
        client = mqttloop.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=s.client_id, protocol=version,
                                 manual_ack=True, clean_session=None if v5 else False)
        if s.user is not None:
            client.username_pw_set(s.user, s.password)
        if s.tls:
            client.tls_set(ca_certs=s.cafile)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_publish = self._on_publish
        client.on_subscribe = self._on_subscribe
        client.max_inflight_messages_set(1000)
        client.max_queued_messages_set(0)
        self._refused = None
        if v5:
            properties = Properties(PacketTypes.CONNECT)
            properties.SessionExpiryInterval = SESSION_EXPIRY_S  # the session (its queued messages) outlives us
            properties.ReceiveMaximum = RECEIVE_MAXIMUM
            client.connect_async(s.host, s.port, keepalive=30, clean_start=False, properties=properties)
        else:
            client.connect_async(s.host, s.port, keepalive=30)
        self._driver = OnLoop(client, RECONNECT_S)
        return client

    async def _stop_driver(self) -> None:
        if self._driver is not None:
            await self._driver.stop()
            self._driver = None

    # ---- paho's callbacks (on the event loop) ----------------------------------------------

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if reason.is_failure:
            self._refused = str(reason)
            if reason.value in LOGIN_REFUSED:
                user = self.settings.user
                who = f"user {user!r}" if user else "no user name: give --user or [broker] user"
                self._login_refused = f"broker refused login: {str(reason).lower()} ({who})"
            return
        sock = client.socket()
        if isinstance(sock, socket.socket):  # TLS sockets too (ssl.SSLSocket is one)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._subscribing = client.subscribe([(self._shared(topic), 1) for topic in protocol.subscriptions()])[1]

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, reasons: Any, props: Any) -> None:
        # Connected once the broker has the subscriptions: a message published before would
        # not reach a session the broker has just created.
        if mid != self._subscribing:
            return
        refused = [f"{f} ({r})" for f, r in zip(protocol.subscriptions(), reasons, strict=False) if r.is_failure]
        if refused:
            self._login_refused = "broker refused the subscriptions " + ", ".join(refused)
            return
        self.connected = True

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if not self.connected:
            self._refused = str(reason)  # before any CONNACK: a broker that does not speak MQTT v5 hangs up
        self.connected = False

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, reason: Any, props: Any) -> None:
        action = self._delivery.pop(mid, None)
        if action is not None:
            self._on_delivered(action)

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        self._on_message_received((message.topic, bytes(message.payload), message.mid, message.qos))
