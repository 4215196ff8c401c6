"""Deploys over the air and migrations: the CLI's library queues jobs, a gateway on a real
Mosquitto carries them out, boards running the real firmware install, refuse or move agents."""

import asyncio
from pathlib import Path

import pytest
from fleet import make_board, wait_until
from helpers import HELLO_WAT, build_bundle

from signing_keys import STRANGER, board_trust

from microfang.deploy import queue_deploy, queue_migrate, wait
from microfang.firmware.errors import MicrofangError
from microfang.gateway import Gateway

EXAMPLES = Path(__file__).resolve().parent.parent / "tools" / "sdk" / "examples"


def versions(board, agent="a1"):
    a = board.supervisor.agents.get(agent)
    return None if a is None else (a.manifest["version"], a.state)


@pytest.fixture
def hello_versions(tmp_path):
    paths = {}
    for v in (1, 2):
        paths[v] = tmp_path / f"hello_v{v}.mfa"
        paths[v].write_bytes(build_bundle(HELLO_WAT, **{"agent.version": v}))
    return paths


async def fleet_of(gw, port, names, fleet="test"):
    boards = []
    for name in names:
        key = gw.add_device(name, fleet=fleet)
        board, rec = make_board(name, key, port)
        boards.append((board, rec))
    return boards


def test_fleet_ota_installs_on_three_boards_and_refuses_forged_and_older_bundles(mosquitto, tmp_path,
                                                                                  hello_versions):
    db = tmp_path / "gw.db"

    async def scenario():
        async with Gateway(broker=f"mqtt://127.0.0.1:{mosquitto.port}", db=db, quiet=True) as gw:
            boards = await fleet_of(gw, mosquitto.port, ["d1", "d2", "d3"])
            for board, _ in boards:
                board.spawn(hello_versions[1].read_bytes())
            runs = [asyncio.create_task(board.run(20000)) for board, _ in boards]
            await wait_until(lambda: all(gw.devices[d].get("online") for d in ("d1", "d2", "d3")))

            jobs = await asyncio.to_thread(wait, db, queue_deploy(db, hello_versions[2], fleet="test"), 30)
            after_v2 = [versions(b) for b, _ in boards]

            forged = tmp_path / "forged.mfs"
            forged.write_bytes(STRANGER.sign(build_bundle(HELLO_WAT, **{"agent.version": 3})))
            with pytest.raises(MicrofangError, match="forged.mfs: bundle signed by unknown key"):
                queue_deploy(db, forged, ["d1"])  # the CLI checks before it queues...
            # ...and the board checks again: a forged bundle that reaches the gateway anyway.
            forged_job = gw.store.add_job("deploy", "d1", "a1", forged.read_bytes(), version=3)
            with pytest.raises(MicrofangError, match="1 of 1 deploy jobs did not succeed"):
                await asyncio.to_thread(wait, db, [forged_job], 30)
            with pytest.raises(MicrofangError, match="3 of 3 deploy jobs"):
                await asyncio.to_thread(wait, db, queue_deploy(db, hello_versions[1], fleet="test"), 30)
            final = [versions(b) for b, _ in boards]
            for board, _ in boards:
                board.stop()
            await asyncio.gather(*runs)
            return jobs, after_v2, final, gw.store.jobs()

    jobs, after_v2, final, all_jobs = asyncio.run(scenario())
    assert [j["state"] for j in jobs] == ["done"] * 3
    assert after_v2 == [(2, "running")] * 3
    forged_job, *older_jobs = all_jobs[3:]
    assert "bundle signed by unknown key" in forged_job["detail"], forged_job
    assert all("version 1 is not newer than the installed version 2" in j["detail"] for j in older_jobs), older_jobs
    assert final == [(2, "running")] * 3  # what ran before each refusal runs on


def test_deploy_to_an_unknown_device_is_a_one_line_error(tmp_path, hello_versions):
    from microfang.gateway.store import Store

    Store(tmp_path / "gw.db").close()
    with pytest.raises(MicrofangError, match="unknown device 'ghost'"):
        queue_deploy(tmp_path / "gw.db", hello_versions[1], ["ghost"])


