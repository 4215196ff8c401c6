"""`microfang deploy` and `microfang migrate` over the air: sign (the operator's key, signing.py),
queue a job for the gateway (it shares our database), wait for the boards' answers
(`progress(rows)` as they come)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

from microfang import signing
from microfang.firmware.errors import MicrofangError
from microfang.gateway.jobs import wait_jobs
from microfang.gateway.peers import STALE_S, live_gateways
from microfang.gateway.store import Store
from microfang.ops import Where, open_store
from microfang.signing import signed_bundle


def read_bundle(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise MicrofangError(f"{path}: cannot read bundle ({e.strerror})") from None


def queue_deploy(db: Where, path: Path, devices: list[str] | None = None, fleet: str | None = None,
                 keys: Path | None = None, supersedes: int = 0) -> list[int]:
    """Queue a deploy of the bundle at `path` to each device (or every device of a fleet),
    signed here with the operator's signing key (signing.load(keys)); `supersedes`: the
    installed version this one may replace although it is not newer (firmware/trust.py)."""
    data = read_bundle(path)
    signed, manifest = signed_bundle(signing.load(keys), data, str(path), supersedes)
    store = open_store(db)
    try:
        registry = store.devices()
        if fleet is not None:
            devices = sorted(d for d, r in registry.items() if r["fleet"] == fleet)
            if not devices:
                raise MicrofangError(f"fleet {fleet!r} has no devices in {db}")
        jobs = []
        for device in devices or []:
            if device not in registry:
                raise MicrofangError(f"unknown device {device!r} (add it with `microfang keys add {device}`)")
            jobs.append(store.add_job("deploy", device, manifest["agent_id"], signed, version=manifest["version"]))
        return jobs
    finally:
        store.close()


def queue_migrate(db: Where, agent: str, source: str, target: str) -> list[int]:
    store = open_store(db)
    try:
        registry = store.devices()
        for device in (source, target):
            if device not in registry:
                raise MicrofangError(f"unknown device {device!r} (add it with `microfang keys add {device}`)")
        if source == target:
            raise MicrofangError("--from and --to name the same board")
        return [store.add_job("migrate", source, agent, target=target)]
    finally:
        store.close()


def wait(db: Where, job_ids: list[int], timeout: float = 120.0,
         progress: Callable[[list[dict[str, Any]]], None] | None = None) -> list[dict[str, Any]]:
    """The jobs' rows once all have ended (`progress(rows)` at every poll). Raises
    gateway.jobs.JobsFailed (with every row) if any failed or did not end in `timeout` seconds."""
    store = open_store(db)
    try:
        require_gateway(store, db)
        return asyncio.run(wait_jobs(store, job_ids, timeout, progress))
    finally:
        store.close()


def require_gateway(store: Store, db: Where) -> None:
    """MicrofangError unless a gateway is running on the store (the jobs are queued already)."""
    if not live_gateways(store):
        raise MicrofangError(f"no gateway is running on {db} (none heard in the last {STALE_S:.0f} s): the jobs "
                             f"stay queued until `microfang gateway` runs on this store (`microfang jobs` shows "
                             "them)")
