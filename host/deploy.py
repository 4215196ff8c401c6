"""`microfang deploy` and `microfang migrate` over the air: sign, queue a job for the gateway
(it shares our database), wait for the boards' answers (`progress(rows)` as they come)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

from microfang.firmware import bundle
from microfang.firmware.errors import BundleError, MicrofangError
from microfang.gateway.jobs import wait_jobs
from microfang.gateway.store import Store
from microfang.ops import Where, open_store


def read_bundle(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise MicrofangError(f"{path}: cannot read bundle ({e.strerror})") from None


def _is_signed(data: bytes) -> bool:
    try:
        bundle.load_doc(data, bundle.SIGNED_FORMAT, "signed bundle", len(data))
    except BundleError:
        return False
    return True


def signed_for(store: Store, fleet: str, data: bytes, path: Path) -> tuple[bytes, dict]:
    """Sign a bundle with the fleet's key (a bundle already signed is checked against it and
    passes through); return it with the manifest inside."""
    key = store.sign_key(fleet)
    signed = _is_signed(data)
    try:
        inner = bundle.open_signed(data, key) if signed else data
        manifest, _ = bundle.decode(inner)
    except BundleError as e:
        raise MicrofangError(f"{path}: {e}") from None
    return (data if signed else bundle.sign(inner, key)), manifest


def queue_deploy(db: Where, path: Path, devices: list[str] | None = None, fleet: str | None = None) -> list[int]:
    """Queue a deploy of the bundle at `path` to each device (or every device of a fleet)."""
    data = read_bundle(path)
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
            signed, manifest = signed_for(store, registry[device]["fleet"], data, path)
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
        return asyncio.run(wait_jobs(store, job_ids, timeout, progress))
    finally:
        store.close()
