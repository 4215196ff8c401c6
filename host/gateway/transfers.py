"""Deploys and migrations, carried out by the gateway for `microfang deploy` and `microfang migrate`.

The CLI queues a job in the store; the gateway picks it up (it owns each board's MQTT session
and sequence numbers) and drives it with the board's answers:

    deploy:  ctl put {xfer, size, sha256} -> put_ack {offset}      (the board says what it has)
             ctl chunk {offset, data} ...  -> put_ack {offset} ... (a window of chunks in flight)
             last chunk                    -> deploy {ok, version | reason}
    migrate: ctl snapshot {xfer} (source)  -> snapshot {size, sha256}  (the agent is suspended)
             ctl snap_read {offset} ...    -> snap_chunk {offset, data}
             the snapshot is checked here, then put to the target as above (what: snapshot)
             target deploy ok -> ctl remove (source); refused -> ctl resume (source)

Nothing a board says about an agent's permissions is believed: a snapshot whose manifest is not
the one registered for the agent on the source (the gateway's own record, from the deploy or
the flash that put it there) is refused and audited, and the target's permissions are copied
from that record. The target verifies the operator's signature on the snapshot's bundle like
any deploy and that the snapshot names this job (xfer), which the source wrote into it.

Every step is resumable: a board keeps what it received on flash, a probe (put again) makes it
tell its offset, and a job that hears nothing for RETRY_S seconds probes again. A gateway
restart takes the active jobs up from the store. Kinds and sizes are firmware/protocol.py's.
"""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any

from microfang.firmware import bundle, cbor, protocol
from microfang.firmware.errors import MicrofangError
from microfang.gateway.jobs import Boards
from microfang.gateway.store import Store

KINDS = ("deploy", "migrate")  # job kinds carried out here
WINDOW = 4  # chunks in flight to one board (at most 16 KB: what one board buffers in its MQTT socket)
READ_WINDOW = 2  # snapshot reads in flight: each answer takes a record of the board's outbox
RETRY_S = 3.0


class Job:
    def __init__(self, row: dict[str, Any], data: bytes) -> None:
        self.id: int = row["id"]
        self.kind: str = row["kind"]
        self.device: str = row["device"]
        self.target: str | None = row["target"]
        self.agent: str = row["agent"]
        self.state: str = row["state"]
        self.data = data  # what is being put: the signed bundle, or the snapshot
        self.sent = 0
        self.snapshot = bytearray()
        self.snapshot_size = 0
        self.snapshot_sha = b""
        self.heard = time.monotonic()
        self.started = time.monotonic()
        self.read_upto = 0
        self.chunk = protocol.CHUNK_MAX  # what the board asked for in its probe answer (put_ack chunk)

    @property
    def receiver(self) -> str:
        """The board being put to: the target of a migration, else the device."""
        return self.target if self.kind == "migrate" and self.target else self.device

    @property
    def xfer(self) -> str:
        return f"{self.kind[0]}{self.id}"

    @property
    def what(self) -> str:
        return protocol.WHAT_SNAPSHOT if self.kind == "migrate" else protocol.WHAT_BUNDLE


