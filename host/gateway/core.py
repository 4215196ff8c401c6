"""The gateway: the host end of every board's link.

    async with Gateway(broker="mqtt://127.0.0.1:1883", db="gateway.db") as gw:
        await gw.serve_forever()

It subscribes to every device's status, tele, up/+ and log/+ topics, verifies each envelope
(known device, HMAC, sequence newer than the last one accepted), routes requests to handlers
(router.py), stores telemetry and memory-log replicas, audits what agents do, and answers on
down/{agent} and ctl with envelopes sealed with the device's key.

Delivery: paho runs the socket in its own thread and hands messages to the event loop. Each
message is acknowledged to the broker (manual PUBACK) only after its effects are committed to
SQLite, so a gateway killed mid-stream loses nothing; the replay check makes the broker's
redeliveries harmless.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import paho.mqtt.client as mqtt

from microfang import console
from microfang.firmware import cbor, envelope
from microfang.gateway.router import Request, Router
from microfang.gateway.store import Store
from microfang.gateway.transfers import BOARD_KINDS, Transfers

_TOPIC = re.compile(r"^mf/([^/]+)/([^/]+)/(status|tele|up|log)(?:/([a-z0-9][a-z0-9_-]{0,31}))?$")
DROP_REASONS = ("malformed", "oversized", "unknown-device", "forged", "replay", "unknown-agent")


def publish_text(body: Any) -> str:
    """An agent's publish {topic, data} as text: CBOR text as is, other CBOR as JSON."""
    data = body.get("data") if isinstance(body, dict) else body
    if isinstance(data, (bytes, bytearray)):
        try:
            data = cbor.loads(bytes(data), max_bytes=len(data))
        except cbor.CBORError:
            return bytes(data).decode("utf-8", "replace")
    return data if isinstance(data, str) else json.dumps(data, default=lambda v: v.hex() if isinstance(v, bytes) else str(v))


def parse_broker(url: str) -> tuple[str, int, bool]:
    parsed = urlparse(url if "://" in url else f"mqtt://{url}")
    tls = parsed.scheme in ("mqtts", "ssl", "tls")
    return parsed.hostname or "127.0.0.1", parsed.port or (8883 if tls else 1883), tls


