"""`microfang sim`: users' agents on provisioned boards of either runtime, placed per board, in a
live table that stays readable in an 80x24 terminal."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rich.console import Console

from brokers import free_port
from microfang.firmware import bundle
from microfang.gateway import Gateway
from microfang.sim import BoardPlan, InProcessBoard, plan_from_flags, view

HELLO = Path(__file__).parent.parent / "tools" / "sdk" / "examples" / "hello" / "agent.toml"


def sim(args: list[str], cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "microfang", "sim", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, check=False)


def reported(db: Path) -> set[str]:
    """Devices whose telemetry reached the gateway."""
    with sqlite3.connect(db) as con:
        return {r[0] for r in con.execute("SELECT DISTINCT device FROM telemetry")}


def test_a_fleet_file_runs_cpython_and_micropython_boards_side_by_side(tmp_path):
    (tmp_path / "fleet.toml").write_text(
        'fleet = "mixed"\n[boards.inproc]\nagents = ["echo"]\n'
        '[boards.mp]\nagents = ["hello"]\nruntime = "micropython"\nprofile = "esp32"\n', encoding="utf-8")
    done = sim(["fleet.toml", "-t", "7", "--db", "fleet.db"], tmp_path)
    assert done.returncode == 0, done.stderr
    assert reported(tmp_path / "fleet.db") == {"inproc", "mp"}
    with sqlite3.connect(tmp_path / "fleet.db") as con:
        fleets = dict(con.execute("SELECT id, fleet FROM devices"))
        agents = set(con.execute("SELECT device, agent FROM agent_manifests"))
    assert fleets == {"inproc": "mixed", "mp": "mixed"}
    assert agents == {("inproc", "echo"), ("mp", "hello")}  # placed per board, registered as flash does


def test_flags_run_a_users_manifest_on_every_board(tmp_path):
    done = sim(["--boards", "2", "--agents", str(HELLO), "-t", "6", "--db", "s.db"], tmp_path)
    assert done.returncode == 0, done.stderr
    with sqlite3.connect(tmp_path / "s.db") as con:
        agents = set(con.execute("SELECT device, agent FROM agent_manifests"))
    assert agents == {("sim0000", "hello"), ("sim0001", "hello")}


def test_running_a_sim_again_reprovisions_its_boards_and_they_are_heard(tmp_path):
    """A second run re-flashes the boards (fresh flash, sequence from 1): with a rotated key
    the gateway must not take their messages for replays of the first run's."""
    for _ in range(2):
        done = sim(["--boards", "1", "--agents", "echo", "-t", "6", "--db", "s.db"], tmp_path)
        assert done.returncode == 0, done.stderr
        assert ", 0 dropped" in done.stdout, done.stdout


@pytest.mark.parametrize("sig", [signal.SIGHUP, signal.SIGTERM])
def test_hangup_or_term_ends_the_sim_with_its_broker_boards_and_temp_folders(tmp_path, sig):
    (tmp_path / "tmp").mkdir()
    (tmp_path / "fleet.toml").write_text('[boards.a]\nagents = ["echo"]\n[boards.b]\nruntime = "micropython"\n',
                                         encoding="utf-8")
    proc = subprocess.Popen([sys.executable, "-m", "microfang", "sim", "fleet.toml", "-t", "0", "--db", "s.db"],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True, env={**os.environ, "TMPDIR": str(tmp_path / "tmp")})
    try:
        deadline = time.monotonic() + 60
        while reported_or_empty(tmp_path / "s.db") != {"a", "b"} and time.monotonic() < deadline:
            time.sleep(0.3)
        assert reported_or_empty(tmp_path / "s.db") == {"a", "b"}
        assert list((tmp_path / "tmp").iterdir())  # the sim's broker and board images live there
        os.kill(proc.pid, sig)
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert "Traceback" not in out, out
    left = subprocess.run(["pgrep", "-s", str(proc.pid)], capture_output=True, text=True, check=False)
    assert left.stdout.strip() == "", "the sim left processes behind"
    assert list((tmp_path / "tmp").iterdir()) == []