def test_deploy_of_a_malformed_bundle_is_refused_before_queueing(tmp_path):
    from microfang.gateway.store import Store

    store = Store(tmp_path / "gw.db")
    store.add_device("d1", "test")
    store.close()
    bad = tmp_path / "bad.mfa"
    bad.write_bytes(b"\xa1\x61x\x01")
    with pytest.raises(MicrofangError, match="bad.mfa: not a bundle"):
        queue_deploy(tmp_path / "gw.db", bad, ["d1"])


def test_migration_moves_a_counting_agent_between_two_boards(mosquitto, tmp_path):
    from microfang.tools.build import build

    hello, _ = build(EXAMPLES / "hello" / "agent.toml", tmp_path / "hello.mfa")
    db = tmp_path / "gw.db"

    async def scenario():
        async with Gateway(broker=f"mqtt://127.0.0.1:{mosquitto.port}", db=db, quiet=True) as gw:
            (b1, r1), (b2, r2) = await fleet_of(gw, mosquitto.port, ["m1", "m2"])
            runs = [asyncio.create_task(b.run(20000)) for b in (b1, b2)]
            await wait_until(lambda: gw.devices["m1"].get("online"))
            await asyncio.to_thread(wait, db, queue_deploy(db, hello, ["m1"]), 30)  # signed by the operator
            await wait_until(lambda: len(r1.texts("hello", "log")) >= 5)
            jobs = await asyncio.to_thread(wait, db, queue_migrate(db, "hello", "m1", "m2"), 30)
            await wait_until(lambda: len(r2.texts("hello", "log")) >= 3)
            on_b1 = "hello" in b1.supervisor.agents
            for b in (b1, b2):
                b.stop()
            await asyncio.gather(*runs)
            registered = gw.store.manifest("m2", "hello"), gw.store.manifest("m1", "hello")
            return jobs, r1.texts("hello", "log"), r2.texts("hello", "log"), on_b1, registered

    jobs, before, after, on_b1, (on_m2, on_m1) = asyncio.run(scenario())
    assert jobs[0]["state"] == "done", jobs
    assert on_m2 is not None and on_m2["permissions"]["allowed"] == ["log"] and on_m1 is None
    last = int(before[-1].split()[-1])
    assert after[0] == f"tick {last + 1}", (before[-3:], after[:3])  # the counter went on, nothing restarted
    assert not on_b1


