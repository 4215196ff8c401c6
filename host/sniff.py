"""`microfang sniff`: the wire, readable. Subscribes to a fleet's topics (mf/# by default) and
turns each CBOR envelope (firmware/envelope.py) into a line: topic, kind, agent, sequence and a
body with byte strings shown as text when they are text. With the gateway's database the
envelope's HMAC is checked too, so a forged or unknown sender stands out.

`describe` does the decoding (a library call that returns data); the CLI prints what it returns.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from microfang.config import parse_broker
from microfang.firmware import cbor, envelope
from microfang.firmware.errors import MicrofangError

if TYPE_CHECKING:
    from microfang.ops import Where

KeyFor = Callable[[str], bytes | None]


def readable(value: Any) -> Any:
    """CBOR values as JSON can show them: bytes as text when they are UTF-8, else hex."""
    if isinstance(value, bytes | bytearray):
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            return "0x" + bytes(value).hex()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # NaN and infinities are not JSON
    if isinstance(value, dict):
        return {str(k): readable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [readable(v) for v in value]
    return value


def describe(topic: str, payload: bytes, key_for: KeyFor | None = None) -> dict[str, Any]:
    """What one message on the wire says: {topic, bytes, and either the envelope's fields with
    `check` (verified, forged, unknown-device, unchecked) or `error` naming why it is not one}."""
    out: dict[str, Any] = {"topic": topic, "bytes": len(payload)}
    if topic.endswith("/status"):  # presence is plain text ("online", "offline")
        out["presence"] = payload.decode("utf-8", "replace")
        return out
    try:
        doc = cbor.loads(payload, max_bytes=envelope.MAX_ENVELOPE, max_items=512)
    except cbor.CBORError as e:
        out["error"] = f"not CBOR: {e}"
        return out
    if not isinstance(doc, dict) or doc.get("v") != envelope.VERSION:
        out["error"] = f"not a version {envelope.VERSION} envelope"
        return out
    out.update({k: readable(doc.get(k)) for k in ("dev", "agent", "kind", "seq", "ts")})
    out["body"] = readable(doc.get("body"))
    if key_for is None:
        out["check"] = "unchecked"
        return out
    try:
        envelope.open_envelope(payload, key_for)
        out["check"] = "verified"
    except envelope.EnvelopeError as e:
        out["check"] = e.reason
    return out


def line(view: dict[str, Any]) -> str:
    """One line for a person: `topic kind agent #seq [check] body`."""
    if "presence" in view:
        return f"{view['topic']} presence {view['presence']}"
    if "error" in view:
        return f"{view['topic']} ({view['bytes']} B) {view['error']}"
    check = "" if view.get("check") in (None, "unchecked", "verified") else f" [{view['check'].upper()}]"
    body = json.dumps(view["body"], ensure_ascii=False, separators=(",", ":"), default=str)
    agent = f" {view['agent']}" if view.get("agent") else ""
    return f"{view['topic']} {view['kind']}{agent} #{view['seq']}{check} {body}"


def keys_from(db: Where | None) -> KeyFor | None:
    """The device keys of a gateway database, to check envelopes with (None: no checking)."""
    if db is None:
        return None
    from microfang.ops import open_store

    store = open_store(db)
    try:
        keys = {name: d["key"] for name, d in store.devices().items()}
    finally:
        store.close()
    return keys.get


def sniff(broker: str, topics: list[str], on_message: Callable[[dict[str, Any]], None], *,
          key_for: KeyFor | None = None, seconds: float | None = None, count: int | None = None,
          user: str | None = None, password: str | None = None, cafile: str | None = None) -> int:
    """Subscribe to `topics` and hand each message's description to `on_message` until `seconds`
    pass or `count` messages came (None: until interrupted); returns how many were seen."""
    import paho.mqtt.client as mqtt

    host, port, tls = parse_broker(broker)
    seen, done, failure = [0], threading.Event(), []
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"microfang-sniff-{time.time_ns() % 10**9}")
    if user:
        client.username_pw_set(user, password)
    if tls:
        client.tls_set(ca_certs=cafile)

    def connected(c: Any, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        if reason.is_failure:
            failure.append(f"the broker at {host}:{port} refused the connection: {reason}")
            done.set()
            return
        c.subscribe([(topic, 0) for topic in topics])

    def message(c: Any, userdata: Any, msg: Any) -> None:
        on_message(describe(msg.topic, bytes(msg.payload), key_for))
        seen[0] += 1
        if count is not None and seen[0] >= count:
            done.set()

    client.on_connect, client.on_message = connected, message
    try:
        client.connect(host, port, keepalive=30)
    except OSError as e:
        raise MicrofangError(f"cannot reach the MQTT broker at {host}:{port} ({e.strerror or e})") from None
    client.loop_start()
    try:
        done.wait(seconds)
    finally:
        client.loop_stop()
        client.disconnect()
    if failure:
        raise MicrofangError(failure[0])
    return seen[0]
