"""Only the operator's code runs (issue 17): the keyring on the operator's host, and what a key
taken from a board can (not) do against a real gateway on a real Mosquitto. The board-side
checks of each signature, rotation, supersede and snapshot case are in
tests/device/test_deploy_device.py (both runtimes)."""

import asyncio
import hashlib
import json

import cbor2
import pytest
from boards_runtime import RUNTIMES, RunningBoard
from esp_images import firmware_bin
from fleet import make_board, wait_until
from helpers import HELLO_WAT, agent_wat, build_bundle
from littlefs import LittleFS
from signing_keys import OPERATOR, board_trust, escalated, hmac_signed
from test_deploy import EXAMPLES

from microfang.boards import BOARD_DEFS
from microfang.cli import main
from microfang.deploy import queue_deploy, queue_migrate, wait
from microfang.firmware import bundle, cbor
from microfang.firmware.errors import MicrofangError
from microfang.gateway import Gateway
from microfang.gateway.jobs import JobsFailed
from microfang.provision import BLOCK
from microfang.signing import Keyring
from microfang.tools.build import build

# ---- the keyring -----------------------------------------------------------------------


def keys(*args):
    return main(["keys", *args])


def test_keys_generate_writes_a_keyring_only_its_owner_can_read(tmp_path):
    path = tmp_path / "op.keys"
    assert keys("generate", "--signing-keys", str(path)) == 0
    assert path.stat().st_mode & 0o777 == 0o600
    assert keys("generate", "--signing-keys", str(path)) == 1  # never overwritten


def test_keys_list_shows_key_ids_and_never_a_private_key(tmp_path, capsys):
    path = tmp_path / "op.keys"
    keys("generate", "--signing-keys", str(path))
    private = json.loads(path.read_text())["keys"][0]["private"]
    capsys.readouterr()
    assert keys("list", "--signing", "--signing-keys", str(path), "--json") == 0
    out = capsys.readouterr().out
    [row] = json.loads(out)["keys"]
    assert row["state"] == "signing" and len(row["id"]) == 16
    assert private not in out and "private" not in out


def test_a_keyring_others_can_read_is_refused(tmp_path, capsys):
    path = tmp_path / "op.keys"
    keys("generate", "--signing-keys", str(path))
    path.chmod(0o644)
    assert keys("list", "--signing", "--signing-keys", str(path)) == 1
    assert "signing keys readable by others (mode 644): chmod 600" in capsys.readouterr().err


def test_rotate_keeps_the_old_key_signing_until_it_is_revoked(tmp_path, capsys):
    path = tmp_path / "op.keys"
    keys("generate", "--signing-keys", str(path))
    keys("rotate", "--signing-keys", str(path))
    capsys.readouterr()
    keys("list", "--signing", "--signing-keys", str(path), "--json")
    rotated = json.loads(capsys.readouterr().out)
    assert [k["state"] for k in rotated["keys"]] == ["signing", "trusted"] and rotated["serial"] == 2
    old = rotated["keys"][0]["id"]
    assert keys("revoke", old, "--signing-keys", str(path)) == 0
    saved = json.loads(path.read_text())
    assert [k["state"] for k in saved["keys"]] == ["revoked", "trusted"] and saved["serial"] == 3
    assert "private" not in saved["keys"][0]  # erased: nothing left to steal


def test_the_only_trusted_key_cannot_be_revoked(tmp_path, capsys):
    path = tmp_path / "op.keys"
    keys("generate", "--signing-keys", str(path))
    only = json.loads(path.read_text())["keys"][0]["id"]
    assert keys("revoke", only, "--signing-keys", str(path)) == 1
    assert "the only trusted key; `microfang keys rotate` first" in capsys.readouterr().err


def test_deploy_refuses_an_old_hmac_signed_bundle_with_the_way_to_re_sign_it(tmp_path):
    old = tmp_path / "old.mfs"
    old.write_bytes(hmac_signed(build_bundle(HELLO_WAT), b"f" * 32))
    with pytest.raises(MicrofangError, match=r"old.mfs: bundle signed with the old fleet HMAC key \(mfs/1\).*"
                                             r"sign its .mfa again"):
        queue_deploy(tmp_path / "gw.db", old, ["d1"])