def test_migration_between_a_cpython_board_and_a_micropython_process_both_ways(mosquitto, tmp_path):
    """The agent goes to a MicroPython board (ESP32 heap, booting from a flash image) and back;
    its timer counter goes on across both moves."""
    from microfang.boards import PROFILES
    from microfang.provision import write_image
    from microfang.tools import portbuild
    from microfang.tools.build import build

    micropython = portbuild.build_unix(lambda line: None)
    hello, _ = build(EXAMPLES / "hello" / "agent.toml", tmp_path / "hello.mfa")
    db = tmp_path / "gw.db"

    async def scenario():
        async with Gateway(broker=f"mqtt://127.0.0.1:{mosquitto.port}", db=db, quiet=True) as gw:
            [(c1, rec)] = await fleet_of(gw, mosquitto.port, ["c1"])
            key = gw.add_device("mp1", fleet="test")
            write_image(tmp_path / "mp1.img", {"device": "mp1", "fleet": "test", "key": key, "host": "127.0.0.1",
                                               "port": mosquitto.port, **board_trust()}, [])
            proc = await asyncio.create_subprocess_exec(
                str(micropython), "-X", PROFILES["esp32"].heapsize_arg(), "-m", "microfang.firmware.main",
                str(tmp_path / "mp1.img"), "30", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
            mp_lines = []

            async def read_mp():
                async for line in proc.stdout:
                    mp_lines.append(line.decode().strip())

            reader = asyncio.create_task(read_mp())
            run = asyncio.create_task(c1.run(40000))
            assert await wait_until(lambda: gw.devices["c1"].get("online"))
            await asyncio.to_thread(wait, db, queue_deploy(db, hello, ["c1"]), 30)
            assert await wait_until(lambda: gw.devices["mp1"].get("online") and len(rec.texts("hello", "log")) >= 3)
            there = await asyncio.to_thread(wait, db, queue_migrate(db, "hello", "c1", "mp1"), 30)
            ticks = lambda: [ln for ln in mp_lines if ln.startswith("[hello] log tick")]  # noqa: E731
            assert await wait_until(lambda: len(ticks()) >= 3), mp_lines
            before_back = len(rec.texts("hello", "log"))
            back = await asyncio.to_thread(wait, db, queue_migrate(db, "hello", "mp1", "c1"), 30)
            assert await wait_until(lambda: len(rec.texts("hello", "log")) >= before_back + 2)
            c1.stop()
            await run
            proc.terminate()
            await proc.wait()
            reader.cancel()
            return there, back, rec.texts("hello", "log"), ticks(), mp_lines

    there, back, c1_logs, mp_ticks, mp_lines = asyncio.run(scenario())
    assert there[0]["state"] == "done" and back[0]["state"] == "done"
    counts = [int(t.split()[-1]) for t in c1_logs[1:]]  # after "hello from a wasm agent"
    mp_counts = [int(t.split()[-1]) for t in mp_ticks]
    first_leg = counts[:counts.index(mp_counts[0] - 1) + 1]
    assert mp_counts[0] == first_leg[-1] + 1, (counts, mp_counts)
    assert counts[len(first_leg)] == mp_counts[-1] + 1, (counts, mp_counts)
    assert c1_logs.count("hello from a wasm agent") == 1
    assert not any("hello from a wasm agent" in ln for ln in mp_lines)


def test_usb_deploy_with_mpremote_to_a_live_micropython_board(tmp_path, capsys):
    """The firmware runs on microfang's MicroPython behind a pty served on 127.0.0.1 (the test
    double for a USB serial cable); `microfang deploy --port socket://...` drives it with mpremote."""
    import socket as sockets

    from brokers import free_port
    from serial_bridge import SerialBridge

    from microfang.boards import PROFILES
    from microfang.cli import main
    from microfang.gateway.store import Store
    from microfang.provision import write_image
    from microfang.tools import portbuild
    from microfang.tools.build import build

    micropython = portbuild.build_unix(lambda line: None)
    db = tmp_path / "gw.db"
    store = Store(db)
    key = store.add_device("usb1", "test")
    store.close()
    hello, _ = build(EXAMPLES / "hello" / "agent.toml", tmp_path / "hello.mfa")
    echo, _ = build(EXAMPLES / "echo" / "agent.toml", tmp_path / "echo.mfa")
    dead_port = free_port()  # no broker: the board keeps running its agents offline
    write_image(tmp_path / "usb1.img", {"device": "usb1", "fleet": "test", "key": key, **board_trust(),
                                        "host": "127.0.0.1", "port": dead_port}, [hello.read_bytes()])
    port = free_port()
    boot = f"from microfang.firmware import main; main.boot(main.open_flash({str(tmp_path / 'usb1.img')!r}))"
    bridge = SerialBridge([str(micropython), "-X", PROFILES["esp32"].heapsize_arg(), "-i", "-c", boot], port)
    try:
        deadline = 50
        while b"tick 2" not in bridge.output and deadline:
            __import__("time").sleep(0.1)
            deadline -= 1
        url = f"socket://127.0.0.1:{port}"
        assert main(["deploy", str(echo), "--port", url, "--db", str(db)]) == 0, capsys.readouterr().err
        installed = capsys.readouterr().out
        assert main(["deploy", str(echo), "--port", url, "--db", str(db)]) == 1  # the same version again
        refused = capsys.readouterr().err
        with sockets.create_connection(("127.0.0.1", port)) as s:  # the board runs on: hello ticks, echo is there
            s.settimeout(3)
            seen = b""
            while b"tick" not in seen.split(b"stopped by Ctrl-C")[-1]:
                seen += s.recv(4096)
    finally:
        bridge.close()
    assert "usb1: echo version 1 running" in installed, installed
    assert "refused: agent echo version 1 is not newer than the installed version 1" in refused, refused


def test_replayed_deploy_commands_are_dropped_by_the_board(mosquitto, tmp_path, hello_versions):
    """Someone records the gateway's deploy messages and plays them back later: the board's
    replay window drops every one, and what runs stays as it is."""
    import paho.mqtt.client as mqtt

    db = tmp_path / "gw.db"
    recorded = []
    spy = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="recorder")
    spy.on_message = lambda c, u, m: recorded.append((m.topic, bytes(m.payload)))
    spy.connect("127.0.0.1", mosquitto.port)
    spy.subscribe("mf/test/r1/ctl", qos=1)
    spy.loop_start()

    async def scenario():
        async with Gateway(broker=f"mqtt://127.0.0.1:{mosquitto.port}", db=db, quiet=True) as gw:
            [(board, _)] = await fleet_of(gw, mosquitto.port, ["r1"])
            board.spawn(hello_versions[1].read_bytes())
            run = asyncio.create_task(board.run(20000))
            await wait_until(lambda: gw.devices["r1"].get("online"))
            await asyncio.to_thread(wait, db, queue_deploy(db, hello_versions[2], ["r1"]), 30)
            await wait_until(lambda: len(recorded) >= 2)
            board.supervisor.reclaim("a1")  # if a replay were taken, the agent would come back
            spy.unsubscribe("mf/test/r1/ctl")
            await asyncio.sleep(0.2)
            replay = list(recorded)
            before = dict(board.link.stats)
            for topic, payload in replay:
                spy.publish(topic, payload, qos=1)
            await wait_until(lambda: board.link.stats["duplicates"] - before["duplicates"] >= len(replay))
            after = dict(board.link.stats)
            board.stop()
            await run
            return replay, before, after, board.supervisor.agents.get("a1")

    replay, before, after, agent = asyncio.run(scenario())
    spy.loop_stop()
    assert after["duplicates"] - before["duplicates"] == len(replay) >= 2, (before, after)
    assert after["received"] == before["received"]
    assert agent is None


