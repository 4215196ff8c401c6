# Installing, moving and removing agents on a running board.
#
# A signed bundle arrives whole (USB: `microfang deploy --port`) or in chunks over the link
# (over the air: `microfang deploy --device`). Either way it is staged on flash, verified
# (the operator's Ed25519 signature under a key this board trusts, sha256, a version newer than
# the installed one: no rollback, unless the signed head supersedes the installed version),
# swapped in and started; if the new version does not start, the previous one is put back and
# started again. The proof (signed head, key id, signature) is kept beside the bundle in
# /agents/<id>.sig, so that a migration can carry the operator's signature on.
#
# Chunked transfers are resumable: /stage/<xfer>.part grows chunk by chunk, each append closed
# (synced) before it is acknowledged, so after a reconnect or a reboot the gateway goes on from
# the offset the board reports.
#
# Migration: snapshot() suspends an agent and writes all it is (bundle and its proof, linear
# memory, memory-log records and cursor, the migration job it is for) to /snap/<agent>.cbor,
# which the gateway reads back in chunks; restore() on the other board verifies the bundle's
# signature like any deploy, checks the snapshot names the job it arrives with (a snapshot
# swapped in from another job is refused), and spawns it without a start event, so it continues
# where it was.
#
# In pieces: a finished transfer is checked where it lies on flash (sha256, then the signature
# over the bundle's span, bundle.open_signed_file) and copied to /agents in _PIECE-sized reads;
# only the wasm (and a snapshot's memory and log) is read into RAM, once, for the spawn. A
# snapshot is encoded straight into its file. A board at the ESP32 heap running other agents
# has no room for the whole bundle two or three times over.

import hashlib

from . import bundle, cbor, port, protocol
from .errors import MicrofangError
from .memlog import MemoryLog
from .trust import Trust

AGENTS = "/agents"
STAGE = "/stage"
SNAP = "/snap"
SNAPSHOT_FORMAT = "mfsnap/2"


class DeployError(MicrofangError):
    """A bundle or snapshot was refused; the message is the reason the gateway is told."""


# What a command may fail with: each becomes a refusal the gateway is told (_reason).
_INSTALLED_KEPT = 4  # transfers whose answer a put of them again gets (Installer.installed)
_REFUSALS = (MicrofangError, OSError, KeyError, TypeError, ValueError, MemoryError)


def _read(flash, path):
    with flash.open(path, "rb") as f:
        return f.read()


def _write(flash, path, data):
    with flash.open(path, "wb") as f:
        f.write(data)


def _copy(src, span, flash, path):
    # A span of an open file into a new file, a piece at a time.
    with flash.open(path, "wb") as out:
        for data in bundle.pieces(src, span):
            out.write(data)


class _FileSink:
    """A sink for cbor.encode_into: writes to an open file and hashes what it writes; small
    pieces are buffered, large ones (a bundle, a memory image) go through uncopied."""

    def __init__(self, f):
        self.f = f
        self.sha = hashlib.sha256()
        self.size = 0
        self._buf = bytearray()

    def append(self, byte):
        self._buf.append(byte)
        if len(self._buf) >= 256:
            self.flush()

    def extend(self, data):
        if len(data) < 64:
            self._buf.extend(data)
            return
        self.flush()
        self._out(data)

    def flush(self):
        if self._buf:
            self._out(self._buf)
            self._buf = bytearray()

    def _out(self, data):
        self.f.write(data)
        self.sha.update(data)
        self.size += len(data)


