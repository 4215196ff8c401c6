"""host/gateway/mqttloop.py's own decoding of the round trip's two packets (a QoS 1 PUBLISH
without properties, a PUBACK of success) gives what paho's decoding gives; any other form is
left to paho. Each packet is handed to both clients as paho's reader hands it on."""

from __future__ import annotations

import struct

import paho.mqtt.client as mqtt
import pytest

from microfang.gateway import mqttloop


def publish(topic: bytes, payload: bytes, qos: int = 1, mid: int = 7, properties: bytes = b"\x00",
            dup: bool = False, retain: bool = False) -> tuple[int, bytearray]:
    header = 0x30 | (qos << 1) | (0x08 if dup else 0) | (0x01 if retain else 0)
    body = struct.pack("!H", len(topic)) + topic + (struct.pack("!H", mid) if qos else b"") + properties + payload
    return header, bytearray(body)


def received(client_class: type[mqtt.Client], header: int, packet: bytearray, protocol: int = mqtt.MQTTv5) -> dict:
    client = client_class(mqtt.CallbackAPIVersion.VERSION2, protocol=protocol, manual_ack=True)
    got: list[mqtt.MQTTMessage] = []
    client.on_message = lambda c, u, m: got.append(m)
    client._in_packet = {"command": header, "packet": bytearray(packet)}
    assert client._handle_publish() == mqtt.MQTT_ERR_SUCCESS
    (m,) = got
    return {"topic": m._topic, "payload": bytes(m.payload), "mid": m.mid, "qos": m.qos, "dup": m.dup,
            "retain": m.retain, "properties": str(m.properties)}


@pytest.mark.parametrize(("name", "packet"), [
    ("a request", publish(b"mf/f/dev1/up/a1", b"\xa9av\x01" + bytes(200))),
    ("a 4 KB chunk", publish(b"mf/f/dev1/up/a1", bytes(range(256)) * 16, mid=65535)),
    ("an empty payload", publish(b"t", b"")),
    ("duplicate and retained", publish(b"mf/f/dev1/status", b"online", dup=True, retain=True)),
    ("a topic that is not UTF-8", publish(b"mf/\xff/x", b"x")),
    ("with properties (paho decodes it)", publish(b"t", b"x", properties=b"\x02\x01\x01")),
    ("QoS 0 (paho decodes it)", publish(b"t", b"x", qos=0)),
    ("an empty topic (an alias: paho decodes it)", publish(b"", b"x")),
])
def test_a_publish_decodes_as_paho_decodes_it(name, packet):
    header, body = packet
    assert received(mqttloop.Client, header, body) == received(mqtt.Client, header, body)


def test_a_publish_under_mqtt_3_1_1_decodes_as_paho_decodes_it():
    header, body = publish(b"mf/f/dev1/up/a1", b"x", properties=b"")
    ours = received(mqttloop.Client, header, body, mqtt.MQTTv311)
    assert ours == received(mqtt.Client, header, body, mqtt.MQTTv311)
    assert ours["payload"] == b"x"


def acked(client_class: type[mqtt.Client], packet: bytes) -> list[tuple[int, str, bool]]:
    client = client_class(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    got: list[tuple[int, str, bool]] = []
    client.on_publish = lambda c, u, mid, reason, props: got.append((mid, str(reason), reason.is_failure))
    client._sock = None
    client.publish("t", b"x", qos=1)  # queued, not sent (no connection): message id 1 waits for its PUBACK
    client._in_packet = {"command": 0x40, "packet": bytearray(packet)}
    assert client._handle_pubackcomp("PUBACK") == mqtt.MQTT_ERR_SUCCESS
    return got


@pytest.mark.parametrize(("name", "packet"), [
    ("success, two bytes", b"\x00\x01"),
    ("no matching subscribers (paho decodes it)", b"\x00\x01\x10"),
    ("not authorized (paho decodes it)", b"\x00\x01\x87\x00"),
    ("a message id nobody waits for", b"\x00\x09"),
])
def test_a_puback_decodes_as_paho_decodes_it(name, packet):
    assert acked(mqttloop.Client, packet) == acked(mqtt.Client, packet)