def test_microfang_jobs_lists_what_was_asked_and_how_it_ended(tmp_path, hello_versions, capsys):
    from microfang.cli import main
    from microfang.gateway.store import Store

    store = Store(tmp_path / "gw.db")
    store.add_device("d1", "test")
    job = store.add_job("deploy", "d1", "a1", b"x" * 10, version=2)
    store.update_job(job, state="failed", detail="agent a1 version 2 did not start", progress=10)
    store.close()
    assert main(["jobs", "--db", str(tmp_path / "gw.db")]) == 0
    out = capsys.readouterr().out
    assert "deploy" in out and "failed" in out and "10/10 B" in out and "did not start" in out


def test_microfang_jobs_shows_a_long_result_whole_and_as_plain_text(tmp_path):
    """The table wraps a job's result in its column instead of cutting it at 60 characters; what
    a board said goes in it as text (no rich markup, no terminal escapes)."""
    import subprocess
    import sys

    from microfang.gateway.store import Store

    detail = ("agent a1 version 2 did not start: trap in init after 3 restarts, rolled back to version 1 "
              "[red]kept[/red] \x1b]0;owned\x07 end-of-detail")
    store = Store(tmp_path / "gw.db")
    store.add_device("d1", "test")
    job = store.add_job("deploy", "d1", "a1", b"x" * 10, version=2)
    store.update_job(job, state="failed", detail=detail)
    store.close()
    done = subprocess.run([sys.executable, "-m", "microfang", "jobs", "--db", str(tmp_path / "gw.db")],
                          capture_output=True, text=True, timeout=60, check=True)
    assert "end-of-detail" in done.stdout and "[red]kept[/red]" in done.stdout
    assert "\x1b" not in done.stdout and "\\x1b]0;owned\\x07" in done.stdout


def test_deploy_with_no_gateway_running_says_so_at_once_and_leaves_the_job_queued(tmp_path, hello_versions, capsys):
    from microfang.cli import main

    db = tmp_path / "gw.db"
    assert main(["keys", "add", "d1", "--fleet", "test", "--db", str(db)]) == 0
    capsys.readouterr()
    assert main(["deploy", str(hello_versions[1]), "--device", "d1", "--db", str(db)]) == 1
    assert capsys.readouterr().err.strip() == (
        f"microfang: no gateway is running on {db} (none heard in the last 5 s): the jobs stay queued until "
        "`microfang gateway` runs on this store (`microfang jobs` shows them)")
    assert main(["jobs", "--db", str(db), "--json"]) == 0
    assert '"state": "queued"' in capsys.readouterr().out
