"""Fleet operations on a gateway's store (a SQLite file or a postgresql:// URL): status, the
audit log (verify, list), device keys, jobs. Each returns data; `microfang` (cli.py) prints it."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from microfang.firmware.errors import MicrofangError
from microfang.gateway.db import is_url
from microfang.gateway.presence import reader_view
from microfang.gateway.registry import remove_device
from microfang.gateway.rollouts import Rollouts
from microfang.gateway.store import Store

Where = str | Path  # a SQLite file or a postgresql:// URL


def create_store(db: Where) -> Store:
    """The gateway's store at `db`, created if missing (registering devices needs no gateway)."""
    return Store(db)  # a damaged or foreign file, an unreachable server: MicrofangError naming it


def open_store(db: Where) -> Store:
    """The gateway's store at `db`: a SQLite file, which must exist, or a PostgreSQL URL."""
    if not is_url(db) and not Path(db).is_file():
        raise MicrofangError(f"{db}: no gateway database (start `microfang gateway --db {db}` first)")
    return create_store(db)


def fleet_status(db: Where) -> list[dict[str, Any]]:
    """One row per device: fleet, presence (online: the gateway believes it and heard it within
    presence.SILENCE_S), when last seen (None: never) and, from its latest telemetry, its
    agents' states, fuel used, events and traps."""
    store = open_store(db)
    try:
        rows = []
        now, online = time.time(), reader_view(store)
        for device, d in sorted(store.devices().items()):
            agents = _agents_of(store.latest_telemetry(device))
            rows.append({"device": device, "fleet": d["fleet"], "online": online(d, now),
                         "last_seen_s_ago": None if d["last_seen"] is None else time.time() - d["last_seen"],
                         "agents": len(agents), "states": sorted({a.get("state", "?") for a in agents.values()}),
                         "fuel_used": sum(a.get("fuel_used", 0) for a in agents.values()),
                         "events": sum(a.get("events", 0) for a in agents.values()),
                         "traps": sum(a.get("traps", 0) for a in agents.values())})
        return rows
    finally:
        store.close()


def _agents_of(telemetry: Any) -> dict[str, dict[str, Any]]:
    """The agents of a telemetry row; a row written before the gateway checked telemetry's
    shape (gateway/shapes.py) may hold anything: what is not a map of maps counts as none."""
    agents = telemetry.get("agents") if isinstance(telemetry, dict) else None
    if not isinstance(agents, dict):
        return {}
    return {name: a for name, a in agents.items() if isinstance(a, dict)}


def audit_verify(db: Where) -> int:
    """The number of audit records whose hash chain holds; MicrofangError naming the first broken one."""
    store = open_store(db)
    try:
        count, bad = store.verify_audit()
        name = store.db.name  # a URL without its password
    finally:
        store.close()
    if bad is not None:
        raise MicrofangError(f"{name}: audit log broken at record {bad} (after {count} good records): "
                             "a record was changed, removed or inserted")
    return count


def add_key(db: Where, device: str, fleet: str) -> bytes:
    """Register a device (it keeps its key if known); its HMAC key (envelopes only: bundles are
    signed with the operator's Ed25519 keys, signing.py)."""
    store = create_store(db)
    try:
        key = store.add_device(device, fleet)
    finally:
        store.close()
    return key


def remove_key(db: Where, device: str) -> None:
    """Remove a device from the registry (registry.remove_device); MicrofangError if unknown."""
    store = open_store(db)
    try:
        remove_device(store, device)
    finally:
        store.close()


def registered_devices(db: Where) -> list[dict[str, Any]]:
    """The registry without its secrets: one row per device with its fleet and presence."""
    store = open_store(db)
    try:
        now, online = time.time(), reader_view(store)
        return [{"device": device, "fleet": d["fleet"], "online": online(d, now), "last_seen": d["last_seen"]}
                for device, d in sorted(store.devices().items())]
    finally:
        store.close()


def recent_audit(db: Where, limit: int = 20, device: str | None = None) -> list[dict[str, Any]]:
    """The latest `limit` audit records (of `device`, if given), oldest first."""
    store = open_store(db)
    try:
        return store.audit_records(limit, device)
    finally:
        store.close()


def recent_jobs(db: Where, limit: int = 20) -> list[dict[str, Any]]:
    """The latest `limit` deploy, migration and control jobs, oldest first."""
    store = open_store(db)
    try:
        return store.jobs()[-limit:]
    finally:
        store.close()


def recent_rollouts(db: Where, limit: int = 20) -> list[dict[str, Any]]:
    """The latest `limit` staged rollouts with how many of their jobs are in each state, oldest first."""
    store = open_store(db)
    try:
        return Rollouts(store).get(limit=limit)
    finally:
        store.close()


CANCELLED = "cancelled by the operator"


def cancel_jobs(db: Where, ids: list[int] | None = None) -> tuple[list[int], list[str]]:
    """Cancel jobs no gateway has taken yet, queued or held for their rollout's wave (`ids`, or
    every such job): (the cancelled, one line for each that could not be). A job a gateway has
    taken runs to its end: its board may already hold part of it (a deploy rolls back by itself
    if it does not start)."""
    store = open_store(db)
    try:
        rows = {row["id"]: row for row in store.jobs(ids)}
        problems = [f"job {job_id}: no such job" for job_id in ids or [] if job_id not in rows]
        cancelled = []
        for row in rows.values():
            if row["state"] in ("queued", "held") and not row["owner"]:
                with store.transaction():
                    taken = store.cancel_job(row["id"], CANCELLED)
                if taken:
                    cancelled.append(row["id"])
                    continue
                row = store.jobs([row["id"]])[0]
            if ids is not None:
                holder = f" with gateway {row['owner']}" if row["owner"] else ""
                problems.append(f"job {row['id']}: {row['state']}{holder}, not cancelled")
        return cancelled, problems
    finally:
        store.close()


def cancel_rollouts(db: Where, ids: list[int] | None = None) -> tuple[list[int], list[str]]:
    """Stop running rollouts (`ids`, or every running one): (the stopped, one line for each that
    could not be). Their jobs no gateway has taken are cancelled; the ones under way go on."""
    store = open_store(db)
    try:
        rollouts = Rollouts(store)
        rows = {r["id"]: r for r in (rollouts.get(ids) if ids is not None else rollouts.running())}
        problems = [f"rollout {rollout}: no such rollout" for rollout in ids or [] if rollout not in rows]
        stopped = []
        for rollout in rows:
            with store.transaction():
                if rollouts.cancel(rollout):
                    stopped.append(rollout)
                    continue
            problems.append(f"rollout {rollout}: {rollouts.get([rollout])[0]['state']}, not cancelled")
        return stopped, problems
    finally:
        store.close()
