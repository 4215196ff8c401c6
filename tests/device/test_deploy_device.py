# Deploy and migration specifications that must hold on a board: run under MicroPython with an
# ESP32 heap and under CPython (tests/test_device_runtimes.py). Plain asserts only.
import hashlib
import os
from binascii import hexlify

from microfang.firmware import bundle as bundles
from microfang.firmware import protocol
from microfang.firmware.blockdev import FileBlockDevice
from microfang.firmware.deploy import DeployError, Installer
from microfang.firmware.errors import BundleError
from microfang.firmware.port import Flash
from microfang.firmware.supervisor import Supervisor
from test_supervisor_device import raises

KEY = b"fleet-signing-key-0123456789abcd"
OTHER_KEY = b"someone-elses-key-0123456789abcd"

_mounts = [0]


class Board:
    """A supervisor with its own flash and an installer: what deploy.py runs against. The flash
    is a file, not RAM: two boards' flash would not fit beside their agents in one ESP32 heap."""

    def __init__(self):
        _mounts[0] += 1
        self.now = [0]
        self.seen = []
        self.image = "/tmp/mf_deploy_%s.img" % hexlify(os.urandom(6)).decode()
        self.device = FileBlockDevice(self.image, 512, 64)
        self.flash = Flash(self.device, "/mf_d%d" % _mounts[0])
        self.sup = Supervisor(report=lambda a, k, t: self.seen.append((a, k, t)), clock=lambda: self.now[0],
                              flash=self.flash)
        self.installer = Installer(self.flash, self.sup, KEY)

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
    b = Board()
    assert b.installer.install(bundles.sign(bundle("hello"), KEY)) == ("a1", 1)
    assert b.sup.agents["a1"].state == "running"
    assert b.logs("a1") == ["hi"]  # its start event ran during the install
    assert b.installer.installed_version("a1") == 1
    b.close()


def test_forged_signature_is_refused_and_the_running_agent_keeps_running(bundle):
    b = Board()
    b.installer.install(bundles.sign(bundle("hello"), KEY))
    why = raises(BundleError, b.installer.install, bundles.sign(bundle("hello_v2"), OTHER_KEY))
    assert "signature" in why, why
    assert b.sup.agents["a1"].state == "running"
    assert b.installer.installed_version("a1") == 1
    b.close()


def test_unsigned_bundle_is_refused(bundle):
    b = Board()
    assert "not a signed bundle" in raises(BundleError, b.installer.install, bundle("hello"))
    b.close()


def test_older_or_same_version_is_refused_as_a_rollback(bundle):
    b = Board()
    b.installer.install(bundles.sign(bundle("hello_v2"), KEY))
    why = raises(DeployError, b.installer.install, bundles.sign(bundle("hello"), KEY))
    assert "version 1 is not newer than the installed version 2" in why, why
    raises(DeployError, b.installer.install, bundles.sign(bundle("hello_v2"), KEY))
    assert b.sup.agents["a1"].manifest["version"] == 2
    b.close()


def test_newer_version_replaces_the_running_one(bundle):
    b = Board()
    b.installer.install(bundles.sign(bundle("hello"), KEY))
    assert b.installer.install(bundles.sign(bundle("hello_v2"), KEY)) == ("a1", 2)
    assert b.sup.agents["a1"].manifest["version"] == 2
    assert b.flash.listdir("/agents") == ["a1.mfa"]
    b.close()


def test_version_that_traps_on_start_is_rolled_back(bundle):
    b = Board()
    b.installer.install(bundles.sign(bundle("hello"), KEY))
    why = raises(DeployError, b.installer.install, bundles.sign(bundle("trap_v3"), KEY))
    assert "did not start" in why and "version 1 runs again" in why, why
    assert b.sup.agents["a1"].state == "running"
    assert b.installer.installed_version("a1") == 1
    b.close()


