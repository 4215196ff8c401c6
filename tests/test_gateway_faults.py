"""Bad input at the gateway: each is dropped, counted in metrics, logged in one line, and the
gateway keeps serving. Real Mosquitto; the bad messages are published with paho."""

import asyncio
import socket

import paho.mqtt.client as mqtt
import pytest

from microfang.firmware import cbor, envelope
from microfang.gateway import Gateway

KEY = b"k" * 32


def publisher(port):
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="attacker")
    client.connect("127.0.0.1", port)
    client.socket().setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    client.loop_start()
    return client


def request(seq, agent="a1", key=KEY, dev="dev1", body=b"\x64ping"):
    return envelope.seal(key, dev, seq, agent, "request", {"id": seq, "kind": "echo", "body": body})


async def run_gateway(port, tmp_path, messages):
    """Start a gateway with device dev1, publish (topic, payload) pairs, then a good request;
    return the gateway metrics once the good request has been answered."""
    async with Gateway(broker=f"mqtt://127.0.0.1:{port}", db=tmp_path / "gw.db", quiet=True) as gw:
        gw.add_device("dev1", fleet="f", key=KEY)
        client = publisher(port)
        for topic, payload in messages:
            client.publish(topic, payload, qos=1).wait_for_publish(5)
        client.publish("mf/f/dev1/up/a1", request(3001), qos=1).wait_for_publish(5)
        deadline = asyncio.get_running_loop().time() + 10
        while gw.metrics["replies"] < 1 and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.02)
        client.loop_stop()
        client.disconnect()
        return dict(gw.metrics)


@pytest.mark.parametrize(
    ("name", "topic", "payload", "reason"),
    [
        ("malformed CBOR", "mf/f/dev1/up/a1", b"\xff\x00\x01garbage", "malformed"),
        ("truncated CBOR", "mf/f/dev1/up/a1", request(5)[:20], "malformed"),
        ("oversized CBOR", "mf/f/dev1/up/a1", cbor.dumps({"v": 1, "pad": b"x" * 20000}), "oversized"),
        ("unknown device", "mf/f/ghost/up/a1", request(5, dev="ghost"), "unknown-device"),
        ("device in the wrong fleet", "mf/other/dev1/up/a1", request(5), "unknown-device"),
        ("bad HMAC", "mf/f/dev1/up/a1", request(5, key=b"x" * 32), "forged"),
        ("another device's name in the envelope", "mf/f/dev1/up/a1", request(5, dev="dev2"), "unknown-device"),
        ("message for another agent", "mf/f/dev1/up/a2", request(5, agent="a1"), "unknown-agent"),
        ("agent name outside the scheme", "mf/f/dev1/up/Bad!Agent", request(5, agent="Bad!Agent"), "malformed"),
    ],
)
def test_bad_message_is_dropped_counted_and_the_gateway_keeps_serving(mosquitto, tmp_path, name, topic, payload,
                                                                        reason, capsys):
    metrics = asyncio.run(run_gateway(mosquitto.port, tmp_path, [(topic, payload)]))
    assert metrics[f"dropped_{reason}"] == 1, (name, metrics)
    assert metrics["replies"] == 1  # the good request after it was answered


def test_replayed_sequence_is_dropped(mosquitto, tmp_path):
    # An exact replay of 7 and a message from far behind the replay window are dropped; 6,
    # late but never seen (reordering), is accepted.
    first = request(7)
    metrics = asyncio.run(run_gateway(mosquitto.port, tmp_path, [("mf/f/dev1/up/a1", first),
                                                                  ("mf/f/dev1/up/a1", first),
                                                                  ("mf/f/dev1/up/a1", request(6)),
                                                                  ("mf/f/dev1/up/a1", request(3000)),
                                                                  ("mf/f/dev1/up/a1", request(8))]))
    assert metrics["dropped_replay"] == 2
    assert metrics["requests"] == 4  # 7, 6, 3000 and the final good one


def test_drop_is_logged_in_one_line(mosquitto, tmp_path, capsys):
    async def scenario():
        async with Gateway(broker=f"mqtt://127.0.0.1:{mosquitto.port}", db=tmp_path / "gw.db") as gw:
            gw.add_device("dev1", fleet="f", key=KEY)
            gw.handle("mf/f/dev1/up/a1", request(3, key=b"y" * 32))

    asyncio.run(scenario())
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["[gateway] dropped forged: mf/f/dev1/up/a1: bad HMAC from device 'dev1'"]