class Gateway:
    """One gateway process. Keyword-only configuration; use as an async context manager."""

    def __init__(self, *, broker: str = "mqtt://127.0.0.1:1883", db: str | Path = "gateway.db",
                 router: Router | None = None, http_port: int | None = None, client_id: str = "microfang-gateway",
                 user: str | None = None, password: str | None = None, cafile: str | None = None,
                 quiet: bool = False) -> None:
        self.host, self.port, self.tls = parse_broker(broker)
        self.db_path = db
        self.router = router or Router()
        self.http_port = http_port
        self.client_id = client_id
        self.user = user
        self.password = password
        self.cafile = cafile
        self.quiet = quiet
        self.store: Store | None = None
        self.devices: dict[str, dict[str, Any]] = {}
        self.metrics: dict[str, int] = {"messages": 0, "requests": 0, "replies": 0, "telemetry": 0,
                                        "log_records": 0, "publishes": 0, "presence": 0, "denied": 0}
        for reason in DROP_REASONS:
            self.metrics[f"dropped_{reason}"] = 0
        self.connected = False
        self.started = time.time()
        self._queue: asyncio.Queue | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client: mqtt.Client | None = None
        self._tasks: list[asyncio.Task] = []
        self._http: asyncio.base_events.Server | None = None
        self._replies_in_flight: dict[int, tuple[str, str, int]] = {}  # paho mid -> request
        self._missing: dict[str, float] = {}  # unknown device -> when it was last looked up
        self._answers: dict[tuple[str, str], list[asyncio.Future]] = {}  # ask(): waiting for an agent's publish
        self.transfers = Transfers(self)
        self.memory: Any = None  # microfang.memory.service.VectorMemory: episodic memory from the logs

    # ---- lifecycle -----------------------------------------------------------------------

    async def __aenter__(self) -> Gateway:
        self._loop = asyncio.get_running_loop()
        self._queue = asyncio.Queue()
        self.store = Store(self.db_path)
        self.devices = self.store.devices()
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=self.client_id, clean_session=False,
                             manual_ack=True)
        if self.user is not None:
            client.username_pw_set(self.user, self.password)
        if self.tls:
            client.tls_set(ca_certs=self.cafile)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_publish = self._on_publish
        client.max_inflight_messages_set(1000)
        client.max_queued_messages_set(0)
        client.reconnect_delay_set(0.1, 5)
        self._client = client
        client.connect_async(self.host, self.port, keepalive=30)
        client.loop_start()
        self._tasks.append(asyncio.create_task(self._process(), name="microfang[gateway].process"))
        if self.http_port is not None:
            from microfang.gateway.http import serve

            self._http = await serve(self, self.http_port)
        deadline = time.monotonic() + 10
        while not self.connected and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        if not self.connected:
            await self.__aexit__(None, None, None)
            raise ConnectionError(f"cannot reach the MQTT broker at {self.host}:{self.port}")
        for (device, agent), budgets in self.store.agent_budgets().items():
            self.router.set_limits(device, agent, budgets)
        self._resume_requests()
        self._tasks.append(asyncio.create_task(self.transfers.run(), name="microfang[gateway].jobs"))
        return self

    def _resume_requests(self) -> None:
        """Answer the requests a previous run accepted but had not delivered a reply for."""
        assert self.store is not None
        for device, agent, request_id, kind, body in self.store.pending_requests():
            if device not in self.devices:
                continue
            self._start_request(Request(device, agent, kind, request_id, None), body)

    async def __aexit__(self, *exc: object) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            try:
                await task
            except (asyncio.CancelledError, Exception):
                pass
        if self._http is not None:
            self._http.close()
        if self._client is not None:
            self._client.disconnect()
            self._client.loop_stop()
        if self.store is not None:
            self.store.close()

    async def serve_forever(self) -> None:
        await asyncio.Event().wait()

    def add_device(self, device: str, fleet: str = "default", key: bytes | None = None) -> bytes:
        """Register a device and return its key (existing devices keep theirs)."""
        assert self.store is not None
        key = self.store.add_device(device, fleet, key)
        self.devices = self.store.devices()
        return key

    # ---- paho thread -> event loop -------------------------------------------------------

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        sock = client.socket()
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        client.subscribe([("mf/+/+/status", 1), ("mf/+/+/tele", 1), ("mf/+/+/up/+", 1), ("mf/+/+/log/+", 1)])
        self.connected = True

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        self.connected = False

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, reason: Any, props: Any) -> None:
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._reply_delivered, mid)

    def _reply_delivered(self, mid: int) -> None:
        # The broker has the reply (PUBACK): the request is done and will not be answered again.
        request = self._replies_in_flight.pop(mid, None)
        if request is not None and self.store is not None:
            self.store.finish_request(*request)

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        assert self._loop is not None and self._queue is not None
        self._loop.call_soon_threadsafe(self._queue.put_nowait, (message.topic, message.payload, message.mid,
                                                                  message.qos))

    # ---- processing ----------------------------------------------------------------------

    async def _process(self) -> None:
        assert self._queue is not None and self._client is not None
        while True:
            topic, payload, mid, qos = await self._queue.get()
            try:
                self.handle(topic, payload)
            except Exception as e:  # a bug must not stop the gateway: log it, keep routing
                self._log(f"error handling {topic}: {e!r}")
            if qos:
                self._client.ack(mid, qos)  # only now: its effects are committed

    def _log(self, line: str) -> None:
        if not self.quiet:
            console.err_console.print(f"[gateway] {line}", markup=False, highlight=False)

    def _drop(self, reason: str, topic: str, detail: str) -> None:
        self.metrics[f"dropped_{reason}"] += 1
        self._log(f"dropped {reason}: {topic}: {detail}")

    def handle(self, topic: str, payload: bytes) -> None:
        """Handle one message from the broker (synchronously; requests run as tasks)."""
        assert self.store is not None
        self.metrics["messages"] += 1
        m = _TOPIC.match(topic)
        if m is None:
            self._drop("malformed", topic, "topic outside mf/{fleet}/{device}/...")
            return
        fleet, device, kind, agent = m.groups()
        record = self.devices.get(device) or self._registered_since(device)
        if record is None or record["fleet"] != fleet:
            self._drop("unknown-device", topic, f"unknown device {device!r} in fleet {fleet!r}")
            return
        if kind == "status":  # the broker publishes the last will itself: plain text, no envelope
            online = payload == b"online"
            record["online"] = online
            self.store.set_presence(device, online)
            self.metrics["presence"] += 1
            return
        try:
            doc = envelope.open_envelope(payload, lambda dev: record["key"] if dev == device else None)
        except envelope.EnvelopeError as e:
            reason = "unknown-device" if e.reason == "unknown-device" else e.reason
            self._drop(reason, topic, str(e))
            return
        if not record["window"].fresh(doc["seq"]):
            self._drop("replay", topic, f"sequence {doc['seq']} was already accepted (latest {record['window'].highest})")
            return
        if kind in ("up", "log") and doc["agent"] != agent:
            self._drop("unknown-agent", topic, f"envelope names agent {doc['agent']!r}, the topic {agent!r}")
            return
        self.store.begin()
        try:
            record["window"].accept(doc["seq"])
            self._dispatch(device, kind, doc)
            self.store.save_seqs(device, record["window"], record["down_seq"])
            self.store.commit()
        except BaseException:
            self.store.db.execute("ROLLBACK")
            raise

    def _registered_since(self, device: str) -> dict[str, Any] | None:
        """A device added to the registry while we run (`microfang keys add`, `microfang flash`):
        one indexed lookup of that name. A name found missing is not looked up again for a
        second, so a flood of messages from unknown devices costs one lookup per name per second."""
        assert self.store is not None
        now = time.monotonic()
        if now - self._missing.get(device, -2.0) < 1.0:
            return None
        record = self.store.device(device)
        if record is None:
            if len(self._missing) >= 10_000:
                self._missing.clear()  # bounded: forgetting only costs another lookup
            self._missing[device] = now
            return None
        self._missing.pop(device, None)
        self.devices[device] = record
        return record

    def _dispatch(self, device: str, kind: str, doc: dict[str, Any]) -> None:
        assert self.store is not None
        agent = doc["agent"]
        if kind == "tele":
            self.metrics["telemetry"] += 1
            self.store.add_telemetry(device, doc["body"])
        elif kind == "log":
            records = [(int(s), bytes(p)) for s, p in doc["body"]]
            self.metrics["log_records"] += len(records)
            held = self.store.replicate(device, agent, records)
            self.send(device, agent, "log_ack", held, control=True)
            if self.memory is not None:
                self.memory.index_log(device, agent, records)
        elif doc["kind"] in ("request", "publish") and not self._permitted(device, agent, doc["kind"]):
            # The board's sandbox should have stopped this: a tampered board, or a bundle that is
            # not the one the host installed. Refused and audited, whatever the board says.
            self.metrics["denied"] += 1
            self.store.audit(device, agent, f"{doc['kind']} denied", {"reason": "not allowed by the registered manifest"})
            if doc["kind"] == "request" and isinstance(doc["body"], dict):
                request = Request(device, agent, str(doc["body"].get("kind", "")), int(doc["body"].get("id", 0)), None)
                self._reply(request, False, f"{doc['kind']} is not allowed by the agent's registered manifest")
        elif doc["kind"] == "request":
            body = doc["body"]
            self.metrics["requests"] += 1
            request = Request(device, agent, str(body.get("kind", "")), int(body.get("id", 0)), None)
            raw = bytes(body.get("body") or b"\xf6")
            self.store.audit(device, agent, "request", {"kind": request.kind, "id": request.id})
            # Kept until the broker acknowledges the reply: a crash in between answers it again.
            self.store.add_request(device, agent, request.id, request.kind, raw)
            self._start_request(request, raw)
        elif doc["kind"] == "agent":
            body = doc["body"] if isinstance(doc["body"], dict) else {}
            budgets = body.get("budgets") if isinstance(body.get("budgets"), dict) else {}
            detail: dict[str, Any] = {"version": body.get("version"), "budgets": budgets}
            registered = self.manifest_of(device, agent)
            if registered is not None:
                # The installed manifest's budgets apply, not what the board says about itself.
                if registered.get("budgets", {}) != budgets or registered["version"] != body.get("version"):
                    detail["registered"] = {"version": registered["version"], "budgets": registered.get("budgets")}
                budgets = registered.get("budgets", {})
            self.store.set_agent(device, agent, int(body.get("version", 0)), budgets)
            self.router.set_limits(device, agent, budgets)
            self.store.audit(device, agent, "spawned", detail)
        elif doc["kind"] in BOARD_KINDS:
            self.transfers.on_board(device, agent, doc["kind"], doc["body"])
        elif doc["kind"] == "publish":
            self.metrics["publishes"] += 1
            self.store.audit(device, agent, "publish", {"topic": doc["body"].get("topic")})
            waiting = self._answers.get((device, agent))
            while waiting:
                future = waiting.pop(0)
                if not future.done():
                    future.set_result(doc["body"])
                    break

    def _start_request(self, request: Request, raw: bytes) -> None:
        try:
            # The agent's body is CBOR it encoded itself (the ABI's payload format).
            request.body = cbor.loads(raw, max_bytes=envelope.MAX_ENVELOPE)
        except cbor.CBORError as e:
            self._reply(request, False, f"request body is not CBOR: {e}")
            return
        self.router.dispatch(request, self._reply)

    def _reply(self, request: Request, ok: bool, body: Any) -> None:
        reply: dict[str, Any] = {"id": request.id, "ok": ok}
        if not ok:
            reply["error"] = str(body)
        elif isinstance(body, dict):
            reply.update(body)
        else:
            reply["body"] = body
        self.metrics["replies"] += 1
        if self.store is not None:
            # Every answer is audited next to its request: what was asked and what came back.
            detail = {"id": request.id, "kind": request.kind, "ok": ok}
            if isinstance(body, dict) and "tokens" in body:
                detail["tokens"] = body["tokens"]
            if not ok:
                detail["error"] = str(body)[:200]
            self.store.audit(request.device, request.agent, "reply", detail)
        mid = self.send(request.device, request.agent, "reply", reply)
        self._replies_in_flight[mid] = (request.device, request.agent, request.id)

    def send(self, device: str, agent: str, kind: str, body: Any, control: bool = False) -> int:
        """Seal and publish a message to a device: down/{agent}, or ctl for commands."""
        assert self._client is not None and self.store is not None
        record = self.devices[device]
        record["down_seq"] += 1
        sealed = envelope.seal(record["key"], device, record["down_seq"], agent, kind, body, int(time.time() * 1000))
        topic = f"mf/{record['fleet']}/{device}/" + ("ctl" if control else f"down/{agent}")
        info = self._client.publish(topic, sealed, qos=1)
        self.store.save_seqs(device, record["window"], record["down_seq"])
        return info.mid

    async def ask(self, device: str, agent: str, body: Any, timeout: float = 10.0) -> Any:
        """Send an agent a message event and wait for what it publishes next: {topic, data}
        with `data` the agent's own bytes (CBOR by convention). Raises TimeoutError."""
        if device not in self.devices:
            raise KeyError(f"no device {device!r}")
        assert self._loop is not None
        future = self._loop.create_future()
        self._answers.setdefault((device, agent), []).append(future)
        self.send(device, agent, "message", body)
        try:
            return await asyncio.wait_for(future, timeout)
        finally:
            waiting = self._answers.get((device, agent), [])
            if future in waiting:
                waiting.remove(future)

    # ---- what handlers ask of the gateway ----------------------------------------------------

    def _permitted(self, device: str, agent: str, host_function: str) -> bool:
        """Whether the registered manifest lets the agent call `host_function` (no record: the
        board's own check stands, as for agents started outside flash/deploy)."""
        manifest = self.manifest_of(device, agent)
        if manifest is None:
            return True
        permissions = manifest.get("permissions", {})
        return host_function in permissions.get("allowed", []) and host_function not in permissions.get("denied", [])

    def secrets_of(self, device: str) -> list[bytes]:
        """Keys that must never leave through a bridge: the device's and its fleet's signing key."""
        record = self.devices.get(device)
        if record is None or self.store is None:
            return []
        fleet_key = self.store.sign_key(record["fleet"], create=False)
        return [record["key"]] + ([fleet_key] if fleet_key else [])

    def fleet_of(self, device: str) -> str | None:
        record = self.devices.get(device)
        return None if record is None else record["fleet"]

    def manifest_of(self, device: str, agent: str) -> dict[str, Any] | None:
        """The agent's manifest as the host installed it (flash, deploy, migrate), or None:
        permissions come from here, never from what a board says."""
        assert self.store is not None
        return self.store.manifest(device, agent)

    # ---- status --------------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        online = sum(1 for d in self.devices.values() if d.get("online"))
        return {"status": "ok" if self.connected else "degraded", "broker_connected": self.connected,
                "devices": len(self.devices), "online": online, "uptime_s": round(time.time() - self.started, 1),
                "pending_requests": len(self.router.pending), "active_jobs": len(self.transfers.active),
                "memory": None if self.memory is None else {"embedder": self.memory.embedder.name,
                                                            "episodic_indexed": self.memory.indexed},
                "request_kinds": sorted(self.router.handlers)}
