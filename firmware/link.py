# The board's link to its gateway: MQTT with reconnect, a durable outbox, signed envelopes,
# de-duplication, memory-log replication and telemetry. Topics, message and control kinds are
# protocol.py's: status (retained "online", last will "offline"), tele, up/{agent} and
# log/{agent} board -> gateway; down/{agent} and ctl gateway -> board.
#
# Everything the board sends goes through the outbox, a MemoryLog on flash: a message is
# stored (and gets its sequence number) before it is published at QoS 1, and leaves the
# outbox only when the broker has acknowledged it. After a reboot or a reconnect every
# unacknowledged message is sent again; the gateway drops what it has already seen by
# sequence number, so delivery is at least once on the wire and exactly once in effect.

import os
import struct

from . import abi, cbor, envelope, port, protocol
from .agentlines import AgentLines
from .deploy import Installer
from .errors import MicrofangError
from .memlog import LogError, MemoryLog
from .mqtt import MQTTClient, MQTTError
from .replicator import Replicator
from .supervisor import RUNNING
from .trust import Trust

_OUTBOX_BYTES = 16 * 1024
_CURSOR_EVERY_MS = 1000  # how often acknowledgements are written to flash (wear vs resends)
_BACKOFF_MIN_MS = 250
_BACKOFF_MAX_MS = 30000
_SHORT_OF_MEMORY_SESSIONS = 3  # sessions in a row ended by a MemoryError: then an agent makes room (relieve_memory)
_ANSWERED_KEEP = 1024  # request ids remembered per agent to drop a re-sent reply
_RTT_KEEP = 256  # request round trips kept for telemetry
_DOWN = protocol.DOWN + "/"
_MAX_PACKET = envelope.MAX_ENVELOPE + 256  # one envelope with its topic and packet id; more is dropped unread
_READ_TIMEOUT_MS = 10000  # a packet begun (or a write) must complete within this
# How long a message for a running agent whose queue is full is held (the reader waits: TCP
# backpressure) before it is reported undelivered. A running agent takes an event per
# supervisor round, so a burst of replies waits milliseconds; any other agent (suspended,
# failed, out of fuel, absent) never holds up the downlink: what it cannot queue is reported.
_HOLD_MS = 2000
# What a gateway message with a field of the wrong type raises while it is carried out: the
# message is dropped and counted (it is signed, so the gateway sent it: a bug there, not here).
_BAD_FIELD = (KeyError, TypeError, ValueError, AttributeError, IndexError)


def _jitter(ms):
    # +-25%, so a fleet that lost its broker does not come back in lockstep.
    r = struct.unpack("<H", os.urandom(2))[0] / 65535.0
    return int(ms * (0.75 + 0.5 * r))


def _no_body(command):
    # A lifecycle command names its agent; its body (0) says nothing.
    return lambda agent_id, body: command(agent_id)