def test_interrupted_swap_falls_back_to_the_previous_version_at_boot(bundle):
    b = Board()
    b.installer.install(bundles.sign(bundle("hello"), KEY))
    # A power cut after the swap, before the new version was confirmed running:
    b.flash.rename("/agents/a1.mfa", "/agents/a1.mfa.prev")
    with b.flash.open("/agents/a1.mfa", "wb") as f:
        f.write(bundle("hello_v2"))
    b.installer.recover()
    assert b.flash.listdir("/agents") == ["a1.mfa"]
    assert b.installer.installed_version("a1") == 1
    b.close()


def test_chunked_transfer_resumes_where_the_board_stopped(bundle):
    b = Board()
    data = bundles.sign(bundle("hello_v2"), KEY)
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


def test_a_put_of_an_installed_transfer_again_gets_the_same_answer(bundle):
    # A gateway that takes a job over from one that died before the board's answer reached it
    # asks again: the board answers what it did, not "not newer than the installed version".
    b = Board()
    data = bundles.sign(bundle("hello"), KEY)
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
    b = Board()
    data = bundles.sign(bundle("hello"), KEY)
    digest = hashlib.sha256(data).digest()
    b.installer.begin("old", len(data), digest, "a1")
    b.installer.chunk("old", 0, data[:100])
    b.installer.begin("other", len(data), digest, "b2")
    b.installer.begin("new", len(data), digest, "a1")
    assert b.flash.listdir("/stage") == ["new.meta", "new.part", "other.meta", "other.part"]
    b.close()


def test_damaged_transfer_is_refused(bundle):
    b = Board()
    data = bundles.sign(bundle("hello"), KEY)
    b.installer.begin("x2", len(data), hashlib.sha256(data).digest())
    b.installer.chunk("x2", 0, data[:-1] + b"\x00")
    assert "sha256 does not match" in raises(DeployError, b.installer.finish, "x2")
    b.close()


def test_transfer_larger_than_the_free_flash_is_refused(bundle):
    b = Board()
    assert "flash is full" in raises(DeployError, b.installer.begin, "x3", 60000, b"\x00" * 32)
    b.close()


def test_migration_keeps_the_counter_in_linear_memory(bundle):
    src, dst = Board(), Board()
    src.installer.install(bundles.sign(bundle("example_hello"), KEY))
    src.run(650)  # three timer ticks of 200 ms
    assert src.logs("hello")[-1] == "tick 3"
    size, digest = src.installer.snapshot("hello")
    assert src.sup.agents["hello"].state == "suspended"
    raw = b""
    while len(raw) < size:
        raw += src.installer.read_snapshot("hello", len(raw), 2048)
    assert hashlib.sha256(raw).digest() == digest
    src.installer.remove("hello")
    assert "hello" not in src.sup.agents and src.flash.listdir("/agents") == []
    src.close()
    assert dst.installer.restore(raw) == ("hello", 1)
    dst.run(250)
    assert dst.logs("hello") == ["tick 4"]  # no second hello: it continued, it did not start over
    dst.close()


def test_migration_moves_the_memory_log_with_its_sequence_numbers(bundle):
    src, dst = Board(), Board()
    for _ in range(3):  # three boots: records 1, 2, 3
        src.sup.spawn(bundle("example_bootcount"))
        src.sup.start_now("bootcount")
        src.sup.reclaim("bootcount")
    src.sup.spawn(bundle("example_bootcount"))
    src.sup.start_now("bootcount")
    src.sup.log("bootcount").ack(2)
    src.installer.snapshot("bootcount")
    with src.flash.open("/snap/bootcount.cbor", "rb") as f:
        raw = f.read()
    src.close()
    dst.installer.restore(raw)
    log = dst.sup.log("bootcount")
    assert [s for s, _ in log.records()] == [1, 2, 3, 4]
    assert log.acked == 2
    dst.sup.reclaim("bootcount")
    dst.sup.spawn(bundle("example_bootcount"))
    dst.sup.start_now("bootcount")
    assert dst.logs("bootcount")[-1] == "boot 5"
    dst.close()
