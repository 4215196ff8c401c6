"""The gateway's store: device registry and keys, fleet signing keys, replay state and the
sequence numbers boards see, the audit log with its hash chain, the memory-log replica and
telemetry (both with per-device quotas and retention), agent registrations, requests in
flight, and (jobstore.py) the deploy and migration jobs the CLI queues for the gateway.

One connection (db.py: SQLite, the embedded default, or PostgreSQL shared by several
gateways), used from the gateway's event loop only. SQLite runs in WAL mode: readers
(`microfang status`, `microfang audit verify`) never block the gateway. Everything a message
changes is written in one transaction (`transaction()`); the audit chain's head is read inside
it, so it moves only when the transaction commits, and several gateways chain onto one log.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from microfang.firmware import protocol
from microfang.firmware.envelope import ReplayWindow
from microfang.firmware.errors import MicrofangError
from microfang.gateway import jobstore
from microfang.gateway.db import Database, StoreFailure, connect
from microfang.gateway.jobstore import JobStore

REQUEST_COLUMNS_ADDED = (("owner", "TEXT NOT NULL DEFAULT ''"), ("reply", "{blob}"))  # several gateways, kept replies
SERVICE_PREFIX = "microfang-"  # broker users and client ids of gateways (core.py, brokerauth.py): no device's

SCHEMA = """
CREATE TABLE IF NOT EXISTS devices (
    id TEXT PRIMARY KEY,
    fleet TEXT NOT NULL,
    key {blob} NOT NULL,
    created DOUBLE PRECISION NOT NULL,
    last_seen DOUBLE PRECISION,
    online INTEGER NOT NULL DEFAULT 0,
    up_window {blob},                      -- envelope.ReplayWindow of the sequences accepted from it
    down_seq BIGINT NOT NULL DEFAULT 0     -- last sequence the gateway sent to the device
);
CREATE TABLE IF NOT EXISTS gateways (         -- the gateways running on the store (peers.py)
    name TEXT PRIMARY KEY,
    pid BIGINT NOT NULL,
    host TEXT NOT NULL,
    seen DOUBLE PRECISION NOT NULL   -- its last heartbeat
);
CREATE TABLE IF NOT EXISTS audit (
    n {serial},
    ts DOUBLE PRECISION NOT NULL,
    device TEXT NOT NULL,
    agent TEXT NOT NULL,
    action TEXT NOT NULL,
    detail TEXT NOT NULL,
    prev {blob} NOT NULL,
    hash {blob} NOT NULL
);
CREATE TABLE IF NOT EXISTS log_replica (
    device TEXT NOT NULL,
    agent TEXT NOT NULL,
    seq BIGINT NOT NULL,
    payload {blob} NOT NULL,
    PRIMARY KEY (device, agent, seq)
);
CREATE TABLE IF NOT EXISTS replica_usage (    -- bytes held per agent's replica (its quota)
    device TEXT NOT NULL,
    agent TEXT NOT NULL,
    bytes BIGINT NOT NULL,
    PRIMARY KEY (device, agent)
);
CREATE TABLE IF NOT EXISTS telemetry (
    n {serial},
    device TEXT NOT NULL,
    ts DOUBLE PRECISION NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS telemetry_device ON telemetry (device, n);
CREATE TABLE IF NOT EXISTS agents (          -- what boards announced at spawn: version and budgets
    device TEXT NOT NULL,
    agent TEXT NOT NULL,
    version BIGINT NOT NULL,
    budgets TEXT NOT NULL,
    seen DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (device, agent)
);
CREATE TABLE IF NOT EXISTS requests (        -- accepted, not yet answered to the broker's satisfaction
    device TEXT NOT NULL,
    agent TEXT NOT NULL,
    id BIGINT NOT NULL,
    kind TEXT NOT NULL,
    body {blob} NOT NULL,
    received DOUBLE PRECISION NOT NULL,
    owner TEXT NOT NULL DEFAULT '',          -- the gateway answering it (peers.py)
    reply {blob},                            -- its reply as sealed and published (NULL: not yet)
    PRIMARY KEY (device, agent, id)
);
CREATE TABLE IF NOT EXISTS fleets (          -- the key deploys are signed with, per fleet
    name TEXT PRIMARY KEY,
    sign_key {blob} NOT NULL,
    created DOUBLE PRECISION NOT NULL
);
CREATE TABLE IF NOT EXISTS agent_manifests (  -- what the host installed (flash, deploy, migrate): the
    device TEXT NOT NULL,                      -- gateway's own record of each agent's permissions
    agent TEXT NOT NULL,
    version BIGINT NOT NULL,
    manifest TEXT NOT NULL,
    registered DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (device, agent)
);
"""

GENESIS = b"\x00" * 32
AUDIT_LOCK = 0x6D66_6175  # PostgreSQL advisory lock: one audit appender at a time across gateways

# What one board may leave in the store (a board can be buggy or hostile):
TELEMETRY_KEEP = 100  # rows per device, older ones deleted
TELEMETRY_BYTES = 8192  # one telemetry document as stored
REPLICA_BYTES = 256 * 1024  # per agent's memory-log replica: the oldest records go first
AGENTS_MAX = 64  # agents with a replica or a registration, per device


class QuotaExceeded(MicrofangError):
    """A board asked the store to keep more than its share."""


def _audit_hash(prev: bytes, ts: float, device: str, agent: str, action: str, detail: str) -> bytes:
    record = _compact([ts, device, agent, action, detail]).encode()
    return hashlib.sha256(prev + record).digest()


_compact = json.JSONEncoder(separators=(",", ":")).encode  # json.dumps(..., separators=...) without
_compact_any = json.JSONEncoder(separators=(",", ":"), default=str).encode  # a new encoder each call
_DEVICE_COLUMNS = "id, fleet, key, last_seen, online, up_window, down_seq"


def _device_record(r: tuple) -> dict[str, Any]:
    return {"fleet": r[1], "key": bytes(r[2]), "last_seen": r[3], "online": bool(r[4]),
            "window": ReplayWindow.loads(bytes(r[5] or b"")), "down_seq": r[6]}


class Store(JobStore):
    """`where`: a SQLite file or a postgresql:// URL; `exclusive`: the running gateway's own
    (a second gateway on the same SQLite file is refused)."""

    def __init__(self, where: str | Path, exclusive: bool = False) -> None:
        self.path = str(where)
        self.db: Database = connect(where, exclusive)
        try:
            self.db.schema(SCHEMA + jobstore.SCHEMA)
            added = {"requests": REQUEST_COLUMNS_ADDED, "jobs": jobstore.ADDED_COLUMNS}
            for table, columns_added in added.items():  # a database from before these columns
                columns = [c[0] for c in self.db.execute(f"SELECT * FROM {table} LIMIT 0").description]
                for name, kind in columns_added:
                    if name not in columns:
                        self.db.execute(f"ALTER TABLE {table} ADD COLUMN {name} {kind.format(**self.db.types)}")
            self.db.schema(jobstore.INDEXES)
        except StoreFailure as e:
            self.db.close()
            raise MicrofangError(f"{self.db.name}: not a gateway database ({str(e).split(': ', 1)[-1]})") from None
        self._tx_of = -1  # the transaction (Database.transactions) _tx_state belongs to
        self._tx_state: dict[str, dict[str, Any]] = {}
        self._kept_epoch = -1  # the Database.epoch _kept_state belongs to
        self._kept_state: dict[str, dict[Any, Any]] = {}

    def _tx(self, part: str) -> dict[str, Any]:
        """State kept for the current transaction only (working copies written at its commit)."""
        if self._tx_of != self.db.transactions:
            self._tx_of, self._tx_state = self.db.transactions, {}
        return self._tx_state.setdefault(part, {})

    def _kept(self, part: str) -> dict[Any, Any]:
        """What this gateway counts on between transactions (the down sequence numbers, agents'
        permissions), read inside transactions only, while the database's epoch holds: on the
        running gateway's own SQLite file until another process writes to it or something is
        rolled back; on a shared store, one transaction. Writes of this store's own to the same
        rows forget their part (`_forget`)."""
        if self._kept_epoch != self.db.epoch:
            self._kept_epoch, self._kept_state = self.db.epoch, {}
        return self._kept_state.setdefault(part, {})

    def _forget(self, part: str, key: Any = None) -> None:
        """Forget one part of what is kept (or one key of it), for a write of this store's own."""
        kept = self._kept_state.get(part, {})
        if key is None:
            kept.clear()
        else:
            kept.pop(key, None)

    @property
    def shared(self) -> bool:
        """Several gateways may use this store at once."""
        return self.db.shared

    def close(self) -> None:
        self.db.close()

    def transaction(self, savepoint: bool = False) -> AbstractContextManager[None]:
        return self.db.transaction(savepoint)

    def after_commit(self, action: Callable[[], None]) -> None:
        self.db.after_commit(action)

    def before_commit(self, flush: Callable[[list[Any]], None], item: Any) -> None:
        """`flush(items)` once just before the transaction commits, with every item given for it
        (Database.stage)."""
        self.db.stage(flush, item)

    def serialize(self) -> None:
        """Inside a transaction on a shared store: wait for the other gateways' transactions
        that write the audit chain or device rows to end. Taken first, before any row lock, so
        gateways never deadlock on the rows one batch touches in one order and another in
        another (SQLite has one writer anyway)."""
        if self.db.shared:
            self.db.execute("SELECT pg_advisory_xact_lock(?)", (AUDIT_LOCK,))

    # ---- registry ------------------------------------------------------------------------

    def add_device(self, device: str, fleet: str = "default", key: bytes | None = None) -> bytes:
        """Register a device (or return the key it already has). Names follow protocol.name_ok:
        they become topic levels."""
        for what, name in (("device", device), ("fleet", fleet)):
            if not protocol.name_ok(name):
                raise MicrofangError(f"{what} name {name!r}: must be {protocol.NAME_RULE}")
        if device.startswith(SERVICE_PREFIX):
            raise MicrofangError(f"device name {device!r}: names starting with {SERVICE_PREFIX} are the gateways' own "
                                 "broker users and client ids")
        key = key or os.urandom(32)
        self.db.execute("INSERT INTO devices (id, fleet, key, created) VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
                        (device, fleet, key, time.time()))
        return bytes(self.db.execute("SELECT key FROM devices WHERE id = ?", (device,)).fetchone()[0])

    def provision_device(self, device: str, fleet: str) -> bytes:
        """Give a device a fresh identity for a new flash image (`microfang flash`, the simulator):
        a new HMAC key, sequence state started over (the new image counts from 1 again, and
        messages signed with the old key are no longer accepted) and no agents registered yet."""
        if self.db.execute("SELECT 1 FROM devices WHERE id = ?", (device,)).fetchone() is None:
            return self.add_device(device, fleet)
        key = os.urandom(32)
        self._forget("down_seq", device)
        self._forget("permissions")
        with self.transaction():
            self.db.execute("UPDATE devices SET key = ?, up_window = NULL, down_seq = 0, online = 0 WHERE id = ?",
                            (key, device))
            self.db.execute("DELETE FROM agent_manifests WHERE device = ?", (device,))
        return key

    def sign_key(self, fleet: str, create: bool = True) -> bytes | None:
        """The fleet's deploy signing key, created on first use (None if absent and not `create`)."""
        row = self.db.execute("SELECT sign_key FROM fleets WHERE name = ?", (fleet,)).fetchone()
        if row:
            return bytes(row[0])
        if not create:
            return None
        self.db.execute("INSERT INTO fleets (name, sign_key, created) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
                        (fleet, os.urandom(32), time.time()))
        return self.sign_key(fleet, create=False)

    def devices(self) -> dict[str, dict[str, Any]]:
        rows = self.db.execute(f"SELECT {_DEVICE_COLUMNS} FROM devices").fetchall()
        return {r[0]: _device_record(r) for r in rows}

    def device(self, device: str, for_update: bool = False) -> dict[str, Any] | None:
        """The device's row; `for_update` (inside a transaction): locked until it ends, so
        gateways sharing the store take turns on one device's replay window."""
        lock = " FOR UPDATE" if for_update and self.db.shared else ""
        row = self.db.execute(f"SELECT {_DEVICE_COLUMNS} FROM devices WHERE id = ?{lock}", (device,)).fetchone()
        return None if row is None else _device_record(row)

    def set_presence(self, device: str, online: bool) -> None:
        """What the gateway believes (gateway/presence.py); last_seen stays the last verified message's."""
        self.db.execute("UPDATE devices SET online = ? WHERE id = ?", (int(online), device))

    def window(self, device: str, committed: ReplayWindow) -> ReplayWindow:
        """The device's replay window to check a message against, inside its transaction, then
        `save_window`. Shared: the stored row, locked until the transaction ends (gateways take
        turns on it). Else this gateway alone writes it and `committed` (its own copy as of the
        last commit) is it: the transaction works on a copy, so a rollback leaves `committed`
        as it was; the caller takes the copy once the transaction has committed."""
        if self.db.shared:
            stored = self.device(device, for_update=True)
            return committed if stored is None else stored["window"]
        copies = self._tx("windows") if self.db.in_transaction else {}
        if device not in copies:
            copies[device] = ReplayWindow(committed.highest, committed.bits, committed.size)
        return copies[device]

    def save_window(self, device: str, window: ReplayWindow) -> None:
        """Store the device's window (and when it was last heard): at once on a shared store,
        else once per device when the transaction commits, however many messages it took."""
        if self.db.shared:
            self.db.execute("UPDATE devices SET up_window = ?, last_seen = ? WHERE id = ?",
                            (window.dumps(), time.time(), device))
        else:
            self.db.stage(self._write_windows, (device, window))

    def _write_windows(self, staged: list[tuple[str, ReplayWindow]]) -> None:
        now = time.time()
        last = dict(staged)  # device -> its window (the same object each time, in a transaction)
        self.db.executemany("UPDATE devices SET up_window = ?, last_seen = ? WHERE id = ?",
                            [(window.dumps(), now, device) for device, window in last.items()])

    def next_down_seq(self, device: str) -> int:
        """The sequence number of the next message to the device. Shared: one statement each
        (gateways sharing the store never hand out the same one). Else, inside transactions,
        the row is read once and then counted on in memory (`_kept`), its last value written
        once at each commit (a message rolled back may leave a gap: boards accept any newer
        number); outside one, one statement."""
        if self.db.shared or not self.db.in_transaction:
            self._forget("down_seq", device)  # a count in memory would be behind the row now
            return self._count_down_seq(device)
        counted = self._kept("down_seq")
        if device not in counted:
            counted[device] = self._count_down_seq(device)
            return int(counted[device])
        counted[device] += 1
        self.db.stage(self._write_down_seqs, (device, counted[device]))
        return int(counted[device])

    def _count_down_seq(self, device: str) -> int:
        row = self.db.execute("UPDATE devices SET down_seq = down_seq + 1 WHERE id = ? RETURNING down_seq",
                              (device,)).fetchone()
        if row is None:
            raise KeyError(f"no device {device!r}")
        return int(row[0])

    def _write_down_seqs(self, staged: list[tuple[str, int]]) -> None:
        last = dict(staged)  # device -> the last number handed out in this transaction
        self.db.executemany("UPDATE devices SET down_seq = ? WHERE id = ?", [(seq, device) for device, seq in last.items()])

    # ---- audit ---------------------------------------------------------------------------

    def audit(self, device: str, agent: str, action: str, detail: Any) -> None:
        """Append one audit record, chained to the previous one by SHA-256: with the other
        records of its transaction, just before it commits (Database.stage), in the order they
        were made. The head is read then, in the transaction, so a record rolled back leaves no
        trace in the chain."""
        text = detail if isinstance(detail, str) else _compact_any(detail)
        if self.db.in_transaction:
            self.serialize()  # as early as before: the lock first, then any row lock (no deadlock)
        self.db.stage(self._append_audit, (time.time(), device, agent, action, text))

    def _append_audit(self, records: list[tuple[float, str, str, str, str]]) -> None:
        self.serialize()
        row = self.db.execute("SELECT hash FROM audit ORDER BY n DESC LIMIT 1").fetchone()
        head = bytes(row[0]) if row else GENESIS
        rows = []
        for ts, device, agent, action, text in records:
            digest = _audit_hash(head, ts, device, agent, action, text)
            rows.append((ts, device, agent, action, text, head, digest))
            head = digest
        self.db.executemany("INSERT INTO audit (ts, device, agent, action, detail, prev, hash) "
                            "VALUES (?, ?, ?, ?, ?, ?, ?)", rows)

    def verify_audit(self) -> tuple[int, int | None]:
        """Walk the chain; return (records checked, number of the first bad record or None)."""
        prev = GENESIS
        count = 0
        for n, ts, device, agent, action, detail, stored_prev, digest in self.db.execute(
                "SELECT n, ts, device, agent, action, detail, prev, hash FROM audit ORDER BY n"):
            if bytes(stored_prev) != prev or _audit_hash(prev, ts, device, agent, action, detail) != bytes(digest):
                return count, n
            prev = bytes(digest)
            count += 1
        return count, None

    def audit_records(self, limit: int, device: str | None = None) -> list[dict[str, Any]]:
        """The latest `limit` audit records (of `device`, if given), oldest first."""
        where, args = ("WHERE device = ? ", [device]) if device is not None else ("", [])
        rows = self.db.execute(f"SELECT n, ts, device, agent, action, detail FROM audit {where}ORDER BY n DESC "
                               "LIMIT ?", (*args, limit)).fetchall()
        names = ("n", "ts", "device", "agent", "action", "detail")
        return [dict(zip(names, r, strict=True)) for r in reversed(rows)]

    # ---- memory-log replica and telemetry ------------------------------------------------

    def _room_for_agent(self, device: str, agent: str, table: str) -> None:
        if self.db.execute(f"SELECT 1 FROM {table} WHERE device = ? AND agent = ?", (device, agent)).fetchone():
            return
        count = self.db.execute(f"SELECT count(*) FROM {table} WHERE device = ?", (device,)).fetchone()[0]
        if count >= AGENTS_MAX:
            raise QuotaExceeded(f"device {device!r} already has {AGENTS_MAX} agents in {table}")

    def replicate(self, device: str, agent: str, records: list[tuple[int, bytes]]) -> int:
        """Store replicated records (idempotent); return the highest seq held. Each agent's
        replica keeps its newest REPLICA_BYTES: older records are deleted."""
        with self.transaction():
            self._room_for_agent(device, agent, "replica_usage")
            added = 0
            for seq, payload in records:
                cur = self.db.execute("INSERT INTO log_replica (device, agent, seq, payload) VALUES (?, ?, ?, ?) "
                                      "ON CONFLICT DO NOTHING", (device, agent, seq, payload))
                added += len(payload) if cur.rowcount == 1 else 0
            row = self.db.execute("INSERT INTO replica_usage (device, agent, bytes) VALUES (?, ?, ?) "
                                  "ON CONFLICT (device, agent) DO UPDATE SET bytes = replica_usage.bytes + ? "
                                  "RETURNING bytes", (device, agent, added, added)).fetchone()
            if row[0] > REPLICA_BYTES:
                self._trim_replica(device, agent, row[0] - REPLICA_BYTES)
            row = self.db.execute("SELECT MAX(seq) FROM log_replica WHERE device = ? AND agent = ?",
                                  (device, agent)).fetchone()
        return row[0] or 0

    def _trim_replica(self, device: str, agent: str, excess: int) -> None:
        freed, upto = 0, 0
        for seq, size in self.db.execute("SELECT seq, length(payload) FROM log_replica WHERE device = ? AND agent = ? "
                                         "ORDER BY seq", (device, agent)).fetchall():
            if freed >= excess:
                break
            freed, upto = freed + size, seq
        self.db.execute("DELETE FROM log_replica WHERE device = ? AND agent = ? AND seq <= ?", (device, agent, upto))
        self.db.execute("UPDATE replica_usage SET bytes = bytes - ? WHERE device = ? AND agent = ?",
                        (freed, device, agent))

    def replica(self, device: str, agent: str) -> list[tuple[int, bytes]]:
        return [(s, bytes(p)) for s, p in self.db.execute(
            "SELECT seq, payload FROM log_replica WHERE device = ? AND agent = ? ORDER BY seq", (device, agent))]

    def add_telemetry(self, device: str, body: dict[str, Any]) -> None:
        text = json.dumps(body, default=str)
        if len(text) > TELEMETRY_BYTES:
            raise QuotaExceeded(f"telemetry of {len(text)} bytes is over the {TELEMETRY_BYTES} byte limit")
        with self.transaction():
            self.db.execute("INSERT INTO telemetry (device, ts, body) VALUES (?, ?, ?)", (device, time.time(), text))
            self.db.execute("DELETE FROM telemetry WHERE device = ? AND n <= (SELECT n FROM telemetry WHERE "
                            "device = ? ORDER BY n DESC LIMIT 1 OFFSET ?)", (device, device, TELEMETRY_KEEP))

    def latest_telemetry(self, device: str) -> dict[str, Any] | None:
        row = self.db.execute("SELECT body FROM telemetry WHERE device = ? ORDER BY n DESC LIMIT 1", (device,)).fetchone()
        return json.loads(row[0]) if row else None

    # ---- agents ---------------------------------------------------------------------------

    def set_agent(self, device: str, agent: str, version: int, budgets: dict[str, Any]) -> None:
        with self.transaction():
            self._room_for_agent(device, agent, "agents")
            self.db.execute("INSERT INTO agents (device, agent, version, budgets, seen) VALUES (?, ?, ?, ?, ?) "
                            "ON CONFLICT (device, agent) DO UPDATE SET version = ?, budgets = ?, seen = ?",
                            (device, agent, version, json.dumps(budgets), time.time(),
                             version, json.dumps(budgets), time.time()))

    def agent_budgets(self) -> dict[tuple[str, str], dict[str, Any]]:
        return {(d, a): json.loads(b) for d, a, b in self.db.execute("SELECT device, agent, budgets FROM agents")}

    # ---- requests in flight (survive a gateway crash) ------------------------------------

    def add_request(self, device: str, agent: str, request_id: int, kind: str, body: bytes, owner: str = "") -> None:
        now = time.time()
        self.db.execute("INSERT INTO requests (device, agent, id, kind, body, received, owner) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (device, agent, id) DO UPDATE SET kind = ?, body = ?, "
                        "received = ?, owner = ?, reply = NULL",  # an id used again (a board restarted): a new request
                        (device, agent, request_id, kind, body, now, owner, kind, body, now, owner))

    def keep_reply(self, device: str, agent: str, request_id: int, sealed: bytes) -> None:
        """The request's reply as published (with the transaction's others): a gateway that
        answers it again after a crash sends these same bytes, not a second answer."""
        self.db.stage(self._write_replies, (sealed, device, agent, request_id))

    def _write_replies(self, replies: list[tuple[bytes, str, str, int]]) -> None:
        self.db.executemany("UPDATE requests SET reply = ? WHERE device = ? AND agent = ? AND id = ?", replies)

    def down_seq(self, device: str) -> int:
        """The sequence number of the last message sent to the device."""
        row = self.db.execute("SELECT down_seq FROM devices WHERE id = ?", (device,)).fetchone()
        return 0 if row is None else int(row[0])

    def finish_request(self, device: str, agent: str, request_id: int) -> None:
        """The request's reply reached the broker: forget it (with the transaction's others)."""
        self.db.stage(self._delete_requests, (device, agent, request_id))

    def _delete_requests(self, done: list[tuple[str, str, int]]) -> None:
        self.db.executemany("DELETE FROM requests WHERE device = ? AND agent = ? AND id = ?", done)

    # ---- registered manifests -------------------------------------------------------------

    def register_manifest(self, device: str, manifest: dict[str, Any]) -> None:
        text = json.dumps(manifest)
        self._forget("permissions")
        self.db.execute("INSERT INTO agent_manifests VALUES (?, ?, ?, ?, ?) ON CONFLICT (device, agent) DO UPDATE "
                        "SET version = ?, manifest = ?, registered = ?",
                        (device, manifest["agent_id"], manifest["version"], text, time.time(),
                         manifest["version"], text, time.time()))

    def manifest(self, device: str, agent: str) -> dict[str, Any] | None:
        row = self.db.execute("SELECT manifest FROM agent_manifests WHERE device = ? AND agent = ?",
                              (device, agent)).fetchone()
        return json.loads(row[0]) if row else None

    def permissions(self, device: str, agent: str) -> tuple[frozenset[str], frozenset[str]] | None:
        """The registered manifest's (allowed, denied) host functions, or None without one:
        asked of every request, so kept between transactions (`_kept`)."""
        if not self.db.in_transaction:
            return self._read_permissions(device, agent)
        kept = self._kept("permissions")
        if (device, agent) not in kept:
            kept[(device, agent)] = self._read_permissions(device, agent)
        return kept[(device, agent)]

    def _read_permissions(self, device: str, agent: str) -> tuple[frozenset[str], frozenset[str]] | None:
        manifest = self.manifest(device, agent)
        if manifest is None:
            return None
        permissions = manifest.get("permissions", {})
        return frozenset(permissions.get("allowed", [])), frozenset(permissions.get("denied", []))

    def drop_manifest(self, device: str, agent: str) -> None:
        self._forget("permissions")
        self.db.execute("DELETE FROM agent_manifests WHERE device = ? AND agent = ?", (device, agent))