def reported_or_empty(db: Path) -> set[str]:
    try:
        return reported(db) if db.exists() else set()
    except sqlite3.OperationalError:  # created, schema not there yet
        return set()


def test_an_unreachable_broker_is_one_line(tmp_path):
    done = sim(["--broker", f"mqtt://127.0.0.1:{free_port()}", "-t", "2", "--db", "s.db"], tmp_path, timeout=60)
    assert done.returncode == 1
    assert done.stderr.startswith("microfang: cannot reach the MQTT broker at 127.0.0.1:"), done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_an_unknown_agent_names_what_sim_accepts(tmp_path):
    done = sim(["--agents", "plant", "-t", "1"], tmp_path, timeout=60)
    assert done.returncode == 1
    assert "unknown agent 'plant': give a manifest (.toml), a bundle (.mfa) or an example name" in done.stderr


def test_the_table_of_30_boards_fits_an_80x24_terminal(tmp_path):
    plan = plan_from_flags(30, ["hello"], "cpython", "esp32", "sim")
    gateway = Gateway(broker="mqtt://127.0.0.1:1", db=tmp_path / "g.db")
    config = {"fleet": "sim", "key": b"k" * 32, "sign_keys": [b"s" * 32], "host": "127.0.0.1", "port": 1}
    boards = [InProcessBoard(BoardPlan(f"greenhouse-{n:02d}", p.agents), dict(config, device=f"greenhouse-{n:02d}"))
              for n, p in enumerate(plan.boards)]
    boards[0].last = "hello: " + "a very long log line " * 10
    screen = Console(width=80, height=24, record=True, file=open("/dev/null", "w"))
    screen.print(view(boards, gateway, "sim", 0.0, tmp_path / "gateway.db", rows=24 - 6))
    lines = screen.export_text().rstrip("\n").splitlines()
    assert len(lines) <= 24 - 2, lines
    assert all(len(line) <= 80 for line in lines), [len(line) for line in lines]
    assert any(line.startswith("greenhouse-00 ") for line in lines), lines  # names are not cut
    assert any("+12 more" in line for line in lines), lines
    assert bundle.decode(plan.boards[0].agents[0])[0]["agent_id"] == "hello"


RUNNING = ['microfang_agent_state{device="sim0000",agent="hello",state="running"} 1',
           'microfang_agent_state{device="sim0001",agent="hello",state="running"} 1']


def curl_until(url, lines, seconds=30.0):
    """The page at `url` once it holds every one of `lines` (or as it was when `seconds` passed)."""
    deadline = time.monotonic() + seconds
    page = ""
    while time.monotonic() < deadline:
        page = subprocess.run(["curl", "-s", url], capture_output=True, text=True, check=False).stdout
        if set(lines) <= set(page.splitlines()):
            break
        time.sleep(0.3)
    return page


def test_curl_metrics_of_a_running_sim_passes_promtool(tmp_path):
    """The acceptance line against `microfang sim --http`: two boards with hello, their agents'
    series on a page `curl | promtool check metrics` accepts."""
    port = free_port()
    url = f"http://127.0.0.1:{port}/metrics"
    proc = subprocess.Popen([sys.executable, "-m", "microfang", "sim", "--boards", "2", "--agents", "hello", "-t", "12",
                             "--db", "s.db", "--http", str(port)], cwd=tmp_path, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        page = curl_until(url, RUNNING)
        piped = subprocess.run(f"set -o pipefail; curl -sf {url} | promtool check metrics", shell=True,
                               executable="/bin/bash", capture_output=True, text=True, check=False)
    finally:
        proc.wait(60)
    assert set(RUNNING) <= set(page.splitlines()), page
    assert piped.returncode == 0, piped.stdout + piped.stderr
