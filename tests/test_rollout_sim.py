"""Issue 19's acceptance, by commands: a staged rollout to a 10-board `microfang sim` (seven
CPython boards, three MicroPython boards at the ESP32's 110 KB heap) where the new version traps
on start on the three whose temperature reads high stops at the abort threshold; those three put
their old version back themselves, and the boards the rollout did not reach keep it."""

from __future__ import annotations

import sqlite3
import subprocess
import sys

from commands import started, stopped, until
from helpers import agent_wat, build_bundle

BOARDS = [f"b{n:02d}" for n in range(10)]
HOT = ("b03", "b04", "b05")  # MicroPython boards; temperature 50.00 C: version 2 traps there on start
PROBE = agent_wat("""
  (func (export "mf_on_event") (param i32 i32 i32) (result i32)
    (if (i32.gt_s (call $sensor (i32.const 0)) (i32.const {limit})) (then unreachable))
    (i32.const 0))""", imports='(import "mf" "sensor_read" (func $sensor (param i32) (result i32)))')


def probe(version: int, limit: int) -> bytes:
    return build_bundle(PROBE.replace("{limit}", str(limit)), **{
        "agent.version": version, "sandbox.agent_id": "probe", "sandbox.permissions.allowed_host_functions": ["sensor_read"],
        "sandbox.memory": {"max_heap_kb": 2, "stack_size_kb": 1, "grow_limit_pages": 0}})  # an ESP32-sized agent


def fleet_file(folder) -> None:
    (folder / "probe-v1.mfa").write_bytes(probe(1, 1_000_000))
    (folder / "probe-v2.mfa").write_bytes(probe(2, 4000))
    text = ['fleet = "sim"', 'profile = "esp32"', "[sensors]", "temperature = { mean = 2000 }"]
    for board in BOARDS:
        text += [f"[boards.{board}]", 'agents = ["probe-v1.mfa"]']
        if board in HOT:
            text += ['runtime = "micropython"', f"[boards.{board}.sensors]", "temperature = { mean = 5000 }"]
    (folder / "fleet.toml").write_text("\n".join(text) + "\n")


def probe_versions(db) -> dict[str, int]:
    try:
        with sqlite3.connect(db) as con:
            return dict(con.execute("SELECT device, version FROM agents WHERE agent = 'probe'").fetchall())
    except sqlite3.OperationalError:
        return {}




def test_a_rollout_to_a_ten_board_sim_stops_at_the_threshold_and_the_trapping_boards_roll_back(tmp_path, micropython):
    fleet_file(tmp_path)
    sim = started(["sim", "fleet.toml", "-t", "0", "--db", "s.db"], tmp_path)
    try:
        assert until(lambda: len(probe_versions(tmp_path / "s.db")) == 10, 120), probe_versions(tmp_path / "s.db")
        deploy = subprocess.run([sys.executable, "-m", "microfang", "deploy", "probe-v2.mfa", "--fleet", "sim",
                                 "--canary", "1", "--ramp", "2", "--abort-at", "30", "--timeout", "60", "--db", "s.db",
                                 "--signing-keys", "s-signing.keys"], cwd=tmp_path, capture_output=True, text=True,
                                timeout=300, check=False)
        versions = until(lambda: (v := probe_versions(tmp_path / "s.db")) and all(v[b] == 1 for b in HOT) and v, 30)
    finally:
        stopped(sim)
    assert deploy.returncode == 1, deploy.stdout + deploy.stderr
    assert "wave 3: 4 boards (b03, b04, b05, b06)" in deploy.stdout
    assert [line for line in deploy.stderr.splitlines() if ": failed: " in line] == [
        f"microfang: probe on {board}: failed: agent probe version 2 did not start (it trapped on start); version 1 "
        "runs again" for board in HOT], deploy.stderr
    assert deploy.stderr.strip().splitlines()[-1] == ("microfang: rollout aborted at wave 3 of 4: 3 of 7 boards failed "
                                                      "(43% > 30%); not deployed: b07, b08, b09"), deploy.stderr
    assert versions == {**dict.fromkeys(("b00", "b01", "b02", "b06"), 2), **dict.fromkeys(HOT, 1),
                        **dict.fromkeys(("b07", "b08", "b09"), 1)}, versions