def test_deploy_refuses_a_bundle_signed_by_a_revoked_key(tmp_path):
    path = tmp_path / "op.keys"
    Keyring.of([b"\x07" * 32, b"\x08" * 32], serial=2, path=path).save()
    early = tmp_path / "early.mfs"
    early.write_bytes(Keyring.of([b"\x07" * 32]).sign(build_bundle(HELLO_WAT)))  # signed before the revocation
    keys("revoke", bundle.key_name(bundle.key_id(Keyring.of([b"\x07" * 32]).public_keys()[0])), "--signing-keys",
         str(path))
    with pytest.raises(MicrofangError, match="early.mfs: bundle signed by unknown key"):
        queue_deploy(tmp_path / "gw.db", early, ["d1"], keys=path)


# ---- a stolen board against the fleet ----------------------------------------------------

SMALL = {"sandbox.memory.max_heap_kb": 8, "sandbox.memory.stack_size_kb": 2}  # fits a board at the ESP32 heap


def image_config(image: bytes, board: str = "esp32") -> dict:
    """/config.cbor of a merged flash image, read as an attacker with the file would."""
    part = BOARD_DEFS[board].data_partition()
    fs = LittleFS(block_size=BLOCK, block_count=part.size // BLOCK, mount=False)
    fs.context.buffer = bytearray(image[part.offset:part.offset + part.size])
    fs.mount()
    with fs.open("/config.cbor", "rb") as f:
        return cbor2.loads(f.read())


def forgeries(config: dict, data: bytes) -> dict[str, bytes]:
    """Everything one can sign with the secrets of a board's flash image: each 32-byte value in
    it (its HMAC key, the operator's public keys) as an HMAC key or as an Ed25519 private key,
    under its own key id or under the operator's."""
    secrets = [config["key"], *config["sign_keys"]]
    out = {}
    for n, secret in enumerate(secrets):
        stolen = Keyring.of([bytes(secret)])
        real, fake = OPERATOR.proof(data), stolen.proof(data)
        out[f"hmac{n}"] = hmac_signed(data, bytes(secret))
        out[f"ed25519_{n}"] = stolen.sign(data)
        out[f"supersede{n}"] = stolen.sign(data, supersedes=1)
        out[f"operator_id{n}"] = bundle.wrap(data, dict(fake, key_id=real["key_id"]))
    return out


async def board_online(gw, name, port):
    """A board of fleet "test" trusting the operator's key, running and online at `gw`:
    (board, its reports, its task)."""
    board, rec = make_board(name, gw.add_device(name, fleet="test"), port)
    run = asyncio.create_task(board.run(30000))
    await wait_until(lambda: gw.devices[name].get("online"))
    return board, rec, run


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_keys_from_a_boards_flash_image_sign_nothing_another_board_accepts(runtime, mosquitto, tmp_path, micropython):
    db = tmp_path / "gw.db"
    firmware, image = tmp_path / "fw.bin", tmp_path / "kitchen.bin"
    firmware.write_bytes(firmware_bin("esp32"))
    assert main(["flash", "--board", "esp32", "--device", "kitchen", "--fleet", "test", "--broker",
                 f"mqtt://127.0.0.1:{mosquitto.port}", "--firmware", str(firmware), "--db", str(db),
                 "--out", str(image)]) == 0
    config = image_config(image.read_bytes())
    assert "sign_key" not in config and config["sign_keys"] == OPERATOR.public_keys()  # public keys only
    v1, v2 = tmp_path / "v1.mfa", tmp_path / "v2.mfa"
    v1.write_bytes(build_bundle(HELLO_WAT, **SMALL))
    v2.write_bytes(build_bundle(HELLO_WAT, **SMALL, **{"agent.version": 2}))
    attacks = forgeries(config, build_bundle(HELLO_WAT, **SMALL, **{"agent.version": 99}))
    for name, data in attacks.items():
        (tmp_path / f"{name}.mfs").write_bytes(data)

    async def scenario():
        async with Gateway(broker=f"mqtt://127.0.0.1:{mosquitto.port}", db=db, quiet=True) as gw:
            # Another board of the fleet: CPython, or MicroPython at the ESP32 heap from a flash image.
            hall = await RunningBoard(runtime, {"device": "hall", "fleet": "test", "key": gw.add_device("hall", "test"),
                                                "host": "127.0.0.1", "port": mosquitto.port, **board_trust(),
                                                "telemetry_ms": 1000}, tmp_path, [], micropython).start()
            try:
                assert await wait_until(lambda: gw.devices["hall"].get("online"), 30), hall.lines()
                first = await asyncio.to_thread(wait, db, queue_deploy(db, v1, ["hall"]), 60)
                refused_here = {}
                for name in attacks:  # `microfang deploy` refuses each...
                    with pytest.raises(MicrofangError) as e:
                        queue_deploy(db, tmp_path / f"{name}.mfs", ["hall"])
                    refused_here[name] = str(e.value)
                # ...and so does the board, when the attacker queues them in the gateway's store.
                answers = []
                for data in attacks.values():  # one at a time: a board keeps one transfer per agent
                    with pytest.raises(JobsFailed) as failed:
                        await asyncio.to_thread(wait, db, [gw.store.add_job("deploy", "hall", "a1", data, version=99)],
                                                60)
                    answers += failed.value.jobs
                # The operator's v2 installs: no forged v99 is there to block it by rollback protection.
                fixed = await asyncio.to_thread(wait, db, queue_deploy(db, v2, ["hall"]), 60)
            finally:
                lines = await hall.stop()
            return first, refused_here, answers, fixed, lines

    first, refused_here, board_answers, fixed, lines = asyncio.run(scenario())
    assert first[0]["detail"] == "version 1 running", lines
    reasons = ("bundle signed by unknown key", "signature does not verify", "old fleet HMAC key")
    assert all(any(r in why for r in reasons) for why in refused_here.values()), refused_here
    assert [j["state"] for j in board_answers] == ["failed"] * len(attacks) == ["failed"] * 8
    assert all(any(r in j["detail"] for r in reasons) for j in board_answers), [j["detail"] for j in board_answers]
    assert fixed[0]["state"] == "done" and fixed[0]["detail"] == "version 2 running", fixed


def test_the_operator_supersedes_a_bad_version_over_the_air(mosquitto, tmp_path):
    db = tmp_path / "gw.db"
    bad, fix = tmp_path / "v99.mfa", tmp_path / "v2.mfa"
    bad.write_bytes(build_bundle(HELLO_WAT, **{"agent.version": 99}))
    fix.write_bytes(build_bundle(HELLO_WAT, **{"agent.version": 2}))

    async def scenario():
        async with Gateway(broker=f"mqtt://127.0.0.1:{mosquitto.port}", db=db, quiet=True) as gw:
            board, _, run = await board_online(gw, "d1", mosquitto.port)
            await asyncio.to_thread(wait, db, queue_deploy(db, bad, ["d1"]), 30)
            with pytest.raises(JobsFailed) as locked:
                await asyncio.to_thread(wait, db, queue_deploy(db, fix, ["d1"]), 30)
            fixed = await asyncio.to_thread(wait, db, queue_deploy(db, fix, ["d1"], supersedes=99), 30)
            with pytest.raises(JobsFailed) as again:
                await asyncio.to_thread(wait, db, queue_deploy(db, bad, ["d1"]), 30)
            board.stop()
            await run
            return locked.value.jobs[0], fixed[0], again.value.jobs[0], board.supervisor.agents["a1"].manifest["version"]

    locked, fixed, again, final = asyncio.run(scenario())
    assert "not newer than the installed version 99" in locked["detail"], locked
    assert fixed["state"] == "done" and final == 2
    assert "version 99 was withdrawn by the operator" in again["detail"], again


def escalate(doc: dict) -> None:
    doc["bundle"] = escalated(doc["bundle"])  # more host functions, tools, an A2A peer


def swap_job(doc: dict) -> None:
    doc["job"] = "m999"  # the memory and log records of another migration


@pytest.mark.parametrize(("tamper", "refusal"), [
    (escalate, "its manifest differs from the one registered for hello on m1 (permissions)"),
    (swap_job, "it was taken for job 'm999' and agent 'hello', not m"),
], ids=["escalated-manifest", "another-jobs-snapshot"])
def test_a_tampered_source_boards_snapshot_is_refused_and_audited(tamper, refusal, mosquitto, tmp_path):
    hello, _ = build(EXAMPLES / "hello" / "agent.toml", tmp_path / "hello.mfa")
    db = tmp_path / "gw.db"

    async def scenario():
        async with Gateway(broker=f"mqtt://127.0.0.1:{mosquitto.port}", db=db, quiet=True) as gw:
            (src, rec, run_src), (dst, _, run_dst) = [await board_online(gw, n, mosquitto.port) for n in ("m1", "m2")]
            await asyncio.to_thread(wait, db, queue_deploy(db, hello, ["m1"]), 30)
            registered = gw.store.manifest("m1", "hello")
            real = src.link.installer.snapshot

            def tampered(agent_id, job=""):
                # The source board's own code, changed.
                real(agent_id, job)
                path = f"/snap/{agent_id}.cbor"
                with src.link.installer.flash.open(path, "rb") as f:
                    doc = cbor.loads(f.read())
                tamper(doc)
                raw = cbor.dumps(doc)
                with src.link.installer.flash.open(path, "wb") as f:
                    f.write(raw)
                return len(raw), hashlib.sha256(raw).digest()

            src.link.installer.snapshot = tampered
            with pytest.raises(JobsFailed) as failed:
                await asyncio.to_thread(wait, db, queue_migrate(db, "hello", "m1", "m2"), 30)
            ticks = len(rec.texts("hello", "log"))
            await wait_until(lambda: len(rec.texts("hello", "log")) > ticks)  # it runs on at the source
            audit = gw.store.audit_records(50, "m1")
            result = (failed.value.jobs[0], audit, "hello" in dst.supervisor.agents, gw.store.manifest("m2", "hello"),
                      gw.store.manifest("m1", "hello") == registered, src.supervisor.agents["hello"].state)
            for b in (src, dst):
                b.stop()
            await asyncio.gather(run_src, run_dst)
            return result

    job, audit, on_target, target_manifest, source_manifest_kept, state = asyncio.run(scenario())
    assert refusal in job["detail"], job
    assert any(r["action"] == "migration failed" and refusal in r["detail"] for r in audit), audit
    assert not on_target and target_manifest is None and source_manifest_kept and state == "running"


def test_a_signed_4_kb_agent_installs_over_the_air_on_a_micropython_board_at_the_esp32_heap(
        mosquitto, tmp_path, micropython):
    # The signature check's small blocks (head, proof) must not be alive while the wasm and the
    # spawn take theirs: left in the heap they cut it so that wasm3's stack found no block with
    # 72 KB free ("does not fit ... (runtime: wasm3 stack)"; bench_deploy, first run of mfs/2).
    wat = agent_wat(f"""(data (i32.const 64) "{'x' * 3400}")
      (func (export "mf_on_event") (param i32 i32 i32) (result i32) (i32.const 0))""")
    path = tmp_path / "payload.mfa"
    path.write_bytes(build_bundle(wat, **{"sandbox.agent_id": "payload", "sandbox.memory.max_heap_kb": 5}))
    db = tmp_path / "gw.db"

    async def scenario():
        async with Gateway(broker=f"mqtt://127.0.0.1:{mosquitto.port}", db=db, quiet=True) as gw:
            board = await RunningBoard("micropython", {"device": "mp1", "fleet": "test", "key": gw.add_device("mp1", "test"),
                                                       "host": "127.0.0.1", "port": mosquitto.port, **board_trust()},
                                       tmp_path, [], micropython).start()
            try:
                assert await wait_until(lambda: gw.devices["mp1"].get("online"), 30), board.lines()
                try:
                    return await asyncio.to_thread(wait, db, queue_deploy(db, path, ["mp1"]), 60)
                except JobsFailed as e:
                    return e.jobs
            finally:
                await board.stop()

    jobs = asyncio.run(scenario())
    assert 4000 < len(path.read_bytes()) < 4400
    assert jobs[0]["state"] == "done", jobs[0]["detail"]
