"""`microfang dashboard` in a real headless Chromium (Debian's, driven by Playwright) against a
running `microfang sim` of two boards: the page lists both boards and their agents and shows an
agent's log line within 2 s of the gateway storing it; a staged rollout started from the CLI
shows up with its progress and its jobs; the data needs the token."""

from __future__ import annotations

import json
import shutil
import sqlite3
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from commands import started, stopped, until
from helpers import HELLO_WAT, build_bundle

from microfang.broker import free_port

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
TOKEN = "dashboard-test-token"
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (tests/run installs it)")






def newest_line(db: Path) -> str | None:
    try:
        with sqlite3.connect(db) as con:
            row = con.execute("SELECT device, agent, line FROM agent_lines ORDER BY n DESC LIMIT 1").fetchone()
    except sqlite3.OperationalError:
        return None
    return None if row is None else f"{row[0]}/{row[1]}: {row[2]}"




@pytest.fixture
def dashboard(tmp_path):
    """A sim of two boards running hello, and the dashboard on its store: the page's port."""
    sim = started(["sim", "--boards", "2", "--agents", "hello", "-t", "0", "--db", "s.db"], tmp_path)
    port = free_port()
    board = None
    try:
        assert until(lambda: newest_line(tmp_path / "s.db"), 60), "the sim's agents logged nothing"
        board = started(["dashboard", "--db", "s.db", "--port", str(port)], tmp_path,
                        {"MICROFANG_DASHBOARD_TOKEN": TOKEN})
        assert board.stdout is not None
        first = board.stdout.readline()
        assert first.strip() == f"dashboard of s.db: http://127.0.0.1:{port}/#token={TOKEN}", first
        yield port, tmp_path
    finally:
        stopped(board, sim)


def test_the_dashboard_shows_both_boards_their_agents_and_a_fresh_log_line(dashboard):
    from playwright.sync_api import sync_playwright

    port, folder = dashboard
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page(bypass_csp=True)  # the page forbids eval; Playwright waits by evaluating
            page.goto(f"http://127.0.0.1:{port}/#token={TOKEN}")
            page.wait_for_function("document.querySelectorAll('#boards tbody tr').length == 2", timeout=10_000)
            page.wait_for_function("document.querySelectorAll('#agents tbody tr').length == 2", timeout=10_000)
            boards = page.locator("#boards tbody tr td:first-child").all_inner_texts()
            agents = [[page.locator(f"#agents tbody tr:nth-child({n}) td:nth-child({c})").inner_text() for c in (1, 2)]
                      for n in (1, 2)]
            line = newest_line(folder / "s.db")
            page.wait_for_function("text => document.getElementById('log').textContent.includes(text)", arg=line,
                                   timeout=2_000)  # shown within 2 s of the gateway storing it
            page.screenshot(path=str(folder / "dashboard.png"), full_page=True)
        finally:
            browser.close()
    assert sorted(boards) == ["sim0000", "sim0001"]
    assert sorted(agents) == [["sim0000", "hello"], ["sim0001", "hello"]]
    assert (folder / "dashboard.png").stat().st_size > 0


def test_a_rollout_started_from_the_cli_shows_up_with_its_waves_and_jobs(dashboard):
    from playwright.sync_api import sync_playwright

    port, folder = dashboard
    (folder / "hello-v2.mfa").write_bytes(build_bundle(HELLO_WAT, **{"agent.version": 2, "sandbox.agent_id": "hello"}))
    deploy = started(["deploy", "hello-v2.mfa", "--fleet", "sim", "--canary", "1", "--db", "s.db",
                      "--signing-keys", "s-signing.keys"], folder)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            try:
                page = browser.new_page(bypass_csp=True)
                page.goto(f"http://127.0.0.1:{port}/#token={TOKEN}")
                page.wait_for_function("document.querySelector('#rollouts tbody tr td:nth-child(4)')?.textContent "
                                       "== 'done'", timeout=60_000)
                rollout = page.locator("#rollouts tbody tr:first-child td").all_inner_texts()
                page.wait_for_function("document.querySelectorAll('#jobs tbody tr').length == 2", timeout=5_000)
                jobs = [page.locator(f"#jobs tbody tr:nth-child({n}) td").all_inner_texts() for n in (1, 2)]
                page.screenshot(path=str(folder / "dashboard-rollout.png"), full_page=True)
            finally:
                browser.close()
        assert deploy.wait(timeout=30) == 0
    finally:
        stopped(deploy)
    assert [rollout[n] for n in (1, 2, 3, 4, 6, 7)] == ["hello v2", "sim", "done", "2 / 2", "2 done",
                                                        "2 of 2 boards took it"], rollout
    assert sorted((j[1], j[3], j[4], j[6]) for j in jobs) == [("deploy", f"sim000{n}", "done", "version 2 running")
                                                              for n in (0, 1)], jobs


def test_the_fleet_data_needs_the_token_and_the_page_does_not(dashboard):
    port, _ = dashboard
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/api/fleet", timeout=5)
    assert refused.value.code == 401
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as page:
        assert b"microfang fleet" in page.read()
    asked = urllib.request.Request(f"http://127.0.0.1:{port}/api/fleet", headers={"Authorization": f"Bearer {TOKEN}"})

    def fleet_with_agents() -> dict | None:  # agents are known from the boards' telemetry
        with urllib.request.urlopen(asked, timeout=5) as answer:
            fleet = json.load(answer)
        return fleet if all(b["agents"] for b in fleet["boards"]) else None

    fleet = until(fleet_with_agents, 20)
    assert fleet is not None
    assert sorted(b["device"] for b in fleet["boards"]) == ["sim0000", "sim0001"]
    agents = [a for b in fleet["boards"] for a in b["agents"]]
    assert agents and all(a["agent"] == "hello" and a["memory"] > 0 and a["fuel_used"] > 0 for a in agents), agents