class Link:
    """Connects a Supervisor to the gateway. `config` holds device, fleet, key (bytes), host,
    port, the operator's public keys (sign_keys, trust_serial: trust.py) and optionally tls, cafile,
    user, password, keepalive, telemetry_ms."""

    def __init__(self, config, flash, supervisor, clock=port.ticks_ms):
        self.config = config
        self.device = config["device"]
        self.key = config["key"]
        self.fleet = config.get("fleet", "default")
        self.prefix = protocol.prefix(self.fleet, self.device)
        self.supervisor = supervisor
        self.clock = clock
        self.started = clock()
        self.outbox = MemoryLog(flash, "outbox", config.get("outbox_bytes", _OUTBOX_BYTES), root="/link")
        self.flash = flash
        self.installer = Installer(flash, supervisor, Trust(flash, config))
        self.client = None
        self.inflight = {}  # packet id -> outbox seq
        self.acked = set()  # seqs acknowledged but not yet contiguous with the cursor
        self.cursor_written = clock()
        self.down_window = self._read_down_window()
        self.replicator = Replicator(supervisor, self._send_log, clock)
        self.lines = AgentLines(self._send_line, clock)  # agents' mf_log lines, within their budget
        self.answered = {}  # agent -> ReplayWindow of request ids answered (a crashed gateway may answer again)
        self.asked = {}  # (agent, request id) -> when it was asked, for the round-trip figures
        self.rtt_ms = []  # the latest request round trips, agent to agent (telemetry reports them)
        self.stats = {"sent": 0, "received": 0, "duplicates": 0, "rejected": 0, "reconnects": 0, "outbox_full": 0,
                      "dropped_oversized": 0, "dropped_malformed": 0, "undelivered": 0}
        self._held = None  # (seq, since): the down/ message waiting for room in a running agent's queue
        self.connected = False
        self.sent_upto = 0  # highest outbox seq published on the current connection
        self._pending_cursor = 0
        self._stop = False
        self._ended = None  # why the current connection's reader stopped
        self._kick = port.asyncio.Event()
        # ctl kinds -> handler(agent_id, body); deploy and migration commands go to the installer.
        self._controls = {protocol.C_LOG_ACK: self._log_ack, protocol.C_SUSPEND: _no_body(supervisor.suspend),
                          protocol.C_RESUME: _no_body(supervisor.resume), protocol.C_RECLAIM: _no_body(supervisor.reclaim)}

    # ---- sending -------------------------------------------------------------------------

    def send(self, topic, agent, kind, body):
        """Queue a message durably; returns its sequence number (or an abi error code)."""
        seq = self.outbox.last_seq + 1
        sealed = envelope.seal(self.key, self.device, seq, agent, kind, body, port.ticks_diff(self.clock(), self.started))
        record = cbor.dumps([topic, sealed])
        try:
            stored = self.outbox.append(record)
        except LogError as e:
            if self._pending_cursor <= self.outbox.acked:
                self.stats["outbox_full"] += 1
                return e.code
            # Acknowledged messages not yet written off: do it now to make room.
            self._write_cursor(self._pending_cursor)
            try:
                stored = self.outbox.append(record)
            except LogError as e:
                self.stats["outbox_full"] += 1
                return e.code
        self._kick.set()
        return stored

    def agent_outbox(self, agent_id, kind, target, body, request_id):
        """The Supervisor's outbox hook: an agent's publish or request goes up on up/{agent}."""
        if kind == protocol.K_REQUEST:
            doc = {"id": request_id, "kind": target, "body": body}
            if len(self.asked) < _RTT_KEEP:
                self.asked[(agent_id, request_id)] = self.clock()
        else:
            doc = {"topic": target, "data": body}
        seq = self._send_up(agent_id, kind, doc)
        return seq if seq < 0 else 0

    def announce(self, agent_id, manifest):
        """Tell the gateway an agent started here, with the limits it must enforce for it."""
        budgets = manifest.get("budgets") or {}
        self._send_up(agent_id, protocol.K_AGENT, {"version": manifest["version"], "budgets": budgets})

    async def _flush(self):
        """Publish the stored messages not yet sent on this connection, oldest first."""
        if self.outbox.last_seq <= self.sent_upto:
            return
        for seq, record in self.outbox.records(self.sent_upto + 1):
            if not self.connected:
                return
            topic, sealed = cbor.loads(record)
            # In flight before the write: the PUBACK can come back while publish() awaits the
            # socket, and one that finds no entry is lost for good (the outbox then fills up).
            packet_id = self.client.next_packet_id()
            self.inflight[packet_id] = seq
            await self.client.publish(self.prefix + topic, sealed, qos=1, packet_id=packet_id)
            self.sent_upto = seq
            self.stats["sent"] += 1

    def _on_puback(self, packet_id):
        seq = self.inflight.pop(packet_id, None)
        if seq is None:
            return
        self.acked.add(seq)
        # The highest contiguous acknowledged seq, in RAM; written to flash at most once a
        # second (flash wear) or when nothing is in flight: resends after a crash are harmless.
        cursor = max(self.outbox.acked, self._pending_cursor)
        while cursor + 1 in self.acked:
            cursor += 1
            self.acked.discard(cursor)
        self._pending_cursor = cursor
        if cursor > self.outbox.acked:
            if port.ticks_diff(self.clock(), self.cursor_written) >= _CURSOR_EVERY_MS or not self.inflight:
                self._write_cursor(cursor)
            else:
                self._kick.set()

    def _write_cursor(self, cursor):
        self.outbox.ack(cursor)
        self.cursor_written = self.clock()

    # ---- receiving -----------------------------------------------------------------------

    def _read_down_window(self):
        try:
            with self.flash.open("/link/down_window", "rb") as f:
                return envelope.ReplayWindow.loads(f.read())
        except OSError:
            return envelope.ReplayWindow()

    def _write_down_window(self):
        with self.flash.open("/link/down_window.tmp", "wb") as f:
            f.write(self.down_window.dumps())
        self.flash.rename("/link/down_window.tmp", "/link/down_window")

    def _on_message(self, topic, payload):
        """Handle one message from the broker. Returns False when an agent's queue is full:
        the client then holds the PUBACK and stops reading until there is room (the broker
        keeps the message), so a burst of replies is never dropped."""
        if not topic.startswith(self.prefix):
            return True
        try:
            # Views: a deploy chunk's 4 KB stay in the packet, not copied (deploy.Installer.chunk).
            doc = envelope.open_envelope(payload, lambda dev: self.key if dev == self.device else None, views=True)
        except envelope.EnvelopeError:
            self.stats["rejected"] += 1
            return True
        if not self.down_window.fresh(doc["seq"]):
            self.stats["duplicates"] += 1  # a redelivery or a replay: already handled
            return True
        rest = topic[len(self.prefix):]
        try:
            if rest.startswith(_DOWN) and not self._deliver(rest[len(_DOWN):], doc):
                return False
            if rest == protocol.CTL:
                self._control(doc)
        except MicrofangError as e:
            self.supervisor.report(doc["agent"], "fault", "gateway message: %s" % e)
        except _BAD_FIELD as e:
            self._on_drop("malformed", "%s %s: %s %s" % (rest, doc["kind"], type(e).__name__, e))
        self.down_window.accept(doc["seq"])
        self._write_down_window()
        self.stats["received"] += 1
        return True

    def _on_drop(self, reason, text):
        """A message from the broker acknowledged but not carried out (mqtt.py, _on_message)."""
        key = "dropped_" + reason
        self.stats[key] = self.stats.get(key, 0) + 1
        self.supervisor.report("", "link", "dropped %s: %s" % (reason, text))

    def _deliver(self, agent_id, doc):
        """Queue a message or reply for an agent. False: its queue is full and it is running
        (try again: it is held up to _HOLD_MS); what cannot be queued is reported undelivered."""
        if agent_id not in self.supervisor.agents:
            if not protocol.name_ok(agent_id):
                raise ValueError("topic names no agent: %r" % agent_id)
            return self._undelivered(agent_id, doc, "no agent %s on this board" % agent_id)
        if doc["kind"] != protocol.K_REPLY:
            if self.supervisor.post(agent_id, abi.EV_MESSAGE, cbor.dumps(doc["body"]), count_drop=False):
                return True
            return self._full(agent_id, doc)
        request_id = doc["body"].get("id") if isinstance(doc["body"], dict) else 0
        answered = self.answered.get(agent_id)
        if answered is None:
            answered = self.answered[agent_id] = envelope.ReplayWindow(size=_ANSWERED_KEEP)
        if isinstance(request_id, int) and request_id > 0 and not answered.fresh(request_id):
            self.stats["duplicates"] += 1
            return True
        if not self.supervisor.post(agent_id, abi.EV_REPLY, cbor.dumps(doc["body"]), count_drop=False):
            return self._full(agent_id, doc)
        if isinstance(request_id, int) and request_id > 0:
            answered.accept(request_id)
        asked = self.asked.pop((agent_id, request_id), None)
        if asked is not None:
            self.rtt_ms.append(port.ticks_diff(self.clock(), asked))
            if len(self.rtt_ms) > _RTT_KEEP:
                self.rtt_ms.pop(0)
        return True

    def _full(self, agent_id, doc):
        # The agent's queue is full: hold the message for a running agent, report it otherwise.
        state = self.supervisor.agents[agent_id].state
        if state == RUNNING:
            now = self.clock()
            if self._held is None or self._held[0] != doc["seq"]:
                self._held = (doc["seq"], now)
            if port.ticks_diff(now, self._held[1]) < _HOLD_MS:
                return False
        return self._undelivered(agent_id, doc, "queue of agent %s is full (%s)" % (agent_id, state))

    def _undelivered(self, agent_id, doc, reason):
        """Tell the gateway a down/ message was taken (acknowledged) but not queued: nothing
        acknowledged to the broker is lost without a word. True: the message is handled."""
        body = doc["body"]
        request_id = body.get("id") if doc["kind"] == protocol.K_REPLY and isinstance(body, dict) else None
        self.stats["undelivered"] += 1
        self._send_up(agent_id, protocol.K_UNDELIVERED, {"kind": doc["kind"], "id": request_id, "reason": reason})
        return True

    def _control(self, doc):
        kind = doc["kind"]
        if kind in protocol.TRANSFER_COMMANDS:
            self.installer.control(kind, doc["agent"], doc["body"], self._send_up)
            return
        handler = self._controls.get(kind)
        if handler is not None:
            handler(doc["agent"], doc["body"])

    def _log_ack(self, agent_id, seq):
        log = self.supervisor.log(agent_id)
        if log is not None:
            log.ack(int(seq))

    def _send_up(self, agent_id, kind, body):
        return self.send(protocol.UP + "/" + agent_id, agent_id, kind, body)

    def _send_line(self, agent_id, body):
        # Only while connected: lines queued through an outage would take the outbox's room
        # from the requests and replicas that must survive it (a dropped line is counted).
        return self.connected and self._send_up(agent_id, protocol.K_LINES, body) > 0

    def logged(self, agent_id):
        """The Supervisor's on_log hook: an agent appended to its memory log (replicator.py)."""
        if self.replicator.logged(agent_id):
            self._kick.set()

    def _send_log(self, agent_id, records):
        return self.send(protocol.LOG + "/" + agent_id, agent_id, protocol.K_LOG, records)

    # ---- replication and telemetry -------------------------------------------------------

    def telemetry(self):
        try:
            import gc

            free = gc.mem_free() if hasattr(gc, "mem_free") else 0
        except ImportError:
            free = 0
        used, total = self.flash.usage()
        rtt = sorted(self.rtt_ms)
        body = {"uptime_ms": port.ticks_diff(self.clock(), self.started), "free_heap": free,
                "flash_used": used, "flash_total": total, "agents": self.supervisor.stats(),
                "link": dict(self.stats), "rtt_p50_ms": rtt[len(rtt) // 2] if rtt else None}
        self.send(protocol.TELE, "", protocol.K_TELE, body)

    # ---- the loop ------------------------------------------------------------------------

    async def run(self, duration_ms=None):
        """Stay connected (reconnecting with backoff and jitter) until stopped or timed out."""
        backoff = _BACKOFF_MIN_MS
        short = 0  # sessions in a row that ended in a MemoryError
        start = self.clock()
        while not self._stop and (duration_ms is None or port.ticks_diff(self.clock(), start) < duration_ms):
            failed_for_memory = False
            try:
                await self._session(start, duration_ms)
            except (OSError, MQTTError, EOFError) as e:
                self.supervisor.report("", "link", "disconnected: %s" % e)
            except MemoryError as e:  # its agents left the link too little: the link comes first
                self.supervisor.report("", "link", "disconnected: MemoryError: %s" % e)
                failed_for_memory = True
                short += 1
                if short >= _SHORT_OF_MEMORY_SESSIONS:
                    short = 0
                    self.supervisor.relieve_memory("MemoryError: %s" % e)
            except Exception as e:  # a bug must cost a reconnect, never the board's link for good
                self.supervisor.report("", "link", "disconnected: %s: %s" % (type(e).__name__, e))
            if not failed_for_memory:
                short = 0
            if self.connected:  # that session got through: the next outage starts from the shortest wait
                backoff = _BACKOFF_MIN_MS
            self.connected = False
            if self.client is not None:
                self.client.close()
            self.inflight = {}
            if self._stop:
                break
            self.stats["reconnects"] += 1
            await port.sleep_ms(_jitter(backoff))
            backoff = min(backoff * 2, _BACKOFF_MAX_MS)

    async def _session(self, start, duration_ms):
        cfg = self.config
        client = MQTTClient(self.device, cfg["host"], cfg.get("port", 1883), keepalive=cfg.get("keepalive", 30),
                            will=(self.prefix + protocol.STATUS, protocol.OFFLINE, True), user=cfg.get("user"),
                            password=cfg.get("password"), tls=cfg.get("tls", False), cafile=cfg.get("cafile"),
                            on_message=self._on_message, on_puback=self._on_puback,
                            on_busy=self.supervisor.wait_room, on_drop=self._on_drop, max_packet=_MAX_PACKET,
                            read_timeout_ms=cfg.get("read_timeout_ms", _READ_TIMEOUT_MS), clock=self.clock)
        await client.connect(clean_session=False)
        self.client = client
        self.connected = True
        self.sent_upto = self.outbox.acked  # everything unacknowledged goes out again
        self.acked = set()
        self._pending_cursor = self.outbox.acked
        await client.subscribe(protocol.subscriptions(self.fleet, self.device))
        await client.publish(self.prefix + protocol.STATUS, protocol.ONLINE, qos=1, retain=True)
        self.supervisor.report("", "link", "connected to %s:%d" % (cfg["host"], cfg.get("port", 1883)))
        self._ended = None
        reader = port.asyncio.create_task(self._read(client))
        keepalive_ms = cfg.get("keepalive", 30) * 1000 // 2
        telemetry_ms = cfg.get("telemetry_ms", 5000)
        last_ping = last_tele = self.clock()
        try:
            while not self._stop and (duration_ms is None or port.ticks_diff(self.clock(), start) < duration_ms):
                now = self.clock()
                ended = self._ended or client.overdue(now)
                if ended is not None:
                    raise MQTTError(ended)
                if self.installer.ready:
                    self.installer.complete_ready()
                if port.ticks_diff(now, last_tele) >= telemetry_ms:
                    last_tele = now
                    self.replicator.replicate()
                    self.telemetry()
                else:
                    self.replicator.replicate_due(now)
                if port.ticks_diff(now, last_ping) >= keepalive_ms:
                    last_ping = now
                    await client.ping()
                if self._pending_cursor > self.outbox.acked and \
                        port.ticks_diff(now, self.cursor_written) >= _CURSOR_EVERY_MS:
                    self._write_cursor(self._pending_cursor)
                # Clear before flushing: a message queued while the flush awaits the socket
                # sets the event again, and is sent on the next turn instead of waiting.
                self._kick.clear()
                await self._flush()
                # Sleep until something is queued, an ack arrives, or the next timer is due.
                due = min(telemetry_ms - port.ticks_diff(self.clock(), last_tele),
                          keepalive_ms - port.ticks_diff(self.clock(), last_ping))
                if self._pending_cursor > self.outbox.acked:
                    due = min(due, _CURSOR_EVERY_MS - port.ticks_diff(self.clock(), self.cursor_written))
                replicate = self.replicator.due_in(self.clock())
                if replicate is not None:
                    due = min(due, replicate)
                deadline = client.next_deadline(self.clock())
                if deadline is not None:
                    due = min(due, deadline)
                if duration_ms is not None:
                    due = min(due, duration_ms - port.ticks_diff(self.clock(), start))
                try:
                    await port.wait_for(self._kick.wait(), max(1, due))
                except port.asyncio.TimeoutError:
                    pass
        finally:
            reader.cancel()
            if self._stop:
                # A clean shutdown sends no last will: say "offline" ourselves.
                try:
                    await client.publish(self.prefix + protocol.STATUS, protocol.OFFLINE, qos=0, retain=True)
                except (OSError, MQTTError):
                    pass
                await client.disconnect()

    async def _read(self, client):
        # MicroPython's Task has no result(): how the reader ended is kept here for the session
        # loop, which it wakes. Whatever ended it (a bug included) costs a reconnect only.
        try:
            await client.run()
        except port.asyncio.CancelledError:
            raise
        except Exception as e:
            if self.client is client:
                self._ended = "%s" % e if isinstance(e, (MQTTError, OSError)) else "%s: %s" % (type(e).__name__, e)
        finally:
            if self.client is client and self._ended is None:
                self._ended = "connection closed"
            self._kick.set()  # wake the session loop: the connection is gone

    def stop(self):
        self._stop = True
        self._kick.set()
