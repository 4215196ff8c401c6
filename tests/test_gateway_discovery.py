"""Home Assistant MQTT discovery (gateway/discovery.py): a board running a real agent, through a
real Mosquitto, shows up as a device whose config topics and payloads follow Home Assistant's
documented discovery schema, written here from https://www.home-assistant.io/integrations/mqtt/
(discovery topic format, device map, availability) and .../sensor.mqtt/ (the sensor's keys)."""

from __future__ import annotations

import asyncio
import json
import re
import time

import jsonschema
import paho.mqtt.client as mqtt
from test_gateway_outputs import board_says

from microfang.gateway.discovery import object_id

# <discovery_prefix>/<component>/[<node_id>/]<object_id>/config; ids of [a-zA-Z0-9_-]
CONFIG_TOPIC = re.compile(r"homeassistant/sensor/(?:[a-zA-Z0-9_-]+/)?[a-zA-Z0-9_-]+/config")
SENSOR_DEVICE_CLASSES = ["apparent_power", "aqi", "atmospheric_pressure", "battery", "carbon_dioxide",
                         "carbon_monoxide", "current", "data_rate", "data_size", "date", "distance", "duration",
                         "energy", "frequency", "humidity", "illuminance", "power", "pressure", "signal_strength",
                         "temperature", "timestamp", "voltage", "volume", "weight", "wind_speed"]
SENSOR_CONFIG = {
    "type": "object",
    "required": ["state_topic"],
    "additionalProperties": False,
    "properties": {
        "name": {"type": ["string", "null"]},
        "state_topic": {"type": "string", "minLength": 1, "pattern": r"^[^#+]+$"},
        "unique_id": {"type": "string", "minLength": 1},
        "value_template": {"type": "string"},
        "unit_of_measurement": {"type": "string"},
        "device_class": {"enum": SENSOR_DEVICE_CLASSES},
        "state_class": {"enum": ["measurement", "total", "total_increasing"]},
        "entity_category": {"enum": ["config", "diagnostic"]},
        "availability_topic": {"type": "string", "pattern": r"^[^#+]+$"},
        "payload_available": {"type": "string"},
        "payload_not_available": {"type": "string"},
        "expire_after": {"type": "integer", "minimum": 0},
        "device": {
            "type": "object",
            "additionalProperties": False,
            "anyOf": [{"required": ["identifiers"]}, {"required": ["connections"]}],
            "properties": {
                "identifiers": {"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]},
                "connections": {"type": "array"},
                "name": {"type": "string"}, "manufacturer": {"type": "string"}, "model": {"type": "string"},
                "sw_version": {"type": "string"}, "hw_version": {"type": "string"},
                "configuration_url": {"type": "string"}, "suggested_area": {"type": "string"},
                "via_device": {"type": "string"},
            },
        },
    },
}


def home_assistant(port: int, configs: dict) -> mqtt.Client:
    """A client subscribed to the discovery prefix, as Home Assistant is: topic -> (config, retained)."""
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    client.on_message = lambda c, u, m: configs.__setitem__(m.topic, (json.loads(m.payload), m.retain))
    client.connect("127.0.0.1", port)
    client.subscribe("homeassistant/#")
    client.loop_start()
    return client


def discovered(port: int, db, discovery: str = "homeassistant") -> tuple[dict, dict]:
    """What Home Assistant running beside the gateway gets, and what one started afterwards gets."""
    live: dict = {}
    client = home_assistant(port, live)
    try:
        asyncio.run(board_says(port, db, lambda: len(live) >= 3, discovery=discovery))
    finally:
        client.loop_stop()
        client.disconnect()
    later: dict = {}
    client = home_assistant(port, later)
    time.sleep(1.0)
    client.loop_stop()
    client.disconnect()
    return live, later


def test_a_board_and_its_agents_output_are_discovered_with_valid_configs(mosquitto, tmp_path):
    configs, later = discovered(mosquitto.port, tmp_path / "gw.db")
    assert sorted(configs) == ["homeassistant/sensor/microfang_b1/free_heap/config",
                               "homeassistant/sensor/microfang_b1/says_temp/config",
                               "homeassistant/sensor/microfang_b1/uptime/config"]
    for topic, (config, _) in configs.items():
        assert CONFIG_TOPIC.fullmatch(topic), topic
        jsonschema.validate(config, SENSOR_CONFIG)
        assert later[topic] == (config, True), topic  # retained: a Home Assistant started later finds them
        assert config["availability_topic"] == "mf/test/b1/status"
        assert config["device"]["identifiers"] == ["microfang_b1"]
    assert configs["homeassistant/sensor/microfang_b1/says_temp/config"][0]["state_topic"] == \
        "microfang/test/b1/says/out/temp"
    assert len({config["unique_id"] for config, _ in configs.values()}) == 3


def test_discovery_can_be_turned_off(mosquitto, tmp_path):
    assert discovered(mosquitto.port, tmp_path / "gw.db", discovery="") == ({}, {})


def test_an_object_id_keeps_only_the_characters_home_assistant_allows():
    assert object_id("kitchen/temp.c") == "kitchen_temp_c"
    assert object_id("ünï-_9") == "_n_-_9"
