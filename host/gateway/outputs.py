"""What agents say, re-published for users as JSON on their own topic tree (docs/protocol.md
"Outputs"), so a dashboard, Home Assistant or `mosquitto_sub` reads it without CBOR, keys or
envelopes:

    {prefix}/{fleet}/{device}/{agent}/out/{topic}  an agent's publish: {"ts", "data"} (retained:
                                                   the latest value of each topic)
    {prefix}/{fleet}/{device}/{agent}/log          an mf_log line: {"ts", "line", "dropped"}
    {prefix}/{fleet}/{device}/tele                 a board's telemetry: {"ts", "free_heap", "uptime_ms",
                                                   "agents"} (retained)

and, unless turned off, Home Assistant discovery of them (discovery.py).

`data` is the agent's CBOR decoded to JSON when it decodes and has a JSON form, else
{"base64": ...} of its bytes. Published at QoS 0 once the message that carried them has
committed; the prefix is `microfang` unless configured (`--outputs`, `[gateway] outputs`;
"" turns outputs off). The production ACL lets gateway users write {prefix}/# (brokerauth.py).
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from typing import Any

from microfang.firmware import envelope, protocol
from microfang.gateway import fastcbor
from microfang.gateway.discovery import DEFAULT_PREFIX as DISCOVERY_PREFIX
from microfang.gateway.discovery import Discovery

DEFAULT_PREFIX = "microfang"
Publish = Callable[[str, bytes, bool], None]  # (topic, payload, retain), QoS 0


def json_of(data: bytes) -> Any:
    """An agent's bytes as JSON: its CBOR decoded, else {"base64": ...}."""
    try:
        value = fastcbor.loads(data, max_bytes=envelope.MAX_ENVELOPE)
        json.dumps(value, allow_nan=False)  # bytes, tags, NaN and non-text keys have no JSON form
        return value
    except (fastcbor.CBORError, TypeError, ValueError):
        return {"base64": base64.b64encode(data).decode()}


def topic_level(text: str) -> str | None:
    """An agent's publish topic as one or more levels under out/: MQTT wildcards, empty levels
    and a leading $ are refused (None)."""
    levels = text.split("/")
    if not text or any(not level or "+" in level or "#" in level for level in levels) or text.startswith("$"):
        return None
    return text


class Outputs:
    """`discovery`: Home Assistant discovery's prefix (discovery.py; "": none)."""

    def __init__(self, prefix: str, fleet_of: Callable[[str], str | None], publish: Publish,
                 discovery: str = DISCOVERY_PREFIX) -> None:
        self.prefix = prefix
        self._fleet_of = fleet_of
        self._publish = publish
        self.discovery = Discovery(discovery, publish) if discovery else None

    def _base(self, device: str, agent: str) -> str | None:
        fleet = self._fleet_of(device)
        return None if fleet is None else f"{self.prefix}/{fleet}/{device}/{agent}"

    def telemetry(self, device: str, body: dict[str, Any]) -> None:
        """A board's telemetry (shapes.py checked it), retained: {"ts", "free_heap", "uptime_ms", "agents"}."""
        fleet = self._fleet_of(device)
        if fleet is None:
            return
        topic = f"{self.prefix}/{fleet}/{device}/{protocol.TELE}"
        uptime = body.get("uptime_ms", 0)
        payload = {"ts": time.time(), "free_heap": body.get("free_heap", 0),
                   "uptime_ms": uptime if isinstance(uptime, int) else 0, "agents": len(body.get("agents", {}))}
        self._publish(topic, json.dumps(payload).encode(), True)
        if self.discovery is not None:
            self.discovery.board(fleet, device, topic)

    def agent_published(self, device: str, agent: str, body: dict[str, Any]) -> None:
        base, level = self._base(device, agent), topic_level(str(body.get("topic", "")))
        if base is None or level is None:
            return
        payload = {"ts": time.time(), "data": json_of(bytes(body.get("data", b"")))}
        self._publish(f"{base}/out/{level}", json.dumps(payload).encode(), True)
        fleet = self._fleet_of(device)
        if self.discovery is not None and fleet is not None:
            self.discovery.agent_output(fleet, device, agent, level, f"{base}/out/{level}")

    def agent_line(self, device: str, agent: str, body: dict[str, Any]) -> None:
        base = self._base(device, agent)
        if base is None:
            return
        payload = {"ts": time.time(), "line": body["line"], "dropped": body.get("dropped", 0)}
        self._publish(f"{base}/{protocol.LOG}", json.dumps(payload).encode(), False)
