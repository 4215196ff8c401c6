"""host/gateway/broker_session.py against a real Mosquitto: open() ends at once, with the
broker's reason, when the broker refuses the gateway's login, and stopping the driver ends at
once whatever turn the socket closes in."""

from __future__ import annotations

import asyncio
import time

import paho.mqtt.client as mqtt
import pytest
from brokers import Mosquitto, _as_root

from microfang.gateway import mqttloop
from microfang.gateway.broker_session import BrokerSession, BrokerSettings


def session(port: int, user: str | None = None, password: str | None = None) -> BrokerSession:
    settings = BrokerSettings("127.0.0.1", port, False, "microfang-gateway-test", user, password)
    return BrokerSession(settings, shared=lambda topic: topic, on_message=lambda m: None,
                         on_delivered=lambda action: None)


def broker_with(tmp_path, *lines: str) -> Mosquitto:
    broker = Mosquitto(tmp_path)
    broker.config = "\n".join([f"listener {broker.port} 127.0.0.1", "log_dest none", *_as_root(), *lines]) + "\n"
    return broker.start()


async def stopped_as_the_socket_closes(port: int) -> float:
    client = mqttloop.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="driver-test")
    client.connect_async("127.0.0.1", port)
    driver = mqttloop.OnLoop(client)
    for _ in range(500):
        if client.is_connected():
            break
        await asyncio.sleep(0.01)
    assert client.is_connected()
    client.on_socket_close(client, None, client.socket())  # paho closing the socket, as after a DISCONNECT
    started = time.monotonic()
    await asyncio.wait_for(driver.stop(), 10)  # in the same turn
    return time.monotonic() - started


def test_a_driver_stopped_in_the_turn_its_socket_closes_stops_at_once(mosquitto):
    # Python 3.11's asyncio.wait_for swallowed that cancel: the driver went on reconnecting and
    # BrokerSession.close() after a refused login waited 56-68 s.
    assert asyncio.run(stopped_as_the_socket_closes(mosquitto.port)) < 2


def test_a_refused_login_ends_open_with_the_brokers_reason(tmp_path):
    passwd = tmp_path / "passwd"
    passwd.write_text("", encoding="utf-8")
    broker = broker_with(tmp_path, "allow_anonymous false", f"password_file {passwd}")
    try:
        s = session(broker.port, user="gateway", password="wrong")
        started = time.monotonic()
        with pytest.raises(ConnectionError, match=r"^broker refused login: not authorized \(user 'gateway'\)$"):
            asyncio.run(s.open())
        assert time.monotonic() - started < 5
    finally:
        broker.stop()

