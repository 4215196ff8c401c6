"""A gateway that comes back (after kill -9, or a stop) answers each request once: those the broker
kept for its session while it was away are started by intake as they arrive, and only those of
its earlier run are resumed (peers.py, requests.py). On SQLite and on PostgreSQL, with a real
Mosquitto holding the gateway's persistent session."""

from __future__ import annotations

import asyncio
import collections
import time

import paho.mqtt.client as mqtt
import pytest

from microfang.firmware import envelope, protocol
from microfang.gateway import fastcbor
from microfang.gateway.core import Gateway
from microfang.gateway.store import Store

QUEUED = 40  # requests the broker holds for the gateway's session while it is away


def board_client(port: int, key: bytes) -> tuple[mqtt.Client, collections.Counter]:
    """A paho client as board b1: what it publishes is signed; returns it and the count of
    replies per request id it receives."""
    replies: collections.Counter = collections.Counter()

    def on_message(client, userdata, message):
        doc = envelope.open_envelope(bytes(message.payload), lambda dev: key, codec=fastcbor)
        replies[doc["body"]["id"]] += 1

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="b1")
    client.on_message = on_message
    client.connect("127.0.0.1", port)
    client.subscribe(protocol.topic("f", "b1", protocol.DOWN, "a1"), qos=1)
    client.loop_start()
    return client, replies


async def gateway_up_and_down(port: int, where: str) -> None:
    async with Gateway(broker=f"mqtt://127.0.0.1:{port}", db=where, name="gw0", quiet=True):
        pass


async def gateway_until_answered(port: int, where: str, replies: collections.Counter) -> None:
    async with Gateway(broker=f"mqtt://127.0.0.1:{port}", db=where, name="gw0", quiet=True):
        deadline = time.monotonic() + 20
        while len(replies) < QUEUED and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await asyncio.sleep(1.0)  # time for a second answer, if one were coming


@pytest.mark.parametrize("engine", ["sqlite", "postgresql"])
def test_requests_queued_for_a_gateway_while_it_was_away_are_answered_once(engine, mosquitto, tmp_path, request):
    where = str(tmp_path / "gw.db") if engine == "sqlite" else request.getfixturevalue("pg_store")
    store = Store(where)
    key = store.add_device("b1", "f")
    store.close()
    asyncio.run(gateway_up_and_down(mosquitto.port, where))  # its session (and subscriptions) stay at the broker
    board, replies = board_client(mosquitto.port, key)
    try:
        for n in range(1, QUEUED + 1):
            sealed = envelope.seal(key, "b1", n, "a1", protocol.K_REQUEST, {"id": n, "kind": "echo", "body": b"\xf6"},
                                   codec=fastcbor)
            board.publish(protocol.topic("f", "b1", protocol.UP, "a1"), sealed, qos=1).wait_for_publish(5)
        asyncio.run(gateway_until_answered(mosquitto.port, where, replies))
    finally:
        board.loop_stop()
        board.disconnect()
    assert sorted(replies) == list(range(1, QUEUED + 1))
    assert {n: count for n, count in replies.items() if count != 1} == {}
