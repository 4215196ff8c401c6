"""Staged rollouts (rollout.py, gateway/rollouts.py): canary boards first, growing waves, a stop at
the failure rate, carried out by the gateway; through a real gateway, Mosquitto and ten boards
whose new version traps on three of them (those whose sensor reads high), which put their old
version back themselves."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time

import pytest
from fleet import make_board, wait_until
from helpers import agent_wat, build_bundle

from microfang.cli import main
from microfang.deploy import queue_deploy, wait
from microfang.firmware.errors import MicrofangError
from microfang.gateway.core import Gateway
from microfang.gateway.rollouts import Rollouts
from microfang.gateway.store import Store
from microfang.rollout import Plan, roll_out

BOARDS = [f"b{n:02d}" for n in range(10)]
HOT = {"b03", "b04", "b05"}  # their sensor reads 500: version 2 traps there on start
PROBE = agent_wat("""
  (func (export "mf_on_event") (param i32 i32 i32) (result i32)
    (if (i32.gt_s (call $sensor (i32.const 0)) (i32.const {limit})) (then unreachable))
    (i32.const 0))""", imports='(import "mf" "sensor_read" (func $sensor (param i32) (result i32)))')


def probe(tmp_path, version: int, limit: int):
    path = tmp_path / f"probe_v{version}.mfa"
    path.write_bytes(build_bundle(PROBE.replace("{limit}", str(limit)), **{
        "agent.version": version, "sandbox.agent_id": "probe",
        "sandbox.permissions.allowed_host_functions": ["sensor_read"]}))
    return path


def versions(boards) -> dict[str, tuple[int, str] | None]:
    out = {}
    for name, board in boards.items():
        agent = board.supervisor.agents.get("probe")
        out[name] = None if agent is None else (agent.manifest["version"], agent.state)
    return out


def run_fleet(port: int, db, stage):
    """Ten boards with version 1 installed over the air, then `stage(db)` in a thread; returns
    its result and each board's version and state afterwards."""
    async def scenario():
        async with Gateway(broker=f"mqtt://127.0.0.1:{port}", db=db, quiet=True) as gw:
            boards = {}
            for name in BOARDS:
                reading = 500 if name in HOT else 20
                boards[name], _ = make_board(name, gw.add_device(name, fleet="test"), port,
                                             sensors=lambda agent, channel, r=reading: r)
            runs = [asyncio.create_task(board.run(60_000)) for board in boards.values()]
            await wait_until(lambda: all(gw.devices[d].get("online") for d in BOARDS))
            await asyncio.to_thread(wait, db, queue_deploy(db, probe(db.parent, 1, 10_000), fleet="test"), 60)
            try:
                result = await asyncio.to_thread(stage, db)
            except MicrofangError as e:
                result = e
            after = versions(boards)
            for board in boards.values():
                board.stop()
            await asyncio.gather(*runs)
            return result, after

    return asyncio.run(scenario())


def test_waves_start_with_the_canary_and_grow_by_the_ramp():
    assert [len(w) for w in Plan(canary=1, ramp=2.0).waves(BOARDS)] == [1, 2, 4, 3]
    assert [len(w) for w in Plan(canary=2, ramp=1.0).waves(BOARDS)] == [2, 3, 4, 1]
    assert Plan(canary=20).waves(BOARDS)[0] == BOARDS


def test_a_rollout_that_fails_on_too_many_boards_stops_and_leaves_the_rest_on_the_old_version(mosquitto, tmp_path):
    v2 = probe(tmp_path, 2, 100)
    result, after = run_fleet(mosquitto.port, tmp_path / "gw.db",
                              lambda db: roll_out(db, v2, "test", Plan(canary=1, ramp=2.0, abort_at=30.0, wave_timeout=60)))
    assert (result.state, result.detail) == ("aborted", "aborted at wave 3 of 4: 3 of 7 boards failed (43% > 30%)")
    assert result.waves == [["b00"], ["b01", "b02"], ["b03", "b04", "b05", "b06"]]  # 3 of 7 failed: 43% > 30%
    assert sorted(result.failed) == sorted(HOT)
    assert result.untouched == ["b07", "b08", "b09"]
    assert {name: after[name] for name in sorted(HOT)} == {name: (1, "running") for name in sorted(HOT)}  # rolled back
    assert {name: after[name][0] for name in ("b00", "b01", "b02", "b06")} == dict.fromkeys(("b00", "b01", "b02", "b06"), 2)
    assert {name: after[name] for name in result.untouched} == dict.fromkeys(result.untouched, (1, "running"))


