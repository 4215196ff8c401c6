"""Home Assistant MQTT discovery: a board shows up in Home Assistant as a device with no
configuration. For each board the gateway hears it announces (retained, once per run) two
diagnostic sensors from its telemetry, free heap and uptime; for each topic an agent publishes,
a sensor of its value. Their states are outputs.py's JSON topics; a board's availability is its
own status topic (`online` / `offline`, retained, its last will saying offline).

    {prefix}/sensor/microfang_{device}/{object}/config     (prefix: homeassistant by default)

https://www.home-assistant.io/integrations/mqtt/#mqtt-discovery; the payloads use only keys that
page and the MQTT sensor page document (tests/test_gateway_discovery.py checks them against a
schema written from them). Home Assistant's broker user needs to read `{outputs prefix}/#`,
`mf/+/+/status` and `{prefix}/#`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from importlib.metadata import version
from typing import Any

from microfang.firmware import protocol

DEFAULT_PREFIX = "homeassistant"
Publish = Callable[[str, bytes, bool], None]  # (topic, payload, retain), QoS 0
BOARD_SENSORS = {  # object id -> what of the board's telemetry JSON (outputs.py) it shows
    "free_heap": {"name": "Free heap", "value_template": "{{ value_json.free_heap }}", "unit_of_measurement": "B",
                  "device_class": "data_size", "state_class": "measurement", "entity_category": "diagnostic"},
    "uptime": {"name": "Uptime", "value_template": "{{ (value_json.uptime_ms / 1000) | round(0) }}",
               "unit_of_measurement": "s", "device_class": "duration", "state_class": "total_increasing",
               "entity_category": "diagnostic"},
}


def object_id(text: str) -> str:
    """A discovery object id: [a-zA-Z0-9_-] only (an agent's topic may hold slashes)."""
    return "".join(c if c.isascii() and (c.isalnum() or c in "_-") else "_" for c in text)


class Discovery:
    def __init__(self, prefix: str, publish: Publish) -> None:
        self.prefix = prefix
        self._publish = publish
        self._announced: set[str] = set()  # config topics sent in this run

    def _device(self, device: str) -> dict[str, Any]:
        return {"identifiers": [f"microfang_{device}"], "name": device, "manufacturer": "microfang",
                "model": "microfang board", "sw_version": version("microfang")}

    def _announce(self, fleet: str, device: str, obj: str, config: dict[str, Any]) -> None:
        topic = f"{self.prefix}/sensor/microfang_{object_id(device)}/{object_id(obj)}/config"
        if topic in self._announced:
            return
        self._announced.add(topic)
        config = {**config, "unique_id": f"microfang_{device}_{obj}", "device": self._device(device),
                  "availability_topic": protocol.topic(fleet, device, protocol.STATUS),
                  "payload_available": protocol.ONLINE.decode(), "payload_not_available": protocol.OFFLINE.decode()}
        self._publish(topic, json.dumps(config).encode(), True)

    def board(self, fleet: str, device: str, telemetry_topic: str) -> None:
        for obj, config in BOARD_SENSORS.items():
            self._announce(fleet, device, obj, {**config, "state_topic": telemetry_topic})

    def agent_output(self, fleet: str, device: str, agent: str, topic: str, state_topic: str) -> None:
        self._announce(fleet, device, f"{agent}_{topic}", {"name": f"{agent} {topic}", "state_topic": state_topic,
                                                           "value_template": "{{ value_json.data }}"})
