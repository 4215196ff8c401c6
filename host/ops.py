"""Fleet operations on a gateway's database: status, audit verification, device keys."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from rich.table import Table

from microfang import console
from microfang.firmware.errors import MicrofangError
from microfang.gateway.store import Store


def create_store(db: Path) -> Store:
    """The gateway database at `db`, created if missing (registering devices needs no gateway)."""
    try:
        return Store(db)
    except sqlite3.DatabaseError as e:
        raise MicrofangError(f"{db}: not a gateway database ({e})") from None


def open_store(db: Path) -> Store:
    """The gateway database at `db`, which must exist."""
    if not db.is_file():
        raise MicrofangError(f"{db}: no gateway database (start `microfang gateway --db {db}` first)")
    return create_store(db)


def status(db: Path) -> None:
    store = open_store(db)
    try:
        devices = store.devices()
        table = Table(title=f"fleet in {db}: {len(devices)} devices, "
                            f"{sum(1 for d in devices.values() if d['online'])} online")
        for column in ("device", "fleet", "presence", "last seen", "agents", "states", "fuel used", "events", "traps"):
            table.add_column(column)
        for device, d in sorted(devices.items()):
            tele = store.latest_telemetry(device) or {}
            agents = tele.get("agents", {})
            states = ", ".join(sorted({a.get("state", "?") for a in agents.values()})) or "-"
            seen = "never" if d["last_seen"] is None else f"{time.time() - d['last_seen']:.0f} s ago"
            table.add_row(device, d["fleet"], "online" if d["online"] else "offline", seen, str(len(agents)), states,
                          f"{sum(a.get('fuel_used', 0) for a in agents.values()):,}",
                          str(sum(a.get("events", 0) for a in agents.values())),
                          str(sum(a.get("traps", 0) for a in agents.values())))
        console.out.print(table)
    finally:
        store.close()


def audit_verify(db: Path) -> None:
    store = open_store(db)
    try:
        count, bad = store.verify_audit()
    finally:
        store.close()
    if bad is not None:
        raise MicrofangError(f"{db}: audit log broken at record {bad} (after {count} good records): "
                             "a record was changed, removed or inserted")
    console.info(f"audit log intact: {count} records, hash chain verified")


def add_key(db: Path, device: str, fleet: str) -> None:
    store = create_store(db)
    try:
        key = store.add_device(device, fleet)
        store.sign_key(fleet)  # the fleet's deploy signing key, written to its boards by `microfang flash`
    finally:
        store.close()
    console.out.print(key.hex(), markup=False, highlight=False)


def jobs(db: Path, limit: int = 20) -> None:
    """The latest deploy, migration and control jobs and how they ended."""
    store = open_store(db)
    try:
        rows = store.jobs()[-limit:]
    finally:
        store.close()
    table = Table(title=f"jobs in {db}: {len(rows)} shown")
    for column in ("id", "kind", "agent", "board", "state", "progress", "detail"):
        table.add_column(column)
    for job in rows:
        board = f"{job['device']} -> {job['target']}" if job["target"] else job["device"]
        progress = f"{job['progress']:,}/{job['size']:,} B" if job["size"] else "-"
        table.add_row(str(job["id"]), job["kind"], job["agent"], board, job["state"], progress, job["detail"][:60])
    console.out.print(table)
