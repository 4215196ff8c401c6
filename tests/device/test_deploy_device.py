# Deploy and migration specifications that must hold on a board: run under MicroPython with an
# ESP32 heap and under CPython (tests/test_device_runtimes.py). Plain asserts only.
import gc
import hashlib
import os
from binascii import hexlify

from microfang.firmware import bundle as bundles
from microfang.firmware import port, protocol
from microfang.firmware.blockdev import FileBlockDevice
from microfang.firmware.deploy import DeployError, Installer
from microfang.firmware.errors import BundleError
from microfang.firmware.port import Flash
from microfang.firmware.supervisor import Supervisor
from microfang.firmware.trust import Trust
from test_supervisor_device import raises


_mounts = [0]


class Board:
    """A supervisor with its own flash and an installer: what deploy.py runs against. The flash
    is a file, not RAM: two boards' flash would not fit beside their agents in one ESP32 heap."""

    def __init__(self, bundle):
        _mounts[0] += 1
        self.now = [0]
        self.seen = []
        self.image = "/tmp/mf_deploy_%s.img" % hexlify(os.urandom(6)).decode()
        self.device = FileBlockDevice(self.image, 512, 64)
        self.flash = Flash(self.device, "/mf_d%d" % _mounts[0])
        self.sup = Supervisor(report=lambda a, k, t: self.seen.append((a, k, t)), clock=lambda: self.now[0],
                              flash=self.flash)
        # Provisioned as `microfang flash` provisions: the operator's public key, nothing secret.
        self.config = {"sign_keys": [bundle("operator.pub")], "trust_serial": 1}
        self.installer = Installer(self.flash, self.sup, Trust(self.flash, self.config))

    def logs(self, agent_id):
        return [t for a, k, t in self.seen if a == agent_id and k == "log"]

    def run(self, ms, step_ms=50):
        for _ in range(ms // step_ms):
            self.now[0] += step_ms
            self.sup.step()

    def close(self):
        for agent_id in list(self.sup.agents):
            self.sup.reclaim(agent_id)
        self.flash.unmount()
        self.device.file.close()
        os.remove(self.image)


def test_signed_bundle_installs_and_runs(bundle):
    b = Board(bundle)
    assert b.installer.install(bundle("hello.mfs")) == ("a1", 1)
    assert b.sup.agents["a1"].state == "running"
    assert b.logs("a1") == ["hi"]  # its start event ran during the install
    assert b.installer.installed_version("a1") == 1
    b.close()


def test_forged_signature_is_refused_and_the_running_agent_keeps_running(bundle):
    b = Board(bundle)
    b.installer.install(bundle("hello.mfs"))
    why = raises(BundleError, b.installer.install, bundle("hello_v2.forged.mfs"))
    assert "signature does not verify under key" in why, why
    assert b.sup.agents["a1"].state == "running"
    assert b.installer.installed_version("a1") == 1
    b.close()


def test_unsigned_bundle_is_refused(bundle):
    b = Board(bundle)
    assert "not a signed bundle" in raises(BundleError, b.installer.install, bundle("hello"))
    b.close()


def test_older_or_same_version_is_refused_as_a_rollback(bundle):
    b = Board(bundle)
    b.installer.install(bundle("hello_v2.mfs"))
    why = raises(DeployError, b.installer.install, bundle("hello.mfs"))
    assert "version 1 is not newer than the installed version 2" in why, why
    raises(DeployError, b.installer.install, bundle("hello_v2.mfs"))
    assert b.sup.agents["a1"].manifest["version"] == 2
    b.close()


def test_newer_version_replaces_the_running_one(bundle):
    b = Board(bundle)
    b.installer.install(bundle("hello.mfs"))
    assert b.installer.install(bundle("hello_v2.mfs")) == ("a1", 2)
    assert b.sup.agents["a1"].manifest["version"] == 2
    assert b.flash.listdir("/agents") == ["a1.mfa", "a1.sig"]  # the bundle and the operator's proof
    b.close()


def test_version_that_traps_on_start_is_rolled_back(bundle):
    b = Board(bundle)
    b.installer.install(bundle("hello.mfs"))
    why = raises(DeployError, b.installer.install, bundle("trap_v3.mfs"))
    assert "did not start" in why and "version 1 runs again" in why, why
    assert b.sup.agents["a1"].state == "running"
    assert b.installer.installed_version("a1") == 1
    b.close()


def damage(flash, path, where, flip):
    """XOR the byte at where(data) of a file on flash with `flip`; the damaged bytes."""
    with flash.open(path, "rb") as f:
        data = bytearray(f.read())
    data[where(data)] ^= flip
    with flash.open(path, "wb") as f:
        f.write(data)
    return data


def test_a_version_that_traps_on_start_over_a_previous_one_that_cannot_start_again_says_so(bundle):
    # Seen on a full ESP32 board (issue 16): the new version did not fit, nor did the previous
    # one after it; the install ended with the bare "does not fit" of the second attempt, as if
    # the previous version ran. Here the previous version's bundle is damaged on flash.
    b = Board(bundle)
    b.installer.install(bundle("hello.mfs"))
    damage(b.flash, "/agents/a1.mfa", lambda data: len(data) - 5, 0xFF)  # inside the wasm's sha256, the last field
    why = raises(DeployError, b.installer.install, bundle("trap_v3.mfs"))
    assert "agent a1 version 3 did not start (it trapped on start)" in why, why
    assert "version 1 did not start again either (" in why and "it starts again at the next boot" in why, why
    assert "a1" not in b.sup.agents
    assert b.flash.listdir("/agents") == ["a1.mfa", "a1.sig"], b.flash.listdir("/agents")
    b.close()


def test_an_installed_bundle_whose_map_key_is_damaged_on_flash_counts_as_no_version(bundle):
    # A key that is not UTF-8 any more raised UnicodeError out of the bundle's map walk, past
    # every handler that expects a BundleError: the next install of that agent failed with it.
    b = Board(bundle)
    b.installer.install(bundle("hello.mfs"))
    data = damage(b.flash, "/agents/a1.mfa", lambda data: bytes(data).index(b"format"), ord("f") ^ 0x8C)  # not UTF-8
    assert b.installer.installed_version("a1") == 0
    with b.flash.open("/agents/a1.mfa", "rb") as f:
        why = raises(BundleError, bundles.identity, f, (0, len(data), 2))
    assert why == "not a bundle: a map key is not UTF-8", why
    b.close()


def test_interrupted_swap_falls_back_to_the_previous_version_at_boot(bundle):
    b = Board(bundle)
    b.installer.install(bundle("hello.mfs"))
    # A power cut after the swap, before the new version was confirmed running:
    b.flash.rename("/agents/a1.mfa", "/agents/a1.mfa.prev")
    with b.flash.open("/agents/a1.mfa", "wb") as f:
        f.write(bundle("hello_v2"))
    b.installer.recover()
    assert b.flash.listdir("/agents") == ["a1.mfa", "a1.sig"]
    assert b.installer.installed_version("a1") == 1
    b.close()


def test_chunked_transfer_resumes_where_the_board_stopped(bundle):
    b = Board(bundle)
    data = bundle("hello_v2.mfs")
    digest = hashlib.sha256(data).digest()
    assert b.installer.begin("x1", len(data), digest) == 0
    assert b.installer.chunk("x1", 0, data[:300]) == 300
    assert b.installer.chunk("x1", 0, data[:300]) == 300  # a resent chunk changes nothing
    assert b.installer.chunk("x1", 900, data[900:1000]) == 300  # a gap is not written
    assert b.installer.begin("x1", len(data), digest) == 300  # after a reconnect: go on from 300
    assert b.installer.chunk("x1", 300, data[300:]) == len(data)
    done = b.installer.finish("x1")
    with b.flash.open(done, "rb") as f:
        assert f.read() == data
    b.flash.remove(done)
    assert b.flash.listdir("/stage") == []
    b.close()


def test_a_board_under_512_kb_of_heap_asks_for_512_byte_chunks_others_for_4_kib(bundle):
    # Issue 16: a 4 KB chunk message needs a 4 KB hole, which an ESP32 heap (110 KB) full of
    # agents has not; the gateway sends what the put_ack asks for (host/gateway/transfers.py).
    b = Board(bundle)
    data = bundle("hello.mfs")
    sent = []
    b.installer.control(protocol.C_PUT, "a1", {"xfer": "d3", "size": len(data), "sha256": hashlib.sha256(data).digest(),
                                               "what": protocol.WHAT_BUNDLE}, lambda *m: sent.append(m))
    heap = port.heap_size()  # None on CPython: the simulator's memory is the host's
    want = 512 if heap is not None and heap < 512 * 1024 else 4096
    assert sent == [("a1", protocol.K_PUT_ACK, {"xfer": "d3", "offset": 0, "probe": True, "chunk": want})], (heap, sent)
    b.close()


def test_a_staged_file_is_hashed_without_a_block_of_garbage_per_piece(bundle):
    # Issue 16: each 512 B piece read to hash or copy a staged bundle was a block of its own; on
    # a full board at the ESP32 heap the check of an update failed there ("allocating 513
    # bytes"). The pieces now come through one buffer the firmware allocated at boot.
    b = Board(bundle)
    with b.flash.open("/big", "wb") as f:
        f.write(bytes(range(256)) * 16)
    sha = hashlib.sha256()
    with b.flash.open("/big", "rb") as f:
        if port.heap_free() is not None:
            gc.collect()
            gc.disable()  # garbage stays counted until the end
        before = port.heap_free()
        for data in bundles.pieces(f, (0, 4096, 2)):
            sha.update(data)
        after = port.heap_free()
        gc.enable()
    assert sha.digest() == hashlib.sha256(bytes(range(256)) * 16).digest()
    assert before is None or before - after < 512, before - after
    b.close()


def test_a_bundles_id_and_version_are_read_from_flash_field_by_field(bundle):
    # Issue 16: an update is checked while the version it replaces runs on; the whole manifest
    # decoded (~1.1 KB of small objects and a 0.5 KB read) did not fit on a full ESP32 board.
    b = Board(bundle)
    data = bundle("hello_v2")
    with b.flash.open("/b.mfa", "wb") as f:
        f.write(data)
    with b.flash.open("/b.mfa", "rb") as f:
        assert bundles.identity(f, (0, len(data), 2)) == {"agent_id": "a1", "version": 2}
    b.close()


def test_a_bundle_whose_manifest_has_a_key_that_is_not_text_is_refused_before_anything_is_read(bundle):
    manifest, wasm = bundles.decode(bundle("hello"))
    manifest[7] = "x"  # a key no normalized manifest has
    data = bundles.encode(manifest, wasm)
    b = Board(bundle)
    with b.flash.open("/b.mfa", "wb") as f:
        f.write(data)
    with b.flash.open("/b.mfa", "rb") as f:
        why = raises(BundleError, bundles.identity, f, (0, len(data), 2))
    assert why == "not a bundle manifest: a map key is not a short text", why
    b.close()


def test_a_put_of_an_installed_transfer_again_gets_the_same_answer(bundle):
    # A gateway that takes a job over from one that died before the board's answer reached it
    # asks again: the board answers what it did, not "not newer than the installed version".
    b = Board(bundle)
    data = bundle("hello.mfs")
    put = {"xfer": "d7", "size": len(data), "sha256": hashlib.sha256(data).digest(), "what": protocol.WHAT_BUNDLE}
    sent = []
    send = lambda agent, kind, body: sent.append((agent, kind, body))  # noqa: E731
    b.installer.control(protocol.C_PUT, "a1", put, send)
    b.installer.control(protocol.C_CHUNK, "a1", {"xfer": "d7", "offset": 0, "data": data, "size": len(data)}, send)
    b.installer.complete_ready()
    assert sent[-1] == ("a1", protocol.K_DEPLOYED, {"xfer": "d7", "ok": True, "version": 1}), sent
    b.installer.control(protocol.C_PUT, "a1", put, send)
    assert sent[-1] == ("a1", protocol.K_DEPLOYED, {"xfer": "d7", "ok": True, "version": 1}), sent
    other = dict(put, xfer="d8")  # another transfer of the same bundle is a rollback, as before
    b.installer.control(protocol.C_PUT, "a1", other, send)
    b.installer.control(protocol.C_CHUNK, "a1", {"xfer": "d8", "offset": 0, "data": data, "size": len(data)}, send)
    b.installer.complete_ready()
    assert sent[-1][2]["ok"] is False and "not newer" in sent[-1][2]["reason"], sent[-1]
    b.close()


def test_a_new_transfer_for_an_agent_discards_its_unfinished_one(bundle):
    b = Board(bundle)
    data = bundle("hello.mfs")
    digest = hashlib.sha256(data).digest()
    b.installer.begin("old", len(data), digest, "a1")
    b.installer.chunk("old", 0, data[:100])
    b.installer.begin("other", len(data), digest, "b2")
    b.installer.begin("new", len(data), digest, "a1")
    assert b.flash.listdir("/stage") == ["new.meta", "new.part", "other.meta", "other.part"]
    b.close()


def test_damaged_transfer_is_refused(bundle):
    b = Board(bundle)
    data = bundle("hello.mfs")
    b.installer.begin("x2", len(data), hashlib.sha256(data).digest())
    b.installer.chunk("x2", 0, data[:-1] + bytes([data[-1] ^ 1]))
    assert "sha256 does not match" in raises(DeployError, b.installer.finish, "x2")
    b.close()


def test_transfer_larger_than_the_free_flash_is_refused(bundle):
    b = Board(bundle)
    assert "flash is full" in raises(DeployError, b.installer.begin, "x3", 60000, b"\x00" * 32)
    b.close()


def test_migration_keeps_the_counter_in_linear_memory(bundle):
    src, dst = Board(bundle), Board(bundle)
    src.installer.install(bundle("example_hello.mfs"))
    src.run(650)  # three timer ticks of 200 ms
    assert src.logs("hello")[-1] == "tick 3"
    size, digest = src.installer.snapshot("hello", "m1")
    assert src.sup.agents["hello"].state == "suspended"
    raw = b""
    while len(raw) < size:
        raw += src.installer.read_snapshot("hello", len(raw), 2048)
    assert hashlib.sha256(raw).digest() == digest
    src.installer.remove("hello")
    assert "hello" not in src.sup.agents and src.flash.listdir("/agents") == []
    src.close()
    assert dst.installer.restore(raw, "m1") == ("hello", 1)
    dst.run(250)
    assert dst.logs("hello") == ["tick 4"]  # no second hello: it continued, it did not start over
    dst.close()


def test_migration_moves_the_memory_log_with_its_sequence_numbers(bundle):
    src, dst = Board(bundle), Board(bundle)
    src.installer.install(bundle("example_bootcount.mfs"))  # the first boot: record 1
    for _ in range(3):  # three boots more: records 2, 3, 4
        src.sup.reclaim("bootcount")
        src.sup.spawn(bundle("example_bootcount"))
        src.sup.start_now("bootcount")
    src.sup.log("bootcount").ack(2)
    src.installer.snapshot("bootcount", "m2")
    with src.flash.open("/snap/bootcount.cbor", "rb") as f:
        raw = f.read()
    src.close()
    dst.installer.restore(raw, "m2")
    log = dst.sup.log("bootcount")
    assert [s for s, _ in log.records()] == [1, 2, 3, 4]
    assert log.acked == 2
    dst.sup.reclaim("bootcount")
    dst.sup.spawn(bundle("example_bootcount"))
    dst.sup.start_now("bootcount")
    assert dst.logs("bootcount")[-1] == "boot 5"
    dst.close()


# ---- signatures: only the operator's code runs (issue 17) --------------------------------


def test_bundle_signed_with_a_key_made_from_a_stolen_board_is_refused_as_unknown(bundle):
    # All a board's flash image gives an attacker is its HMAC key and the operator's PUBLIC
    # keys: any key they make is one this board has never heard of.
    b = Board(bundle)
    b.installer.install(bundle("hello.mfs"))
    why = raises(BundleError, b.installer.install, bundle("hello_v2.stranger.mfs"))
    assert "bundle signed by unknown key" in why, why
    assert b.installer.installed_version("a1") == 1
    b.close()


def test_old_hmac_signed_bundle_is_refused_with_the_way_to_re_sign_it(bundle):
    b = Board(bundle)
    why = raises(BundleError, b.installer.install, bundle("hello_v2.hmac.mfs"))
    assert "old fleet HMAC key (mfs/1)" in why and "sign its .mfa again" in why, why
    assert b.installer.installed_version("a1") == 0
    b.close()


def test_bundle_swapped_under_a_valid_signature_is_refused(bundle):
    # The operator's head and signature, around the same agent and version with more
    # host functions and tools.
    b = Board(bundle)
    why = raises(BundleError, b.installer.install, bundle("hello_v2.tampered.mfs"))
    assert "does not match its signed sha256 (tampered)" in why, why
    assert b.flash.listdir("/agents") == []
    b.close()


def test_a_blocking_version_is_superseded_only_by_the_operators_signed_bundle(bundle):
    b = Board(bundle)
    b.installer.install(bundle("hello_v2.mfs"))  # a bad v2 blocks every v1 fix by rollback protection
    assert "--supersede 2" in raises(DeployError, b.installer.install, bundle("hello.mfs"))
    assert b.installer.install(bundle("hello.supersedes2.mfs")) == ("a1", 1)
    assert b.sup.agents["a1"].manifest["version"] == 1
    why = raises(DeployError, b.installer.install, bundle("hello_v2.mfs"))  # the bad one again
    assert "version 2 was withdrawn by the operator" in why, why
    # The superseding bundle replayed later changes nothing: it names v2, which is not installed.
    assert "not newer" in raises(DeployError, b.installer.install, bundle("hello.supersedes2.mfs"))
    again = Trust(b.flash, b.config)  # after a reboot
    assert again.is_withdrawn("a1", 2) and not again.is_withdrawn("a1", 1)
    b.close()


def test_a_rotated_key_reaches_the_board_with_a_deploy_and_the_revoked_one_stops_working(bundle):
    b = Board(bundle)
    b.installer.install(bundle("hello.rotated.mfs"))  # K1 signs and announces K2 (serial 2)
    assert len(b.installer.trust.keys) == 2 and b.installer.trust.serial == 2
    assert b.installer.install(bundle("hello_v2.revoked.mfs")) == ("a1", 2)  # K2 signs, K1 revoked
    assert len(b.installer.trust.keys) == 1 and b.installer.trust.serial == 3
    why = raises(BundleError, b.installer.install, bundle("trap_v3.k1.mfs"))
    assert "signed by unknown key" in why, why
    # An older list replayed under K2 does not bring K1 back, and the board keeps it across a boot.
    raises(DeployError, b.installer.install, bundle("trap_v3.replayed_list.mfs"))  # installs, traps, rolled back
    assert Trust(b.flash, b.config).keys == b.installer.trust.keys and b.installer.trust.serial == 3
    b.close()


def test_a_board_that_missed_the_rotation_refuses_the_new_key(bundle):
    b = Board(bundle)
    assert "signed by unknown key" in raises(BundleError, b.installer.install, bundle("hello_v2.revoked.mfs"))
    b.close()


def _snapshot(src, agent_id, job):
    size, _ = src.installer.snapshot(agent_id, job)
    raw = b""
    while len(raw) < size:
        raw += src.installer.read_snapshot(agent_id, len(raw), 2048)
    return raw


def test_snapshot_of_an_agent_laid_on_flash_unsigned_is_refused_and_it_keeps_running(bundle):
    b = Board(bundle)
    b.sup.spawn(bundle("example_hello"))
    b.sup.start_now("hello")
    why = raises(DeployError, b.installer.snapshot, "hello", "m3")
    assert "has no operator signature on this board" in why, why
    assert b.sup.agents["hello"].state == "running"
    b.close()


def test_restore_refuses_a_snapshot_taken_for_another_job(bundle):
    src, dst = Board(bundle), Board(bundle)
    src.installer.install(bundle("example_hello.mfs"))
    raw = _snapshot(src, "hello", "m4")
    src.close()
    why = raises(DeployError, dst.installer.restore, raw, "m5")
    assert "snapshot was taken for job 'm4', not this job 'm5' (swapped)" in why, why
    assert "hello" not in dst.sup.agents
    dst.close()


def test_restore_refuses_a_snapshot_whose_manifest_was_escalated(bundle):
    # A tampered source board hands its agent more host functions, tools and an A2A peer.
    from microfang.firmware import cbor

    src, dst = Board(bundle), Board(bundle)
    src.installer.install(bundle("example_hello.mfs"))
    doc = cbor.loads(_snapshot(src, "hello", "m6"))
    src.close()
    doc["bundle"] = bundle("example_hello.escalated.mfa")
    why = raises(BundleError, dst.installer.restore, cbor.dumps(doc), "m6")
    assert "snapshot's bundle does not match its signed sha256 (tampered)" in why, why
    assert "hello" not in dst.sup.agents and dst.flash.listdir("/agents") == []
    dst.close()


def test_an_installed_agent_lets_go_of_its_wasm_and_reads_it_again_from_flash_to_restart(bundle):
    # On a 110 KB heap each agent's module bytes would stay in RAM beside its compiled code;
    # an installed agent's bundle lies on flash, so the board keeps only the code.
    b = Board(bundle)
    b.installer.install(bundle("trap_later.mfs"))
    agent = b.sup.agents["later"]
    assert agent.wasm is None and agent.source == "/agents/later.mfa", (agent.wasm, agent.source)
    b.run(1000)  # each timer event traps; each restart reads the wasm from flash and logs "hi"
    assert b.sup.stats("later")["restarts"] >= 2 and b.sup.stats("later")["state"] != "failed", b.seen
    assert b.logs("later").count("hi") >= 3, b.seen
    b.close()


def allocated_by(action):
    gc.collect()
    before = gc.mem_alloc()
    action()
    gc.collect()
    return gc.mem_alloc() - before


def test_an_installed_agents_module_bytes_are_freed_once_it_is_compiled(bundle):
    # Its 6 KB of wasm leave RAM: only the engine's code stays. wasm3 kept a pointer to the
    # bytes' first byte (module->wasmStart), and MicroPython's collector, which scans the
    # engine's blocks, kept all of them (patches/0022). Compared with the same agent spawned
    # from bytes the board holds: without the patch the installed one took the wasm's size more.
    if port.heap_free() is None:
        return  # CPython: the simulator's memory is the host's (the bytes go by reference count)
    b = Board(bundle)
    b.installer.install(bundle("hello.mfs"))  # what the first install sets up once is not counted
    signed = bundle("big_wasm.mfs")
    installed = allocated_by(lambda: b.installer.install(signed))
    b.sup.reclaim("big")
    manifest, wasm = bundles.read_file(b.flash, "/agents/big.mfa")
    held = allocated_by(lambda: b.sup.spawn(manifest=manifest, wasm=wasm))  # the bytes are counted before
    assert len(wasm) > 6000 and installed < held + len(wasm) // 2, (installed, held, len(wasm))
    b.close()


def test_an_agent_whose_bundle_left_the_flash_fails_its_restart_with_the_reason(bundle):
    b = Board(bundle)
    b.installer.install(bundle("trap_later.mfs"))
    b.installer.install(bundle("hello.mfs"))
    b.flash.remove("/agents/later.mfa")
    b.run(500)  # the trap, then a restart with nothing to read
    faults = [t for a, k, t in b.seen if a == "later" and k == "fault"]
    assert any("its bundle /agents/later.mfa cannot be read again" in f for f in faults), faults
    assert b.sup.stats("later")["state"] == "failed"
    assert b.sup.agents["a1"].state == "running"  # the board runs on
    b.close()