def test_the_cli_says_why_it_stopped_and_what_was_not_deployed(mosquitto, tmp_path):
    v2 = probe(tmp_path, 2, 100)
    done, after = run_fleet(mosquitto.port, tmp_path / "gw.db", lambda db: subprocess.run(
        [sys.executable, "-m", "microfang", "deploy", str(v2), "--fleet", "test", "--db", str(db),
         "--canary", "2", "--ramp", "3", "--abort-at", "10", "--timeout", "60"], capture_output=True, text=True, timeout=120, check=False))
    assert done.returncode == 1, done.stderr
    assert "wave 1: 2 boards (b00, b01)" in done.stdout
    assert done.stderr.strip().endswith(
        "microfang: rollout aborted at wave 2 of 3: 3 of 8 boards failed (38% > 10%); not deployed: b08, b09")
    assert after["b08"] == after["b09"] == (1, "running")


def rollout_when(db, check, seconds: float = 60.0) -> dict:
    """The only rollout in the store once `check(rollout)` holds (polled; None after `seconds`)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        store = Store(db)
        try:
            rows = Rollouts(store).get()
        finally:
            store.close()
        if rows and check(rows[0]):
            return rows[0]
        time.sleep(0.1)
    return None


def test_a_rollout_goes_on_in_the_gateway_when_the_cli_that_started_it_is_killed(mosquitto, tmp_path):
    v2 = probe(tmp_path, 2, 100)

    def start_then_kill(db):
        cli = subprocess.Popen([sys.executable, "-m", "microfang", "deploy", str(v2), "--fleet", "test", "--db", str(db),
                                "--canary", "1", "--ramp", "2", "--abort-at", "30", "--timeout", "60"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            assert rollout_when(db, lambda r: r["wave"] >= 1, 60) is not None  # the canary went well
        finally:
            cli.kill()
            cli.wait(timeout=10)
        return rollout_when(db, lambda r: r["state"] != "running", 60)

    rollout, after = run_fleet(mosquitto.port, tmp_path / "gw.db", start_then_kill)
    assert (rollout["state"], rollout["detail"]) == ("aborted", "aborted at wave 3 of 4: 3 of 7 boards failed (43% > 30%)")
    assert rollout["jobs"] == {"done": 4, "failed": 3, "cancelled": 3}
    assert {name: after[name] for name in ("b07", "b08", "b09")} == dict.fromkeys(("b07", "b08", "b09"), (1, "running"))


@pytest.mark.parametrize(("flags", "error"), [
    (["--canary", "0"], "microfang: --canary 0: give at least 1 board"),
    (["--canary", "1", "--ramp", "0.5"], "microfang: --ramp 0.5: give a factor of 1 or more (2: each wave twice the last)"),
    (["--canary", "1", "--abort-at", "150"], "microfang: --abort-at 150.0: give a percentage from 0 to 100"),
])
def test_a_wrong_plan_is_one_line_before_anything_is_deployed(flags, error, tmp_path, capsys):
    v2 = probe(tmp_path, 2, 100)
    main(["keys", "add", "b00", "--fleet", "test", "--db", str(tmp_path / "gw.db")])
    capsys.readouterr()
    assert main(["deploy", str(v2), "--fleet", "test", "--db", str(tmp_path / "gw.db"), *flags]) == 1
    assert capsys.readouterr().err.strip() == error


def test_a_staged_rollout_needs_a_fleet(tmp_path, capsys):
    v2 = probe(tmp_path, 2, 100)
    assert main(["deploy", str(v2), "--device", "b00", "--db", str(tmp_path / "gw.db"), "--canary", "1"]) == 1
    assert capsys.readouterr().err.strip() == "microfang: --canary, --ramp and --abort-at stage a rollout to a --fleet"
