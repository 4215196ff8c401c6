"""The gateway: the host end of every board's link.

    async with Gateway(broker="mqtt://127.0.0.1:1883", db="gateway.db") as gw:
        await gw.serve_forever()

It subscribes to every device's status, tele, up/+ and log/+ topics (firmware/protocol.py),
verifies each envelope (a device of the registry, registry.py; HMAC; a sequence newer than
the last one accepted; each one verified is also what presence.py believes a device online
by, status messages being unauthenticated claims), hands each message to the handler of its kind (board_messages.py): requests
to requests.py and the router, telemetry and memory-log replicas to the store, the boards'
deploy answers to transfers.py; it audits what agents do and answers on down/{agent} and ctl
with envelopes sealed with the device's key. Jobs queued in the store run as transfers
(deploy, migrate) or commands (commands.py), by whichever gateway claims them (jobrunner.py).

Plug-ins see it as a `microfang.request.GatewayAPI`; they hook in with `router.add(kind,
handler)`, `add_log_listener` (replicated memory-log records) and `add_health_part`.

Delivery: the broker session (broker_session.py) runs on the event loop. Each
message is handled in one store transaction and acknowledged to the broker (manual PUBACK) only
once that has committed: what it makes the gateway do (publishing, starting a request) waits
for the commit too (`Store.after_commit`). When the store fails (disk full, locked, damaged)
the message is not acknowledged: it is tried again with back-off while /healthz reports 503
with the reason, and a gateway killed meanwhile gets it again from the broker. The replay
check, read from the store inside the transaction, makes redeliveries harmless. Every field a
board sends is checked (shapes.py) before it is used.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from microfang import console
from microfang.config import parse_broker
from microfang.firmware import envelope, protocol
from microfang.gateway import fastcbor, http, metrics, peers, shapes
from microfang.gateway.agentlines import AgentLines
from microfang.gateway.batches import Batches
from microfang.gateway.board_messages import BoardMessages, LogListener
from microfang.gateway.broker_session import BrokerSession, BrokerSettings
from microfang.gateway.commands import Commands
from microfang.gateway.db import StoreFailure
from microfang.gateway.discovery import DEFAULT_PREFIX as DISCOVERY_PREFIX
from microfang.gateway.jobrunner import JobRunner
from microfang.gateway.outputs import DEFAULT_PREFIX, Outputs
from microfang.gateway.overlimit import BACKLOG, Unverified
from microfang.gateway.peers import Peers
from microfang.gateway.presence import Presence
from microfang.gateway.refusals import Refusals
from microfang.gateway.registry import Registry
from microfang.gateway.requests import Requests
from microfang.gateway.router import Router
from microfang.gateway.store import SERVICE_PREFIX, QuotaExceeded, Store
from microfang.gateway.transfers import Transfers

DROP_REASONS = ("malformed", "oversized", "unknown-device", "forged", "replay", "unknown-agent", "over-quota",
                "error")

TOPICS_KEPT = 100_000  # parsed topics remembered (a 10,000-board fleet has ~3 each)
DROP_LOG_S = 1.0  # one log line per drop reason a second, at most


class Gateway:
    """One gateway process. Keyword-only configuration; use as an async context manager."""

    def __init__(self, *, broker: str = "mqtt://127.0.0.1:1883", db: str | Path = "gateway.db",
                 router: Router | None = None, http_port: int | None = None, name: str | None = None,
                 user: str | None = None, password: str | None = None, cafile: str | None = None,
                 quiet: bool = False, outputs: str = DEFAULT_PREFIX, discovery: str = DISCOVERY_PREFIX) -> None:
        self.host, self.port, self.tls = parse_broker(broker)
        self.db_path = db
        self.router = router or Router()
        self.http_port = http_port
        self.name = name or peers.default_name(str(db))  # unique among the gateways on one store
        # With a broker user, the client id is the user name: the production broker binds them
        # (use_username_as_clientid), so each gateway has a user of its own.
        self.client_id = user or f"{SERVICE_PREFIX}gateway-{self.name}"
        self.user = user
        self.password = password
        self.cafile = cafile
        self.quiet = quiet
        # Agents' publishes and lines as JSON on the users' topic tree ("" : none).
        self.outputs = Outputs(outputs, self.fleet_of, self._publish_once, discovery) if outputs else None
        self.store: Store | None = None
        self.agent_lines: AgentLines | None = None  # agents' mf_log lines (agentlines.py)
        self.registry: Registry | None = None
        self.peers: Peers | None = None
        self.requests: Requests | None = None
        self.presence: Presence | None = None  # whom it believes online: status claims checked against envelopes
        self.refusals: Refusals | None = None
        self.unverified: Unverified | None = None  # requests over their rate limit refused cheaply
        self.metrics: dict[str, int] = {"messages": 0, "requests": 0, "replies": 0, "telemetry": 0,
                                        "log_records": 0, "publishes": 0, "presence": 0, "denied": 0,
                                        "undelivered": 0, "lines": 0}
        for reason in DROP_REASONS:
            self.metrics[f"dropped_{reason}"] = 0
        self.metrics["store_failures"] = 0
        self.metrics["batches"] = 0
        self.metrics["refused_unverified"] = 0
        self.metrics["fenced"] = 0
        self.metrics["replies_resent"] = 0
        self.started = time.time()
        self.batches: Batches | None = None
        self.session: BrokerSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._drop_logged: dict[str, float] = {}  # reason -> when a drop of it was last logged
        self._drops_unlogged: dict[str, int] = {}  # reason -> drops since then
        self._tasks: list[asyncio.Task] = []
        self._http: asyncio.base_events.Server | None = None
        self._answers: dict[tuple[str, str], list[asyncio.Future]] = {}  # ask(): waiting for an agent's publish
        self._health_parts: dict[str, Callable[[], Any]] = {}
        self._topics: dict[str, tuple[str, str, str, str | None] | None] = {}  # _parse()
        self.transfers = Transfers(self)
        self.commands = Commands(self)
        self.board_messages = BoardMessages(self)  # a handler per kind of message a board sends
        self.jobrunner = JobRunner(self)  # with other gateways on the store: who runs which job

    # ---- hooks ---------------------------------------------------------------------------

    def add_log_listener(self, listener: LogListener) -> None:
        """Call `listener(device, agent, records)` with the memory-log records of every
        replication, once they are stored (episodic memory indexes them)."""
        self.board_messages.log_listeners.append(listener)

    def add_health_part(self, name: str, part: Callable[[], Any]) -> None:
        """Report `part()` as `name` in health() (and /healthz)."""
        self._health_parts[name] = part

    # ---- lifecycle -----------------------------------------------------------------------

    async def __aenter__(self) -> Gateway:
        self._loop = asyncio.get_running_loop()
        self.store = Store(self.db_path, exclusive=True)
        try:
            self.peers = Peers(self.store, self.name)
            self.peers.join()
            self.store.db.add_session_hook(self.peers.join)  # a lost PostgreSQL session took the name lock
        except BaseException:
            self.store.close()
            raise
        self.registry = Registry(self.store)
        self.agent_lines = AgentLines(self.store)
        self.presence = Presence(self.store, lambda: self.devices, self.metrics)
        self.requests = Requests(self.store, self.router, self.send, self.resend, self.metrics, self.defer, self.name)
        self.refusals = Refusals(self.store, self.defer)
        self.unverified = Unverified(self.store, self.router, self.refusals, self.metrics)
        self.batches = Batches(self.store, self._handle_one, self._ack, self.log, self.metrics, self._source,
                               self._drop)
        self._tasks.append(asyncio.create_task(self.batches.run(), name="microfang[gateway].process"))
        self.session = BrokerSession(BrokerSettings(self.host, self.port, self.tls, self.client_id, self.user,
                                                    self.password, self.cafile),
                                     shared=self._shared, on_message=self.batches.offer, on_delivered=self.defer)
        if self.http_port is not None:
            self._http = await http.serve(self.health, partial(metrics.exposition, self), self.http_port)
        # The unfinished requests of an earlier run (and of dead peers), claimed before the
        # session delivers this run's first message: one accepted now is started once, by intake,
        # never resumed as well (that answered it twice).
        pending = self.peers.own() + self.peers.adopt()
        try:
            await self.session.open()
        except ConnectionError:
            await self.__aexit__(None, None, None)
            raise
        for device, agent in self.store.agent_budgets():  # the registered manifests' (a database of
            registered = self.registry.manifest_of(device, agent)  # older gateways kept what boards announced)
            self.router.set_limits(device, agent, {} if registered is None else registered.get("budgets", {}))
        self.requests.resume(pending, self.devices)
        self._tasks.append(asyncio.create_task(self.jobrunner.run(), name="microfang[gateway].jobs"))
        self._tasks.append(asyncio.create_task(self._keep_peers(), name="microfang[gateway].peers"))
        self._tasks.append(asyncio.create_task(self._keep_presence(), name="microfang[gateway].presence"))
        return self

    def _ack(self, mid: int, qos: int) -> None:
        assert self.session is not None
        self.session.ack(mid, qos)

    async def _keep_peers(self) -> None:
        """Say this gateway is alive; finish the requests of gateways that died."""
        assert self.peers is not None and self.requests is not None
        while True:
            await asyncio.sleep(peers.HEARTBEAT_S)
            try:
                self.peers.beat()
                self.requests.resume(self.peers.adopt(), self.devices)
            except StoreFailure as e:
                self.log(f"heartbeat: {e}")

    async def _keep_presence(self) -> None:
        """Once a second: believe the "offline" claims nothing disproved and the boards' silence (presence.py)."""
        assert self.presence is not None
        while True:
            await asyncio.sleep(1.0)
            if self.presence.due():
                self.defer(self.presence.expire)
            if self.registry is not None and self.registry.due():
                self.defer(self.registry.prune)  # devices removed from the store (`keys remove`)

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
        if self.session is not None:
            await self.session.close()
        if self.store is not None:
            if self.refusals is not None:
                try:
                    with self.store.transaction():
                        self.refusals.flush()  # the last second's refusals, held for their aggregate record
                except StoreFailure as e:
                    self.log(f"auditing refusals: {e}")
            if self.peers is not None:
                try:
                    self.peers.leave()
                except StoreFailure as e:
                    self.log(f"leaving: {e}")
            self.store.close()

    async def serve_forever(self) -> None:
        await asyncio.Event().wait()

    @property
    def connected(self) -> bool:
        """Connected to the broker now."""
        return self.session is not None and self.session.connected

    @property
    def devices(self) -> dict[str, dict[str, Any]]:
        """The registered devices: key, fleet, replay window, presence (empty until started)."""
        return {} if self.registry is None else self.registry.devices

    def add_device(self, device: str, fleet: str = "default", key: bytes | None = None) -> bytes:
        """Register a device and return its key (existing devices keep theirs)."""
        assert self.registry is not None
        return self.registry.add(device, fleet, key)

    def _shared(self, topic: str) -> str:
        """Gateways on a shared store split the fleet's messages (an MQTT shared subscription:
        each message goes to one of them); presence is retained, which shared subscriptions do
        not deliver, so every gateway follows it."""
        if self.store is None or not self.store.shared or topic.endswith("/" + protocol.STATUS):
            return topic
        return f"$share/microfang/{topic}"

    # ---- processing ----------------------------------------------------------------------

    def defer(self, action: Callable[[], None]) -> None:
        """Run `action` (a write: a reply, a delivered reply's end) in the next batch's transaction."""
        assert self.batches is not None
        self.batches.defer(action)

    def _handle_one(self, topic: str, payload: bytes) -> None:
        try:
            self.handle(topic, payload)
        except StoreFailure:
            raise
        except Exception as e:  # a bug must not stop the gateway: log it (its savepoint rolled back), keep routing
            self._drop("error", topic, repr(e))

    def _source(self, topic: str) -> str | None:
        """The queue a message joins (batches.py): its device's; "" for a name not known yet
        (handle() looks it up); None for a topic outside the scheme or a device of another
        fleet, dropped now."""
        parsed = self._parse(topic)
        if parsed is None:
            self.metrics["messages"] += 1
            self._drop("malformed", topic, "topic outside mf/{fleet}/{device}/{channel}[/{agent}]")
            return None
        record = self.devices.get(parsed[1])
        if record is None:
            return ""
        if record["fleet"] != parsed[0]:
            self.metrics["messages"] += 1
            self._drop("unknown-device", topic, f"unknown device {parsed[1]!r} in fleet {parsed[0]!r}")
            return None
        return parsed[1]

    def _parse(self, topic: str) -> tuple[str, str, str, str | None] | None:
        """protocol.parse_topic, remembered: a fleet's topics are few, and each message's
        topic is parsed twice (its queue, its handling)."""
        try:
            return self._topics[topic]
        except KeyError:
            pass
        if len(self._topics) >= TOPICS_KEPT:
            self._topics.clear()  # a flood of made-up topics: forgetting costs a parse each
        parsed = self._topics[topic] = protocol.parse_topic(topic)
        return parsed

    def log(self, line: str) -> None:
        """One line on stderr, unless quiet."""
        if not self.quiet:
            console.err_console.print(f"[gateway] {line}", markup=False, highlight=False)

    def _drop(self, reason: str, topic: str, detail: str) -> None:
        """Count a dropped message and log it in one line; of a flood, one line per reason a
        second, with how many more there were (a line costs more than the drop)."""
        self.metrics[f"dropped_{reason}"] += 1
        now = time.monotonic()
        if now - self._drop_logged.get(reason, -DROP_LOG_S) < DROP_LOG_S:
            self._drops_unlogged[reason] = self._drops_unlogged.get(reason, 0) + 1
            return
        self._drop_logged[reason] = now
        more = self._drops_unlogged.pop(reason, 0)
        self.log(f"dropped {reason}: {topic}: {detail}" + (f" (and {more} more in the last second)" if more else ""))

    def handle(self, topic: str, payload: bytes) -> None:
        """Handle one message from the broker (synchronously; requests run as tasks)."""
        assert self.store is not None and self.registry is not None and self.presence is not None
        assert self.unverified is not None
        self.metrics["messages"] += 1
        parsed = self._parse(topic)
        if parsed is None:
            self._drop("malformed", topic, "topic outside mf/{fleet}/{device}/{channel}[/{agent}]")
            return
        fleet, device, channel, agent = parsed
        record = self.registry.find(device)
        if record is None or record["fleet"] != fleet:
            self._drop("unknown-device", topic, f"unknown device {device!r} in fleet {fleet!r}")
            return
        if channel == protocol.STATUS:  # plain text, no envelope (the broker publishes the last will): a claim
            self.presence.claim(device, record, payload == protocol.ONLINE)
            return
        try:
            doc, mac = envelope.decode_envelope(payload, codec=fastcbor)
        except envelope.EnvelopeError as e:
            self._drop(e.reason, topic, str(e))
            return
        # Before the HMAC: a flood's replays, requests over their rate limit (fenced at commit).
        screened = self.unverified.screen(device, record, agent if channel == protocol.UP else None, doc, mac,
                                          payload, self.batches is not None and self.batches.backlog(device) >= BACKLOG)
        if screened is not None:
            if screened == "replay":
                self._drop("replay", topic, "sequence number already accepted (seen before checking its HMAC)")
            return
        try:
            envelope.verify_envelope(doc, mac, lambda dev: record["key"] if dev == device else None, codec=fastcbor)
        except envelope.EnvelopeError as e:
            self._drop(e.reason, topic, str(e))
            return
        if agent is not None and doc["agent"] != agent:
            self._drop("unknown-agent", topic, f"envelope names agent {doc['agent']!r}, the topic {agent!r}")
            return
        bad = shapes.problem(doc["kind"], doc["body"])
        if bad is not None:
            self._drop("malformed", topic, bad)
            return
        with self.store.transaction(savepoint=True):
            # The replay window as committed (gateways sharing a store take turns on it).
            window = self.store.window(device, record["window"])
            undo = window.highest, window.bits
            if not window.accept(doc["seq"]):
                self._drop("replay", topic, f"sequence {doc['seq']} was already accepted (latest {window.highest})")
                return
            if self.unverified.copy_of_refused(device, doc["seq"], mac):
                self.store.save_window(device, window)  # verified: its number is taken
                self._drop("replay", topic, f"sequence {doc['seq']}: a copy of a request refused in this batch")
                return
            try:
                self.presence.heard(device, record)
                handler = self.board_messages.handlers.get((channel, doc["kind"]))
                try:
                    if handler is not None:
                        handler(device, doc["agent"], doc["body"])
                except QuotaExceeded as e:  # refused before anything of it was written
                    self._drop("over-quota", topic, str(e))
                self.store.save_window(device, window)
            except BaseException:
                window.highest, window.bits = undo  # rolled back with its savepoint
                raise
        self.store.after_commit(partial(record.__setitem__, "window", window))

    def answered(self, device: str, agent: str, body: Any) -> None:
        """An agent published `body`: the answer the oldest ask() waiting on it gets."""
        waiting = self._answers.get((device, agent))
        while waiting:
            future = waiting.pop(0)
            if not future.done():
                future.set_result(body)
                break

    def send(self, device: str, agent: str, kind: str, body: Any, control: bool = False,
             on_delivered: Callable[[], None] | None = None) -> bytes:
        """Seal and publish a message to a device: down/{agent}, or ctl for commands; once the
        current transaction commits (at once outside one). `on_delivered()` runs when the
        broker has it. Returns the sealed envelope."""
        assert self.store is not None
        record = self.devices[device]
        seq = self.store.next_down_seq(device)
        sealed = envelope.seal(record["key"], device, seq, agent, kind, body, int(time.time() * 1000), codec=fastcbor)
        topic = protocol.topic(record["fleet"], device, protocol.CTL) if control else \
            protocol.topic(record["fleet"], device, protocol.DOWN, agent)
        self.store.after_commit(partial(self._publish, topic, sealed, on_delivered))
        return sealed

    def resend(self, device: str, agent: str, sealed: bytes, on_delivered: Callable[[], None] | None = None) -> None:
        """Publish an envelope sealed earlier (a kept reply) on down/{agent} again, as send() does."""
        assert self.store is not None
        topic = protocol.topic(self.devices[device]["fleet"], device, protocol.DOWN, agent)
        self.store.after_commit(partial(self._publish, topic, sealed, on_delivered))

    def _publish(self, topic: str, sealed: bytes, on_delivered: Callable[[], None] | None) -> None:
        assert self.session is not None
        self.session.publish(topic, sealed, on_delivered)

    def _publish_once(self, topic: str, payload: bytes, retain: bool) -> None:
        if self.session is not None:
            self.session.publish_once(topic, payload, retain)

    async def ask(self, device: str, agent: str, body: Any, timeout: float = 10.0) -> Any:
        """Send an agent a message event and wait for what it publishes next: {topic, data}
        with `data` the agent's own bytes (CBOR by convention). Raises TimeoutError."""
        if device not in self.devices:
            raise KeyError(f"no device {device!r}")
        assert self._loop is not None
        future = self._loop.create_future()
        self._answers.setdefault((device, agent), []).append(future)
        self.send(device, agent, protocol.K_MESSAGE, body)
        try:
            return await asyncio.wait_for(future, timeout)
        finally:
            waiting = self._answers.get((device, agent), [])
            if future in waiting:
                waiting.remove(future)

    # ---- what plug-ins ask of the gateway (microfang.request.GatewayAPI) ----------------------

    def audit(self, device: str, agent: str, action: str, detail: Any) -> None:
        """Append a record to the audit log (committed with the message being handled, if any)."""
        assert self.store is not None
        self.store.audit(device, agent, action, detail)

    def secrets_of(self, device: str) -> list[bytes]:
        assert self.registry is not None
        return self.registry.secrets_of(device)

    def fleet_of(self, device: str) -> str | None:
        assert self.registry is not None
        return self.registry.fleet_of(device)

    def manifest_of(self, device: str, agent: str) -> dict[str, Any] | None:
        assert self.registry is not None
        return self.registry.manifest_of(device, agent)

    # ---- status --------------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        online = sum(1 for d in self.devices.values() if d.get("online"))
        problem = None if self.batches is None or self.store is None else self.batches.problem or self.store.db.problem
        status = "ok" if self.connected and problem is None else "degraded"
        return {"status": status, "broker_connected": self.connected, "store": problem or "ok",
                "devices": len(self.devices), "online": online, "uptime_s": round(time.time() - self.started, 1),
                "pending_requests": len(self.router.pending), "active_jobs": len(self.transfers.active),
                "queued_messages": 0 if self.batches is None else self.batches.queued,
                "request_kinds": sorted(self.router.handlers),
                **{name: part() for name, part in self._health_parts.items()}}
