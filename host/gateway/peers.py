"""Gateways sharing one store (PostgreSQL; a SQLite file has one gateway, db.py locks it).

Each gateway has a name, unique among the live ones, and its MQTT client id comes from it: the
broker keeps the gateway's session, with the messages in flight to it, across a restart under
the same name. A gateway says it is alive every HEARTBEAT_S (the `gateways` table); the
requests it accepted are its own (`requests.owner`) and it answers them, also after a restart;
those of a gateway silent for STALE_S are adopted by another, so a killed gateway's requests
are finished even if it never comes back.

    peers = Peers(store, "gw-a")
    peers.join()                    # MicrofangError if a live gateway already has the name
    for request in peers.adopt():   # its own unfinished requests, and those of dead gateways
        ...
"""

from __future__ import annotations

import hashlib
import os
import socket
import time

from microfang.firmware.errors import MicrofangError
from microfang.gateway.store import Store

HEARTBEAT_S = 1.0
STALE_S = 5.0  # silent this long: dead, its requests adopted by another gateway
JOIN_WAIT_S = 2.0

Pending = tuple[str, str, int, str, bytes, bytes | None]  # (device, agent, request id, kind, body, sealed reply)


def default_name(where: str) -> str:
    """This host's gateway on that store: the host name and a digest of the store's location
    (two gateways on one host and one shared store need a --name each)."""
    place = where if "://" in where else os.path.abspath(where)
    host = "".join(c if c.isalnum() or c in "-_" else "-" for c in socket.gethostname().lower())[:24] or "host"
    return f"{host}-{hashlib.sha256(place.encode()).hexdigest()[:8]}"


class Peers:
    def __init__(self, store: Store, name: str) -> None:
        self.store = store
        self.name = name
        # the `gateways` table is in store.SCHEMA: readers ask it before any gateway has run

    def join(self) -> None:
        """Take the name, refused while a running gateway holds it: on PostgreSQL a session
        lock on the name (gone with the holder's connection, also when it is killed); a SQLite
        file is locked by its one gateway already (db.py)."""
        now = time.time()
        if self.store.shared:
            key = int.from_bytes(hashlib.sha256(self.name.encode()).digest()[:8], "big", signed=True)
            if not self._lock(key):
                row = self.store.db.execute("SELECT pid, host FROM gateways WHERE name = ?", (self.name,)).fetchone()
                holder = f" (pid {row[0]} on {row[1]})" if row else ""
                raise MicrofangError(f"gateway name {self.name!r}: already running{holder} on this store; give each "
                                     "gateway its own --name")
        with self.store.transaction():
            self.store.db.execute("INSERT INTO gateways (name, pid, host, seen) VALUES (?, ?, ?, ?) ON CONFLICT (name) "
                                  "DO UPDATE SET pid = ?, host = ?, seen = ?",
                                  (self.name, os.getpid(), socket.gethostname(), now,
                                   os.getpid(), socket.gethostname(), now))

    def _lock(self, key: int) -> bool:
        """The name's session lock; a killed holder's server session ends a moment after its
        connection does, so it is tried for up to JOIN_WAIT_S."""
        deadline = time.monotonic() + JOIN_WAIT_S
        while not self.store.db.execute("SELECT pg_try_advisory_lock(?)", (key,)).fetchone()[0]:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True

    def beat(self) -> None:
        self.store.db.execute("UPDATE gateways SET seen = ? WHERE name = ?", (time.time(), self.name))

    def leave(self) -> None:
        """A clean stop: the name is free at once (requests still pending are adopted at once)."""
        self.store.db.execute("UPDATE gateways SET seen = 0 WHERE name = ?", (self.name,))

    def live(self) -> list[str]:
        return live_gateways(self.store)

    def adopt(self) -> list[Pending]:
        """The unfinished requests that are this gateway's to answer and not running here yet:
        its own from an earlier run (first call only) and those of gateways gone silent."""
        with self.store.transaction():
            live = [n for n in self.live() if n != self.name]
            alive = f" AND owner NOT IN ({','.join('?' * len(live))})" if live else ""
            rows = self.store.db.execute(f"UPDATE requests SET owner = ? WHERE owner <> ?{alive} "
                                         "RETURNING device, agent, id, kind, body, reply",
                                         (self.name, self.name, *live)).fetchall()
        return [_pending(row) for row in rows]

    def own(self) -> list[Pending]:
        """This gateway's unfinished requests, oldest first. Claimed as adopt() claims (an UPDATE,
        not a SELECT): a peer adopting them at the same moment gets them or this gateway does,
        never both (PostgreSQL's row locks order the two)."""
        with self.store.transaction():
            rows = self.store.db.execute("UPDATE requests SET owner = ? WHERE owner = ? "
                                         "RETURNING device, agent, id, kind, body, reply, received",
                                         (self.name, self.name)).fetchall()
        return [_pending(row) for row in sorted(rows, key=lambda row: row[6])]


def live_gateways(store: Store) -> list[str]:
    """The names of the gateways running on the store (heard within STALE_S)."""
    return [r[0] for r in store.db.execute("SELECT name FROM gateways WHERE seen > ? ORDER BY name",
                                           (time.time() - STALE_S,))]


def _pending(row: tuple) -> Pending:
    device, agent, request_id, kind, body, reply = row[:6]
    return device, agent, request_id, kind, bytes(body), None if reply is None else bytes(reply)