class Installer:
    """Installs signed bundles and moves agents for one board. `trust` holds the operator's
    public keys from the board's config (trust.Trust; None: the board refuses every run-time
    install)."""

    def __init__(self, flash, supervisor, trust=None):
        self.flash = flash
        self.supervisor = supervisor
        self.trust = trust if trust is not None else Trust(flash, {})
        # Complete transfers (xfer, what, agent_id, send) to install or restore once the
        # message that completed them is gone: complete_ready(), called by the link's loop.
        self.ready = []
        # The last transfers installed, (xfer, sha256, agent_id, answer): a put of one again
        # (a gateway that took the job over from one that died before it heard the answer)
        # gets the same answer instead of a refusal of what this very transfer installed.
        self.installed = []
        # The chunk size this board asks the gateway for (its put_ack's `chunk`).
        self.chunk_bytes = protocol.CHUNK_SMALL if port.small_heap() else protocol.CHUNK_MAX

    def recover(self):
        """At boot: finish or undo a swap a power cut interrupted. A new version that was never
        confirmed running gives way to the previous one."""
        for name in self.flash.listdir(AGENTS):
            path = AGENTS + "/" + name
            if name.endswith(".new"):
                self.flash.remove(path)
            elif name.endswith(".prev"):
                self.flash.rename(path, path[:-5])  # a1.mfa.prev -> a1.mfa
        for name in self.flash.listdir(STAGE):
            if name.endswith(".done") or name.endswith(".mfs"):  # checked, never installed: sent again
                self.flash.remove(STAGE + "/" + name)

    # ---- install ---------------------------------------------------------------------------

    def installed_version(self, agent_id):
        path = AGENTS + "/" + agent_id + ".mfa"
        try:
            with self.flash.open(path, "rb") as f:
                return bundle.identity(f, (0, self.flash.size(path), 2))["version"]
        except (OSError, MicrofangError):
            return 0

    def install(self, signed):
        """Verify a signed bundle (bytes) and run it in place of the installed version: staged
        on flash, then install_file. Returns (agent_id, version); raises DeployError or
        BundleError with the reason."""
        self.flash.makedirs(STAGE)
        _write(self.flash, STAGE + "/install.mfs", signed)
        return self.install_file(STAGE + "/install.mfs")

    def install_file(self, path):
        """Install a signed bundle lying on this board's flash (a finished transfer, a USB
        copy), checked in place; the file is deleted after."""
        try:
            size = self.flash.size(path)
        except OSError:
            raise DeployError("no file %s on the board" % path)
        try:
            return self._install(path, size)
        finally:
            self.flash.remove(path)

    def _install(self, staged, size):
        with self.flash.open(staged, "rb") as f:
            span, ident, head, proof = bundle.open_signed_file(f, size, self.trust.keys)
            self.trust.update(head)
            agent_id, version = ident["agent_id"], ident["version"]
            if not protocol.name_ok(agent_id):
                raise DeployError("agent id %r is not a valid name" % agent_id)
            installed = self.installed_version(agent_id)
            superseding = self._admit(agent_id, version, installed, head)
            path, sig = AGENTS + "/" + agent_id + ".mfa", AGENTS + "/" + agent_id + ".sig"
            self.flash.makedirs(AGENTS)
            _write(self.flash, sig + ".new", cbor.dumps(proof))
            head = proof = ident = None  # small blocks freed before the wasm and the spawn take theirs
            manifest, wasm = bundle.decode_file(f, span)
            _copy(f, span, self.flash, path + ".new")
        if installed:
            self.flash.rename(path, path + ".prev")
        self.flash.rename(path + ".new", path)
        try:
            self._restart(agent_id, manifest, wasm, path)
        except (MicrofangError, MemoryError) as e:
            manifest = wasm = None  # the new version's RAM back before the old one starts again
            self.flash.remove(sig + ".new")
            if installed:
                self.flash.rename(path + ".prev", path)
                try:
                    self._restart(agent_id, None, None, path)
                    back = "version %d runs again" % installed
                except (MicrofangError, MemoryError) as again:
                    back = ("version %d did not start again either (%s): it starts again at the next boot"
                            % (installed, _reason(again)))
            else:
                self.flash.remove(path)
                back = "nothing installed"
            raise DeployError("agent %s version %d did not start (%s); %s" % (agent_id, version, _reason(e), back))
        if installed:
            self.flash.remove(path + ".prev")
        self.flash.rename(sig + ".new", sig)
        if superseding:
            self.trust.withdraw(agent_id, installed)
        return agent_id, version

    def _admit(self, agent_id, version, installed, head):
        # The version checks of a verified head: True if it supersedes the installed version.
        if self.trust.is_withdrawn(agent_id, version):
            raise DeployError("agent %s version %d was withdrawn by the operator" % (agent_id, version))
        if version > installed:
            return False
        if installed and head.get("supersedes") == installed and version != installed:
            return True
        raise DeployError("agent %s version %d is not newer than the installed version %d (rollback refused; "
                          "the operator can supersede it: `microfang deploy --supersede %d`)"
                          % (agent_id, version, installed, installed))

    def _restart(self, agent_id, manifest, wasm, path):
        # Stop the running version (if any) and start `manifest` and `wasm`, or without them
        # the bundle at `path`, read once the running version's RAM is back.
        sup = self.supervisor
        if agent_id in sup.agents:
            sup.reclaim(agent_id)
        if manifest is None:
            manifest, wasm = bundle.read_file(self.flash, path)
        sup.spawn(manifest=manifest, wasm=wasm, source=path)
        state = sup.start_now(agent_id)
        if state not in ("running", "exhausted"):
            sup.reclaim(agent_id)
            raise DeployError("it trapped on start")

    # ---- chunked transfers -----------------------------------------------------------------

    def begin(self, xfer, size, sha256, agent_id=""):
        """Start or resume a transfer; return how many bytes the board already has. A new
        transfer for an agent discards that agent's unfinished ones (a newer deploy supersedes)."""
        if not protocol.name_ok(xfer):
            raise DeployError("transfer id %r is not a valid name" % xfer)
        if not 0 < size <= protocol.MAX_TRANSFER:
            raise DeployError("transfer of %d bytes is outside 1..%d" % (size, protocol.MAX_TRANSFER))
        used, total = self.flash.usage()
        part = STAGE + "/" + xfer + ".part"
        meta = cbor.dumps({"size": size, "sha256": sha256, "agent": agent_id})
        try:
            if _read(self.flash, STAGE + "/" + xfer + ".meta") == meta:
                return self.flash.size(part)  # the same transfer again: resume
        except OSError:
            pass
        for name in self.flash.listdir(STAGE):
            if name.endswith(".meta") and name != xfer + ".meta":
                try:
                    stale = cbor.loads(_read(self.flash, STAGE + "/" + name)).get("agent")
                except (OSError, cbor.CBORError, AttributeError):
                    stale = agent_id  # unreadable: no use to anyone
                if stale == agent_id:
                    self.discard(name[:-5])
        if size + 2 * 4096 > total - used:
            raise DeployError("flash is full: %d bytes free, the transfer needs %d" % (total - used, size))
        self.flash.makedirs(STAGE)
        _write(self.flash, part, b"")
        _write(self.flash, STAGE + "/" + xfer + ".meta", meta)
        return 0

    def chunk(self, xfer, offset, data):
        """Append a chunk if it is the next one; return the bytes held (duplicates are ignored)."""
        part = STAGE + "/" + xfer + ".part"
        try:
            size = cbor.loads(_read(self.flash, STAGE + "/" + xfer + ".meta"))["size"]
            have = self.flash.size(part)
        except OSError:
            raise DeployError("transfer %s was not started" % xfer)
        if offset != have or len(data) > protocol.CHUNK_MAX:
            return have
        if have + len(data) > size:
            self.discard(xfer)
            raise DeployError("transfer %s: more bytes than the %d announced" % (xfer, size))
        with self.flash.open(part, "ab") as f:
            f.write(data)
        return have + len(data)

    def finish(self, xfer):
        """The path of a complete transfer, its sha256 checked a piece at a time: /stage/<xfer>.done
        (the caller installs or restores it, which deletes it). Its staging files are removed."""
        part, done = STAGE + "/" + xfer + ".part", STAGE + "/" + xfer + ".done"
        try:
            meta = cbor.loads(_read(self.flash, STAGE + "/" + xfer + ".meta"))
            size = self.flash.size(part)
            sha = hashlib.sha256()
            with self.flash.open(part, "rb") as f:
                for data in bundle.pieces(f, (0, size, 2)):
                    sha.update(data)
            if size != meta["size"] or sha.digest() != meta["sha256"]:
                raise DeployError("transfer %s: sha256 does not match (damaged in transit)" % xfer)
            self.flash.rename(part, done)
        finally:
            self.discard(xfer)
        return done

    def discard(self, xfer):
        for suffix in (".part", ".meta"):
            try:
                self.flash.remove(STAGE + "/" + xfer + suffix)
            except OSError:
                pass

    # ---- migration -------------------------------------------------------------------------

    def _proof(self, agent_id, version):
        # The operator's proof for the installed bundle (written at its install).
        try:
            proof = cbor.loads(_read(self.flash, AGENTS + "/" + agent_id + ".sig"))
            head = cbor.loads(proof["head"])
        except (OSError, MicrofangError, KeyError, TypeError):
            proof = head = None
        if not isinstance(head, dict) or head.get("version") != version:
            raise DeployError("agent %s version %d has no operator signature on this board (laid on flash "
                              "unsigned): deploy it signed before moving it" % (agent_id, version))
        return proof

    def snapshot(self, agent_id, job=""):
        """Suspend an agent and write its snapshot for migration job `job`, encoded straight
        into the file; return (size, sha256)."""
        sup = self.supervisor
        agent = sup.agents.get(agent_id)
        if agent is None:
            raise DeployError("no agent %s on this board" % agent_id)
        proof = self._proof(agent_id, agent.manifest["version"])
        sup.suspend(agent_id)
        if agent.sandbox is None:
            raise DeployError("agent %s is not running (state %s): nothing to snapshot" % (agent_id, agent.state))
        log = sup.log(agent_id)
        records = [[seq, payload] for seq, payload in log.records(log.first_seq)] if log is not None else []
        # The bundle as installed (its bytes are what the operator signed; encoding the manifest
        # again would not give them back on MicroPython, whose dicts do not keep their order).
        doc = {"format": SNAPSHOT_FORMAT, "agent_id": agent_id, "job": job,
               "bundle": _read(self.flash, AGENTS + "/" + agent_id + ".mfa"),
               "head": proof["head"], "key_id": proof["key_id"], "sig": proof["sig"],
               "memory": agent.sandbox.memory_snapshot(), "log": records,
               "log_acked": log.acked if log is not None else 0}
        self.flash.makedirs(SNAP)
        with self.flash.open(SNAP + "/" + agent_id + ".cbor", "wb") as f:
            sink = _FileSink(f)
            cbor.encode_into(doc, sink)
            sink.flush()
        return sink.size, sink.sha.digest()

    def read_snapshot(self, agent_id, offset, length):
        with self.flash.open(SNAP + "/" + agent_id + ".cbor", "rb") as f:
            f.seek(offset)
            return f.read(min(length, protocol.READ_MAX))

    def restore(self, raw, job=""):
        """Spawn an agent from another board's snapshot (bytes) for migration job `job`:
        staged, then restore_file."""
        self.flash.makedirs(STAGE)
        _write(self.flash, STAGE + "/restore.done", raw)
        return self.restore_file(STAGE + "/restore.done", job)

    def restore_file(self, path, job=""):
        """Spawn an agent from the snapshot for migration job `job` lying at `path` (deleted
        after); return (agent_id, version)."""
        try:
            with self.flash.open(path, "rb") as f:
                return self._restore(f, self.flash.size(path), job)
        finally:
            self.flash.remove(path)

    def _restore(self, f, size, job):
        if size > protocol.MAX_TRANSFER:
            raise DeployError("not a snapshot: %d bytes is over the %d byte limit" % (size, protocol.MAX_TRANSFER))
        spans = bundle.map_spans(f, 0, size, "snapshot")
        if bundle.value(f, spans, "format") != SNAPSHOT_FORMAT:
            raise DeployError("not a snapshot: missing format %r" % SNAPSHOT_FORMAT)
        manifest, head, proof = bundle.check_signature(f, spans, self.trust.keys, "snapshot's bundle")
        self.trust.update(head)
        if bundle.value(f, spans, "job") != job:
            raise DeployError("snapshot was taken for job %r, not this job %r (swapped)" % (bundle.value(f, spans, "job"), job))
        span = spans["bundle"]
        agent_id = manifest["agent_id"]
        if not protocol.name_ok(agent_id) or bundle.value(f, spans, "agent_id") != agent_id:
            raise DeployError("agent id %r is not a valid name or not the snapshot's" % agent_id)
        if agent_id in self.supervisor.agents:
            raise DeployError("agent %s already runs on this board" % agent_id)
        self._admit(agent_id, manifest["version"], self.installed_version(agent_id), head)
        sig = AGENTS + "/" + agent_id + ".sig"
        self.flash.makedirs(AGENTS)
        _write(self.flash, sig + ".new", cbor.dumps(proof))  # renamed in once the agent runs here
        head = proof = manifest = None  # small blocks freed before the wasm and the spawn take theirs
        manifest, wasm = bundle.decode_file(f, span)
        records, acked = bundle.value(f, spans, "log"), bundle.value(f, spans, "log_acked")
        log = MemoryLog(self.flash, agent_id, manifest["memory_log"]["max_kb"] * 1024)
        log.destroy()
        log.adopt([(int(s), bytes(p)) for s, p in records], int(acked))
        records = None
        self.supervisor.forget_log(agent_id)
        path = AGENTS + "/" + agent_id + ".mfa"
        self.supervisor.spawn(manifest=manifest, wasm=wasm, memory=bundle.value(f, spans, "memory"), source=path)
        _copy(f, span, self.flash, path)
        self.flash.rename(sig + ".new", sig)
        return agent_id, manifest["version"]

    def remove(self, agent_id):
        """Stop an agent and delete it from flash: bundle, snapshot and memory log."""
        sup = self.supervisor
        log = sup.log(agent_id)
        if agent_id in sup.agents:
            sup.reclaim(agent_id)
        if log is not None:
            log.destroy()
        sup.forget_log(agent_id)
        for path in (AGENTS + "/" + agent_id + ".mfa", AGENTS + "/" + agent_id + ".sig", SNAP + "/" + agent_id + ".cbor"):
            try:
                self.flash.remove(path)
            except OSError:
                pass

    # ---- the gateway's commands (ctl) ------------------------------------------------------

    def _put(self, xfer, agent_id, body, send):
        for done, sha256, agent, answer in self.installed:
            if done == xfer and sha256 == bytes(body["sha256"]):
                send(agent, protocol.K_DEPLOYED, answer)
                return
        have = self.begin(xfer, int(body["size"]), bytes(body["sha256"]), agent_id)
        send(agent_id, protocol.K_PUT_ACK, {"xfer": xfer, "offset": have, "probe": True, "chunk": self.chunk_bytes})
        if have == body["size"]:
            self._complete(xfer, body.get("what"), agent_id, send)

    def _chunk(self, xfer, agent_id, body, send):
        data = body["data"]
        if not isinstance(data, (bytes, memoryview)):
            raise DeployError("transfer %s: chunk data is not bytes" % xfer)
        have = self.chunk(xfer, int(body["offset"]), data)
        send(agent_id, protocol.K_PUT_ACK, {"xfer": xfer, "offset": have})
        if have == body["size"]:
            self._complete(xfer, body.get("what"), agent_id, send)

    def _snapshot(self, xfer, agent_id, body, send):
        size, digest = self.snapshot(agent_id, xfer)
        send(agent_id, protocol.K_SNAPSHOT, {"ok": True, "size": size, "sha256": digest})

    def _snap_read(self, xfer, agent_id, body, send):
        offset = int(body["offset"])
        data = self.read_snapshot(agent_id, offset, protocol.READ_MAX)
        send(agent_id, protocol.K_SNAP_CHUNK, {"offset": offset, "data": data})

    def _remove(self, xfer, agent_id, body, send):
        self.remove(agent_id)
        send(agent_id, protocol.K_REMOVED, {"ok": True})

    # protocol.TRANSFER_COMMANDS -> (handler, the answer kind a failure is reported as)
    _COMMANDS = {protocol.C_PUT: (_put, protocol.K_DEPLOYED), protocol.C_CHUNK: (_chunk, protocol.K_DEPLOYED),
                 protocol.C_SNAPSHOT: (_snapshot, protocol.K_SNAPSHOT),
                 protocol.C_SNAP_READ: (_snap_read, protocol.K_SNAPSHOT),
                 protocol.C_REMOVE: (_remove, protocol.K_DEPLOYED)}

    def control(self, kind, agent_id, body, send):
        """Carry out one deploy or migration command; answers go out with send(agent, kind, body)."""
        command = self._COMMANDS.get(kind)
        if command is None:
            return
        xfer = body.get("xfer", "") if isinstance(body, dict) else ""
        try:
            command[0](self, xfer, agent_id, body, send)
        except _REFUSALS as e:
            send(agent_id, command[1], {"xfer": xfer, "ok": False, "reason": _reason(e)})

    def _complete(self, xfer, what, agent_id, send):
        # Not now: the last chunk's message (4 KB) is still held by the reader, and the wasm
        # needs a block of its own size on a fragmented heap.
        self.ready.append((xfer, what, agent_id, send))

    def complete_ready(self):
        """Install or restore each transfer completed since the last call; answer each."""
        while self.ready:
            xfer, what, agent_id, send = self.ready.pop(0)
            try:
                sha256 = cbor.loads(_read(self.flash, STAGE + "/" + xfer + ".meta"))["sha256"]
                done = self.finish(xfer)
                if what == protocol.WHAT_SNAPSHOT:
                    got, version = self.restore_file(done, xfer)
                else:
                    got, version = self.install_file(done)
            except _REFUSALS as e:
                send(agent_id, protocol.K_DEPLOYED, {"xfer": xfer, "ok": False, "reason": _reason(e)})
            else:
                answer = {"xfer": xfer, "ok": True, "version": version}
                self.installed.append((xfer, sha256, got, answer))
                if len(self.installed) > _INSTALLED_KEPT:
                    self.installed.pop(0)
                send(got, protocol.K_DEPLOYED, answer)


def _reason(e):
    if isinstance(e, OSError) and e.args and e.args[0] == 28:
        return "flash is full"
    if isinstance(e, MemoryError):
        return "not enough free RAM on the board (%s)" % (e or "memory allocation failed")
    if isinstance(e, (KeyError, TypeError, ValueError)):
        return "malformed command: %r" % (e,)
    return str(e)
