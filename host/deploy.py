"""`microfang deploy` and `microfang migrate` over the air: sign, queue a job for the gateway
(it shares our database), wait for the boards' answers with a progress bar."""

from __future__ import annotations

import time
from pathlib import Path

from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn

from microfang import console
from microfang.firmware import bundle, cbor
from microfang.firmware.errors import BundleError, MicrofangError
from microfang.gateway.store import JOB_ACTIVE, Store
from microfang.ops import open_store


def read_bundle(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise MicrofangError(f"{path}: cannot read bundle ({e.strerror})") from None


def _is_signed(data: bytes) -> bool:
    try:
        doc = cbor.loads(data, max_bytes=len(data))
    except cbor.CBORError:
        return False
    return isinstance(doc, dict) and doc.get("format") == bundle.SIGNED_FORMAT


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


def queue_deploy(db: Path, path: Path, devices: list[str] | None = None, fleet: str | None = None) -> list[int]:
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


def queue_migrate(db: Path, agent: str, source: str, target: str) -> list[int]:
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


def wait(db: Path, job_ids: list[int], timeout: float = 120.0) -> list[dict]:
    """Show each job's progress until all have ended; raise if any failed or timed out."""
    store = open_store(db)
    deadline = time.monotonic() + timeout
    try:
        with Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TextColumn("{task.fields[state]}"),
                      console=console.err_console, transient=True) as progress:
            bars = {}
            while True:
                jobs = store.jobs(job_ids)
                for job in jobs:
                    label = f"{job['kind']} {job['agent']} -> {job['target'] or job['device']}"
                    if job["id"] not in bars:
                        bars[job["id"]] = progress.add_task(label, total=job["size"] or None, state=job["state"])
                    progress.update(bars[job["id"]], completed=job["progress"], total=job["size"] or None,
                                    state=job["state"])
                if all(j["state"] not in JOB_ACTIVE for j in jobs) or time.monotonic() > deadline:
                    break
                time.sleep(0.02)
    finally:
        store.close()
    failed = []
    for job in jobs:
        where = job["target"] or job["device"]
        if job["state"] == "done":
            console.info(f"{job['agent']} on {where}: {job['detail']}")
        elif job["state"] == "failed":
            failed.append(f"{where}: {job['detail']}")
            console.error(f"{job['agent']} on {where}: refused: {job['detail']}")
        else:
            failed.append(f"{where}: still {job['state']} after {timeout:.0f} s (is the gateway running?)")
            console.error(f"{job['agent']} on {where}: still {job['state']} after {timeout:.0f} s "
                          "(is the gateway running and the board online? the job stays queued)")
    if failed:
        raise MicrofangError(f"{len(failed)} of {len(jobs)} {jobs[0]['kind']} jobs did not succeed")
    return jobs
