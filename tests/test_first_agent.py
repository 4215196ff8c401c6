"""docs/first-agent.md works as written: its files are written, its commands run in order in an
empty folder (the `microfang sim` one in the background, as the page's second terminal), and
each step shows what the page says it shows."""

from __future__ import annotations

import os
import re
import shlex
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

PAGE = Path(__file__).parent.parent / "docs" / "first-agent.md"
FILE_BLOCK = re.compile(r"^`([\w./-]+)`(?: \([^)]*\))?:\n\n```(?!sh)\w*\n(.*?)```", re.S | re.M)
SH_BLOCK = re.compile(r"^```sh\n(.*?)```", re.S | re.M)


def page_files() -> dict[str, str]:
    return {path: body for path, body in FILE_BLOCK.findall(PAGE.read_text(encoding="utf-8"))}


def page_commands() -> list[list[str]]:
    text = PAGE.read_text(encoding="utf-8")
    return [shlex.split(line) for block in SH_BLOCK.findall(text) for line in block.splitlines() if line.strip()]


def microfang(args: list[str], cwd: Path, timeout: float = 180) -> subprocess.CompletedProcess:
    assert args[0] == "microfang"
    return subprocess.run([sys.executable, "-m", "microfang", *args[1:]], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, check=False)


def wait_online(db: Path, devices: set[str], seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with sqlite3.connect(db) as con:
                online = {r[0] for r in con.execute("SELECT id FROM devices WHERE online = 1")}
        except sqlite3.OperationalError:  # not created yet, or its schema not yet written
            online = set()
        if devices <= online:
            return
        time.sleep(0.2)
    raise AssertionError(f"boards {sorted(devices)} not online within {seconds} s")


def test_the_page_names_its_files_and_commands():
    assert set(page_files()) == {"plant/plant.c", "plant/agent.toml", "garden.toml"}
    assert [c[:2] for c in page_commands()] == [
        ["microfang", "build"], ["microfang", "run"], ["microfang", "sim"], ["microfang", "status"],
        ["microfang", "migrate"], ["microfang", "build"], ["microfang", "deploy"], ["microfang", "jobs"]]


def test_first_agent_walkthrough_runs_as_written(tmp_path):
    for path, body in page_files().items():
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text(body, encoding="utf-8")
    build, run, sim, status, migrate, rebuild, deploy, jobs = page_commands()

    done = microfang(build, tmp_path)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "plant" / "plant.mfa").is_file()

    done = microfang(run, tmp_path)
    assert done.returncode == 0, done.stderr
    assert "plant v1 up, waterings so far: 0" in done.stdout
    assert "dry soil, watering #1" in done.stdout  # the simulated moisture dips below DRY within 5 s

    fleet = subprocess.Popen([sys.executable, "-m", "microfang", *sim[1:]], cwd=tmp_path, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        wait_online(tmp_path / "sim.db", {"greenhouse", "porch"})
        done = microfang(status, tmp_path)
        assert done.returncode == 0, done.stderr
        assert "greenhouse" in done.stdout and "porch" in done.stdout

        done = microfang(migrate, tmp_path)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "porch" in done.stdout

        manifest = tmp_path / "plant" / "agent.toml"
        manifest.write_text(re.sub(r"^version = 1$", "version = 2", manifest.read_text(encoding="utf-8"), flags=re.M),
                            encoding="utf-8")
        done = microfang(rebuild, tmp_path)
        assert done.returncode == 0, done.stderr
        done = microfang(deploy, tmp_path)
        assert done.returncode == 0, done.stdout + done.stderr
        assert re.search(r"plant on greenhouse: .*running", done.stdout), done.stdout
        assert re.search(r"plant on porch: .*running", done.stdout), done.stdout

        again = microfang(deploy, tmp_path)
        assert again.returncode != 0 and "version" in again.stderr, again.stdout + again.stderr

        done = microfang(jobs, tmp_path)
        assert done.returncode == 0 and "migrate" in done.stdout and "deploy" in done.stdout, done.stdout
    finally:
        os.killpg(fleet.pid, signal.SIGTERM) if fleet.poll() is None else None
        out, _ = fleet.communicate(timeout=30)
    # SIGTERM ends the sim as Ctrl-C does: its broker and boards are gone with it.
    assert "Traceback" not in out, out
    leftover = subprocess.run(["pgrep", "-s", str(fleet.pid)], capture_output=True, text=True, check=False)
    assert leftover.stdout.strip() == "", f"processes left behind by the sim: {leftover.stdout}"


@pytest.mark.parametrize("text, problem", [
    ('fleet = "garden"\n', "boards: list at least one board"),
    ('fleet = "a/b"\n[boards.x]\n', "fleet: 'a/b' is not a valid name"),
    ('[boards.x]\nagents = ["nope"]\n', "boards.x.agents: unknown agent 'nope'"),
    ('[boards.Kitchen]\n', "boards.Kitchen: not a valid board name (1-32 of a-z 0-9 _ - starting with"),
    ('[boards.x]\nagents = ["echo", "echo"]\n', "boards.x.agents: agent 'echo' listed twice"),
    ('[boards.x]\nruntime = "java"\n', "boards.x.runtime: 'java' is not one of cpython, micropython"),
    ('[boards.x]\nagent = ["echo"]\n', "boards.x: unknown key 'agent'"),
    ('[board.x]\n', "unknown key 'board'"),
    ('fleet = \n', "not valid TOML"),
])
def test_a_bad_fleet_file_is_one_line_naming_the_problem(tmp_path, text, problem):
    (tmp_path / "fleet.toml").write_text(text, encoding="utf-8")
    done = microfang(["microfang", "sim", "fleet.toml", "-t", "1"], tmp_path, timeout=60)
    assert done.returncode == 1
    assert done.stderr.startswith("microfang: fleet.toml: ") and problem in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
