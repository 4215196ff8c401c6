"""The gateway's SQLite store: device registry and keys, fleet signing keys, replay state, the
audit log with its hash chain, the memory-log replica, telemetry with bounded retention, and
the deploy and migration jobs the CLI queues for the gateway to carry out.

One connection, used from the gateway's event loop only. WAL mode: readers (`microfang
status`, `microfang audit verify`) never block the gateway.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import time
from pathlib import Path
from typing import Any

from microfang.firmware import protocol
from microfang.firmware.envelope import ReplayWindow
from microfang.firmware.errors import MicrofangError

SCHEMA = """
CREATE TABLE IF NOT EXISTS devices (
    id TEXT PRIMARY KEY,
    fleet TEXT NOT NULL,
    key BLOB NOT NULL,
    created REAL NOT NULL,
    last_seen REAL,
    online INTEGER NOT NULL DEFAULT 0,
    up_window BLOB,                        -- envelope.ReplayWindow of the sequences accepted from it
    down_seq INTEGER NOT NULL DEFAULT 0    -- last sequence the gateway sent to the device
);
CREATE TABLE IF NOT EXISTS audit (
    n INTEGER PRIMARY KEY,
    ts REAL NOT NULL,
    device TEXT NOT NULL,
    agent TEXT NOT NULL,
    action TEXT NOT NULL,
    detail TEXT NOT NULL,
    prev BLOB NOT NULL,
    hash BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS log_replica (
    device TEXT NOT NULL,
    agent TEXT NOT NULL,
    seq INTEGER NOT NULL,
    payload BLOB NOT NULL,
    PRIMARY KEY (device, agent, seq)
);
CREATE TABLE IF NOT EXISTS telemetry (
    n INTEGER PRIMARY KEY,
    device TEXT NOT NULL,
    ts REAL NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS telemetry_device ON telemetry (device, n);
CREATE TABLE IF NOT EXISTS agents (          -- what boards announced at spawn: version and budgets
    device TEXT NOT NULL,
    agent TEXT NOT NULL,
    version INTEGER NOT NULL,
    budgets TEXT NOT NULL,
    seen REAL NOT NULL,
    PRIMARY KEY (device, agent)
);
CREATE TABLE IF NOT EXISTS requests (        -- accepted, not yet answered to the broker's satisfaction
    device TEXT NOT NULL,
    agent TEXT NOT NULL,
    id INTEGER NOT NULL,
    kind TEXT NOT NULL,
    body BLOB NOT NULL,
    received REAL NOT NULL,
    PRIMARY KEY (device, agent, id)
);
CREATE TABLE IF NOT EXISTS fleets (          -- the key deploys are signed with, per fleet
    name TEXT PRIMARY KEY,
    sign_key BLOB NOT NULL,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS jobs (            -- queued by `microfang deploy/migrate`, run by the gateway
    id INTEGER PRIMARY KEY,
    kind TEXT NOT NULL,                      -- deploy | migrate
    device TEXT NOT NULL,                    -- migrate: the board the agent leaves
    target TEXT,                             -- migrate: the board it moves to
    agent TEXT NOT NULL,
    version INTEGER,
    data BLOB,                               -- deploy: the signed bundle; migrate: the snapshot once read
    state TEXT NOT NULL,                     -- queued, sending, snapshot, restoring, done, failed
    detail TEXT NOT NULL DEFAULT '',
    progress INTEGER NOT NULL DEFAULT 0,     -- bytes the board holds of `size`
    size INTEGER NOT NULL DEFAULT 0,
    created REAL NOT NULL,
    updated REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS agent_manifests (  -- what the host installed (flash, deploy, migrate): the
    device TEXT NOT NULL,                      -- gateway's own record of each agent's permissions
    agent TEXT NOT NULL,
    version INTEGER NOT NULL,
    manifest TEXT NOT NULL,
    registered REAL NOT NULL,
    PRIMARY KEY (device, agent)
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs (state);  -- the gateway looks for active jobs often
"""

JOB_ACTIVE = ("queued", "sending", "snapshot", "restoring")

GENESIS = b"\x00" * 32
TELEMETRY_KEEP = 100  # rows per device


def _audit_hash(prev: bytes, ts: float, device: str, agent: str, action: str, detail: str) -> bytes:
    record = json.dumps([ts, device, agent, action, detail], separators=(",", ":")).encode()
    return hashlib.sha256(prev + record).digest()


_DEVICE_COLUMNS = "id, fleet, key, last_seen, online, up_window, down_seq"


def _device_record(r: tuple) -> dict[str, Any]:
    return {"fleet": r[1], "key": bytes(r[2]), "last_seen": r[3], "online": bool(r[4]),
            "window": ReplayWindow.loads(bytes(r[5] or b"")), "down_seq": r[6]}


class Store:
    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self.db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(SCHEMA)
        row = self.db.execute("SELECT hash FROM audit ORDER BY n DESC LIMIT 1").fetchone()
        self._audit_head = row[0] if row else GENESIS

    def close(self) -> None:
        self.db.close()

    # ---- registry ------------------------------------------------------------------------

    def add_device(self, device: str, fleet: str = "default", key: bytes | None = None) -> bytes:
        """Register a device (or return the key it already has). Names follow protocol.name_ok:
        they become topic levels."""
        for what, name in (("device", device), ("fleet", fleet)):
            if not protocol.name_ok(name):
                raise MicrofangError(f"{what} name {name!r}: must be {protocol.NAME_RULE}")
        row = self.db.execute("SELECT key FROM devices WHERE id = ?", (device,)).fetchone()
        if row:
            return bytes(row[0])
        key = key or os.urandom(32)
        self.db.execute("INSERT INTO devices (id, fleet, key, created) VALUES (?, ?, ?, ?)",
                        (device, fleet, key, time.time()))
        return key

    def provision_device(self, device: str, fleet: str) -> bytes:
        """Give a device a fresh identity for a new flash image (`microfang flash`, the simulator):
        a new HMAC key, sequence state started over (the new image counts from 1 again, and
        messages signed with the old key are no longer accepted) and no agents registered yet."""
        if self.db.execute("SELECT 1 FROM devices WHERE id = ?", (device,)).fetchone() is None:
            return self.add_device(device, fleet)
        key = os.urandom(32)
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
        key = os.urandom(32)
        self.db.execute("INSERT INTO fleets (name, sign_key, created) VALUES (?, ?, ?)", (fleet, key, time.time()))
        return key

    def devices(self) -> dict[str, dict[str, Any]]:
        rows = self.db.execute(f"SELECT {_DEVICE_COLUMNS} FROM devices").fetchall()
        return {r[0]: _device_record(r) for r in rows}

    def device(self, device: str) -> dict[str, Any] | None:
        row = self.db.execute(f"SELECT {_DEVICE_COLUMNS} FROM devices WHERE id = ?", (device,)).fetchone()
        return None if row is None else _device_record(row)

    def set_presence(self, device: str, online: bool) -> None:
        self.db.execute("UPDATE devices SET online = ?, last_seen = ? WHERE id = ?", (int(online), time.time(), device))

    def save_seqs(self, device: str, window: ReplayWindow, down_seq: int) -> None:
        self.db.execute("UPDATE devices SET up_window = ?, down_seq = ?, last_seen = ? WHERE id = ?",
                        (window.dumps(), down_seq, time.time(), device))

    # ---- audit ---------------------------------------------------------------------------

    def audit(self, device: str, agent: str, action: str, detail: Any) -> None:
        """Append one audit record, chained to the previous one by SHA-256."""
        ts = time.time()
        text = detail if isinstance(detail, str) else json.dumps(detail, separators=(",", ":"), default=str)
        digest = _audit_hash(self._audit_head, ts, device, agent, action, text)
        self.db.execute("INSERT INTO audit (ts, device, agent, action, detail, prev, hash) VALUES (?, ?, ?, ?, ?, ?, ?)",
                        (ts, device, agent, action, text, self._audit_head, digest))
        self._audit_head = digest

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

    # ---- memory-log replica and telemetry ------------------------------------------------

    def replicate(self, device: str, agent: str, records: list[tuple[int, bytes]]) -> int:
        """Store replicated records (idempotent); return the highest contiguous seq held."""
        self.db.executemany("INSERT OR IGNORE INTO log_replica (device, agent, seq, payload) VALUES (?, ?, ?, ?)",
                            [(device, agent, seq, payload) for seq, payload in records])
        row = self.db.execute("SELECT MAX(seq) FROM log_replica WHERE device = ? AND agent = ?", (device, agent)).fetchone()
        return row[0] or 0

    def replica(self, device: str, agent: str) -> list[tuple[int, bytes]]:
        return [(s, bytes(p)) for s, p in self.db.execute(
            "SELECT seq, payload FROM log_replica WHERE device = ? AND agent = ? ORDER BY seq", (device, agent))]

    def add_telemetry(self, device: str, body: Any) -> None:
        self.db.execute("INSERT INTO telemetry (device, ts, body) VALUES (?, ?, ?)",
                        (device, time.time(), json.dumps(body, default=str)))
        self.db.execute("DELETE FROM telemetry WHERE device = ? AND n <= (SELECT n FROM telemetry WHERE device = ? "
                        "ORDER BY n DESC LIMIT 1 OFFSET ?)", (device, device, TELEMETRY_KEEP))

    def latest_telemetry(self, device: str) -> dict[str, Any] | None:
        row = self.db.execute("SELECT body FROM telemetry WHERE device = ? ORDER BY n DESC LIMIT 1", (device,)).fetchone()
        return json.loads(row[0]) if row else None

    # ---- agents ---------------------------------------------------------------------------

    def set_agent(self, device: str, agent: str, version: int, budgets: dict[str, Any]) -> None:
        self.db.execute("INSERT OR REPLACE INTO agents (device, agent, version, budgets, seen) VALUES (?, ?, ?, ?, ?)",
                        (device, agent, version, json.dumps(budgets), time.time()))

    def agent_budgets(self) -> dict[tuple[str, str], dict[str, Any]]:
        return {(d, a): json.loads(b) for d, a, b in self.db.execute("SELECT device, agent, budgets FROM agents")}

    # ---- requests in flight (survive a gateway crash) ------------------------------------

    def add_request(self, device: str, agent: str, request_id: int, kind: str, body: bytes) -> None:
        self.db.execute("INSERT OR REPLACE INTO requests (device, agent, id, kind, body, received) "
                        "VALUES (?, ?, ?, ?, ?, ?)", (device, agent, request_id, kind, body, time.time()))

    def finish_request(self, device: str, agent: str, request_id: int) -> None:
        self.db.execute("DELETE FROM requests WHERE device = ? AND agent = ? AND id = ?", (device, agent, request_id))

    def pending_requests(self) -> list[tuple[str, str, int, str, bytes]]:
        return [(d, a, i, k, bytes(b)) for d, a, i, k, b in self.db.execute(
            "SELECT device, agent, id, kind, body FROM requests ORDER BY received")]

    def begin(self) -> None:
        self.db.execute("BEGIN")

    def commit(self) -> None:
        self.db.execute("COMMIT")

    # ---- registered manifests -------------------------------------------------------------

    def register_manifest(self, device: str, manifest: dict[str, Any]) -> None:
        self.db.execute("INSERT OR REPLACE INTO agent_manifests VALUES (?, ?, ?, ?, ?)",
                        (device, manifest["agent_id"], manifest["version"], json.dumps(manifest), time.time()))

    def manifest(self, device: str, agent: str) -> dict[str, Any] | None:
        row = self.db.execute("SELECT manifest FROM agent_manifests WHERE device = ? AND agent = ?",
                              (device, agent)).fetchone()
        return json.loads(row[0]) if row else None

    def drop_manifest(self, device: str, agent: str) -> None:
        self.db.execute("DELETE FROM agent_manifests WHERE device = ? AND agent = ?", (device, agent))

    # ---- jobs ----------------------------------------------------------------------------

    def add_job(self, kind: str, device: str, agent: str, data: bytes | None = None, target: str | None = None,
                version: int | None = None) -> int:
        now = time.time()
        cur = self.db.execute("INSERT INTO jobs (kind, device, target, agent, version, data, state, size, created, "
                              "updated) VALUES (?, ?, ?, ?, ?, ?, 'queued', ?, ?, ?)",
                              (kind, device, target, agent, version, data, len(data or b""), now, now))
        assert cur.lastrowid is not None
        return cur.lastrowid

    def jobs(self, ids: list[int] | None = None, active: bool = False) -> list[dict[str, Any]]:
        query = "SELECT id, kind, device, target, agent, version, state, detail, progress, size, created, updated " \
                "FROM jobs"
        where: list[str] = []
        args: list[Any] = []
        if ids is not None:
            where.append(f"id IN ({','.join('?' * len(ids))})")
            args += ids
        if active:
            where.append(f"state IN ({','.join('?' * len(JOB_ACTIVE))})")
            args += JOB_ACTIVE
        rows = self.db.execute(query + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY id",
                               args).fetchall()
        names = ("id", "kind", "device", "target", "agent", "version", "state", "detail", "progress", "size",
                 "created", "updated")
        return [dict(zip(names, r, strict=True)) for r in rows]

    def job_data(self, job_id: int) -> bytes:
        row = self.db.execute("SELECT data FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return bytes(row[0] or b"") if row else b""

    def update_job(self, job_id: int, **fields: Any) -> None:
        fields["updated"] = time.time()
        names = ", ".join(f"{k} = ?" for k in fields)
        self.db.execute(f"UPDATE jobs SET {names} WHERE id = ?", (*fields.values(), job_id))