class Transfers:
    def __init__(self, gateway: Boards) -> None:
        self.gw = gateway
        self.active: dict[int, Job] = {}
        self._no_memory: dict[str, int] = {}  # device -> its link's last dropped_no_memory count

    @property
    def store(self) -> Store:
        assert self.gw.store is not None
        return self.gw.store

    def take(self, row: dict[str, Any]) -> None:
        """Start a queued (or, after a restart, unfinished) job once."""
        if row["id"] not in self.active:
            job = Job(row, self.store.job_data(row["id"]))
            self.active[job.id] = job
            self._start(job)

    def retry_stalled(self) -> None:
        """Probe again the jobs that heard nothing for RETRY_S seconds."""
        now = time.monotonic()
        for job in list(self.active.values()):
            # An offline board gets its commands when it is back (the broker keeps them).
            online = all(self.gw.devices.get(d, {}).get("online") for d in {job.device, job.receiver})
            if now - job.heard > RETRY_S and online:
                job.heard = now
                self._start(job)

    def on_telemetry(self, device: str, body: dict[str, Any]) -> None:
        """A board's telemetry (checked by shapes.py): if its link dropped a message it had no
        RAM for (firmware/mqtt.py "no_memory": read through, acknowledged, never delivered)
        while a job was putting to it or reading from it, that job fails now with the reason
        instead of probing again until its timeout."""
        count = body.get("link", {}).get("dropped_no_memory", 0)
        before = self._no_memory.get(device)
        self._no_memory[device] = count
        if before is None or count <= before:  # first heard, or the board restarted its count
            return
        for job in list(self.active.values()):
            if device in (job.device, job.receiver):
                self._finish(job, False, f"not enough free RAM on the board {device} for this transfer (it dropped "
                                         f"{count - before} message(s) it had no room for; "
                                         f"{body.get('free_heap', '?')} bytes free)")

    def drop(self, job_id: int) -> None:
        """Forget a job another gateway has taken over."""
        self.active.pop(job_id, None)

    def _start(self, job: Job) -> None:
        """(Re)start a job from its current state: each command is safe to repeat."""
        for device in {job.device, job.receiver}:
            if device not in self.gw.devices:
                self._finish(job, False, f"unknown device {device!r}")
                return
        if job.kind == "deploy" or job.state == "restoring":
            self._set(job, "restoring" if job.kind == "migrate" else "sending")
            self._send(job.receiver, job.agent, protocol.C_PUT, {"xfer": job.xfer, "size": len(job.data),
                                                                  "sha256": hashlib.sha256(job.data).digest(),
                                                                  "what": job.what})
        elif job.snapshot_size:
            job.read_upto = len(job.snapshot)  # ask again for what has not come
            self._read_more(job)
        else:
            self._set(job, "snapshot")
            self._send(job.device, job.agent, protocol.C_SNAPSHOT, {"xfer": job.xfer})

    # ---- the boards' answers (from Gateway._dispatch, inside its transaction) -------------

    def on_board(self, device: str, agent: str, kind: str, body: Any) -> bool:
        """A board's answer (protocol.BOARD_ANSWERS) to the job it belongs to; False if that
        job is not running here."""
        if not isinstance(body, dict):
            return True  # nobody's: shapes.py lets only maps through
        job = self._find(device, agent, kind, body)
        if job is None:
            return False
        job.heard = time.monotonic()
        handler = self._answers.get(kind)
        if handler is not None:
            handler(self, job, body)
        return True

    def _put_acked(self, job: Job, body: dict[str, Any]) -> None:
        if body.get("probe"):
            job.chunk = protocol.chunk_size(body.get("chunk"))
        self._acked(job, int(body.get("offset", 0)), bool(body.get("probe")))

    def _snapshot_taken(self, job: Job, body: dict[str, Any]) -> None:
        if not body.get("ok"):
            self._finish(job, False, f"snapshot refused: {body.get('reason')}")
            return
        job.snapshot_size, job.snapshot_sha = int(body["size"]), bytes(body["sha256"])
        job.snapshot, job.read_upto = bytearray(), 0
        self._read_more(job)

    def _snapshot_piece(self, job: Job, body: dict[str, Any]) -> None:
        self._snapshot_chunk(job, int(body.get("offset", -1)), bytes(body.get("data", b"")))

    def _find(self, device: str, agent: str, kind: str, body: dict[str, Any]) -> Job | None:
        for job in self.active.values():
            if kind in (protocol.K_PUT_ACK, protocol.K_DEPLOYED):
                if job.receiver == device and body.get("xfer") == job.xfer:
                    return job
            elif job.kind == "migrate" and job.device == device and job.agent == agent:
                return job
        return None

    def _acked(self, job: Job, offset: int, probe: bool) -> None:
        size = len(job.data)
        self.store.update_job(job.id, progress=offset)
        if probe:
            job.sent = offset  # the board's word after a (re)start: go on from there
        job.sent = max(job.sent, offset)
        while job.sent < size and job.sent < offset + WINDOW * job.chunk:
            piece = job.data[job.sent:job.sent + job.chunk]
            self._send(job.receiver, job.agent, protocol.C_CHUNK, {"xfer": job.xfer, "offset": job.sent, "data": piece,
                                                                   "size": size, "what": job.what})
            job.sent += len(piece)

    def _deployed(self, job: Job, body: dict[str, Any]) -> None:
        ok = bool(body.get("ok"))
        if ok:
            self._register(job)
        if job.kind == "deploy":
            self._finish(job, ok, f"version {body.get('version')} running" if ok else str(body.get("reason")))
            return
        if ok:
            self._send(job.device, job.agent, protocol.C_REMOVE, {})
            ms = (time.monotonic() - job.started) * 1000
            self._finish(job, True, f"moved from {job.device} to {job.target} (agent stopped {ms:.0f} ms)")
        else:
            self._send(job.device, job.agent, protocol.C_RESUME, {})
            self._finish(job, False, f"{job.target} refused it: {body.get('reason')}; it runs on at {job.device}")

    def _read_more(self, job: Job) -> None:
        self._set(job, "snapshot")
        while job.read_upto < job.snapshot_size and job.read_upto < len(job.snapshot) + READ_WINDOW * protocol.READ_MAX:
            self._send(job.device, job.agent, protocol.C_SNAP_READ, {"offset": job.read_upto})
            job.read_upto += protocol.READ_MAX

    def _snapshot_chunk(self, job: Job, offset: int, data: bytes) -> None:
        if offset != len(job.snapshot) or not data:
            job.read_upto = len(job.snapshot)  # lost or out of order: ask again from what we hold
            return
        job.snapshot += data
        self.store.update_job(job.id, progress=len(job.snapshot), size=job.snapshot_size)
        if len(job.snapshot) < job.snapshot_size:
            self._read_more(job)
            return
        if hashlib.sha256(job.snapshot).digest() != job.snapshot_sha:
            self._send(job.device, job.agent, protocol.C_RESUME, {})
            self._finish(job, False, "snapshot damaged in transit (sha256 mismatch); the agent runs on")
            return
        refusal = self._refusal(job, bytes(job.snapshot))
        if refusal is not None:
            self._send(job.device, job.agent, protocol.C_RESUME, {})
            self._finish(job, False, f"snapshot refused: {refusal}; the agent runs on at {job.device}")
            return
        job.data = bytes(job.snapshot)
        self.store.update_job(job.id, data=job.data, size=len(job.data), progress=0)
        job.state = "restoring"
        self._start(job)

    def _refusal(self, job: Job, raw: bytes) -> str | None:
        """Why a snapshot read from the source may not go on to the target, or None."""
        try:
            doc = cbor.loads(raw, max_bytes=len(raw))
            manifest, _ = bundle.decode(doc["bundle"])
        except (MicrofangError, KeyError, TypeError) as e:
            return f"unreadable ({e})"
        if doc.get("job") != job.xfer or manifest["agent_id"] != job.agent:
            return f"it was taken for job {doc.get('job')!r} and agent {manifest['agent_id']!r}, not {job.xfer} and {job.agent}"
        registered = self.store.manifest(job.device, job.agent)
        if registered is None:
            return f"no manifest registered for {job.agent} on {job.device}: its permissions are unknown here"
        changed = sorted(k for k in set(registered) | set(manifest) if json.loads(json.dumps(manifest.get(k))) != registered.get(k))
        if changed:
            return f"its manifest differs from the one registered for {job.agent} on {job.device} ({', '.join(changed)})"
        return None

    def _register(self, job: Job) -> None:
        """Record the manifest now installed: the gateway enforces permissions from it. A
        deploy's comes from the operator-signed bundle; a migration's from the registry."""
        if job.kind == "migrate":
            manifest = self.store.manifest(job.device, job.agent)
            self.store.drop_manifest(job.device, job.agent)
            if manifest is None:
                self.gw.log(f"job {job.id}: no manifest registered for {job.agent} on {job.device}; none registered")
                return
            self.store.register_manifest(job.receiver, manifest)
            return
        try:
            manifest, _ = bundle.decode(cbor.loads(job.data, max_bytes=len(job.data))["bundle"])
        except (MicrofangError, KeyError, TypeError) as e:
            self.gw.log(f"job {job.id}: installed bundle unreadable here ({e}); permissions not registered")
            return
        self.store.register_manifest(job.receiver, manifest)

    # protocol.BOARD_ANSWERS -> handler(self, job, body)
    _answers = {protocol.K_PUT_ACK: _put_acked, protocol.K_DEPLOYED: _deployed, protocol.K_SNAPSHOT: _snapshot_taken,
                protocol.K_SNAP_CHUNK: _snapshot_piece}

    # ---- bookkeeping ---------------------------------------------------------------------

    def _send(self, device: str, agent: str, kind: str, body: dict[str, Any]) -> None:
        self.gw.send(device, agent, kind, body, control=True)

    def _set(self, job: Job, state: str) -> None:
        if job.state != state:
            job.state = state
            self.store.update_job(job.id, state=state)

    def _finish(self, job: Job, ok: bool, detail: str) -> None:
        self.active.pop(job.id, None)
        self.store.update_job(job.id, state="done" if ok else "failed", detail=detail)
        action = {"deploy": "deployed" if ok else "deploy refused",
                  "migrate": "migrated" if ok else "migration failed"}[job.kind]
        self.store.audit(job.device, job.agent, action, {"job": job.id, "detail": detail})
        self.gw.log(f"job {job.id} ({job.kind} {job.agent} on {job.device}): {detail}")
