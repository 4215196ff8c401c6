"""Agents' log lines reach the user: a board forwards each mf_log line within the agent's budget
(firmware/agentlines.py), the gateway checks and keeps them per device (gateway/agentlines.py),
`microfang logs [-f] [DEVICE[/AGENT]]` prints them as they come, on a sim of either runtime."""

from __future__ import annotations

import queue
import re
import sqlite3
import subprocess
import threading
import time
from pathlib import Path

import pytest
from commands import started, stopped
from helpers import HELLO_WAT as TICKER

from microfang.cli import main
from microfang.firmware import protocol
from microfang.gateway import shapes
from microfang.gateway.agentlines import LINES_KEEP, AgentLines
from microfang.gateway.store import Store


def lines_of(proc: subprocess.Popen) -> queue.Queue:
    out: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [out.put(line.rstrip("\n")) for line in proc.stdout], daemon=True).start()
    return out




def registered(db: Path) -> bool:
    """The sim has provisioned its board in the registry."""
    try:
        with sqlite3.connect(db) as con:
            return con.execute("SELECT 1 FROM devices WHERE id = 'sim0000'").fetchone() is not None
    except sqlite3.OperationalError:  # not there yet, or its schema not yet
        return False


@pytest.mark.parametrize("runtime", ["cpython", "micropython"])
def test_logs_follow_prints_an_agents_ticks_as_they_happen(runtime, tmp_path, micropython):
    sim = started(["sim", "--boards", "1", "--agents", "hello", "--runtime", runtime, "-t", "0", "--db", "s.db"],
                    cwd=tmp_path)
    follow = None
    try:
        deadline = time.monotonic() + 90
        while not registered(tmp_path / "s.db") and time.monotonic() < deadline:
            time.sleep(0.2)
        follow = started(["logs", "-f", "sim0000/hello", "--db", "s.db"], cwd=tmp_path)
        out = lines_of(follow)
        ticks: list[tuple[float, int]] = []
        seen: list[str] = []
        while len(ticks) < 5 and time.monotonic() < deadline:
            try:
                line = out.get(timeout=1)
            except queue.Empty:
                continue
            seen.append(line)
            tick = re.fullmatch(r"\d\d:\d\d:\d\d sim0000/hello: tick (\d+)", line)
            if tick:
                ticks.append((time.monotonic(), int(tick[1])))
    finally:
        stopped(follow, sim)
    assert len(ticks) == 5, seen
    numbers = [n for _, n in ticks]
    assert numbers == sorted(numbers) and len(set(numbers)) == 5, numbers
    assert ticks[-1][0] - ticks[0][0] < 10  # printed as they came, not at the end


def test_logs_prints_the_latest_lines_of_one_agent_and_ends(tmp_path, capsys):
    store = Store(tmp_path / "gw.db")
    store.add_device("b1", "f")
    lines = AgentLines(store)
    for n in range(30):
        lines.add("b1", "a1" if n % 2 else "a2", {"line": f"line {n}", "ms": n}, time.time())
    store.close()
    assert main(["logs", "b1/a1", "-n", "3", "--db", str(tmp_path / "gw.db")]) == 0
    printed = [re.sub(r"^\d\d:\d\d:\d\d ", "", line) for line in capsys.readouterr().out.splitlines()]
    assert printed == ["b1/a1: line 25", "b1/a1: line 27", "b1/a1: line 29"]


def test_lines_dropped_over_budget_are_shown_beside_the_next_line(tmp_path, capsys):
    store = Store(tmp_path / "gw.db")
    store.add_device("b1", "f")
    AgentLines(store).add("b1", "a1", {"line": "after the flood", "ms": 1, "dropped": 37}, time.time())
    store.close()
    assert main(["logs", "--db", str(tmp_path / "gw.db")]) == 0
    assert capsys.readouterr().out.rstrip().endswith(
        "b1/a1: after the flood [37 lines dropped over budget before this one]")


@pytest.mark.parametrize(("target", "error"), [
    ("nosuch", "microfang: no device 'nosuch' in "),
    ("b1/Bad!", "microfang: 'b1/Bad!': 'Bad!' is not a agent name (1-32 of a-z 0-9 _ - starting with a letter or digit)"),
    ("/a1", "microfang: '/a1': give DEVICE or DEVICE/AGENT"),
])
def test_a_wrong_target_is_one_line(target, error, tmp_path, capsys):
    store = Store(tmp_path / "gw.db")
    store.add_device("b1", "f")
    store.close()
    assert main(["logs", target, "--db", str(tmp_path / "gw.db")]) == 1
    assert capsys.readouterr().err.startswith(error)


@pytest.mark.parametrize(("body", "problem"), [
    ({"line": "x" * (protocol.LINE_MAX + 1), "ms": 1}, f"lines.line must hold 0..{protocol.LINE_MAX} bytes, not 161"),
    ({"line": b"bytes", "ms": 1}, "lines.line must be str, not bytes"),
    ({"line": "x", "ms": -1}, "lines.ms must be an integer in 0..4294967295"),
    ({"line": "x"}, "lines.ms is missing"),
    ({"line": "x", "ms": 1, "dropped": "many"}, "lines.dropped must be an integer in 0..4294967295"),
    (["x"], "lines must be a map, not list"),
])
def test_a_malformed_line_from_a_board_is_refused_with_its_reason(body, problem):
    assert shapes.problem(protocol.K_LINES, body) == problem


def test_a_device_keeps_only_its_newest_lines(tmp_path):
    store = Store(tmp_path / "gw.db")
    lines = AgentLines(store)
    for n in range(LINES_KEEP + 50):
        lines.add("b1", "a1", {"line": str(n), "ms": n}, 0.0)
    lines.add("b2", "a1", {"line": "other", "ms": 0}, 0.0)
    kept = lines.after(0, device="b1", limit=10 * LINES_KEEP)
    assert len(kept) == LINES_KEEP and kept[0].text == "50" and kept[-1].text == str(LINES_KEEP + 49)
    assert [line.text for line in lines.after(0, device="b2")] == ["other"]
    store.close()


def test_a_board_offline_does_not_queue_log_lines_in_its_outbox(tmp_path):
    # The outbox's room is for what must survive an outage (requests, replicas, telemetry).
    import asyncio

    from fleet import make_board
    from helpers import build_bundle

    from microfang.broker import free_port
    from microfang.firmware import cbor
    from microfang.gateway import fastcbor

    board, rec = make_board("b1", b"k" * 32, free_port())  # no broker there
    board.spawn(build_bundle(TICKER, **{"agent.timers": [{"id": 1, "every_ms": 20}]}))
    asyncio.run(board.run(1000))
    kinds = [fastcbor.loads(cbor.loads(record)[1])["kind"] for _, record in board.link.outbox.records(1)]
    assert protocol.K_LINES not in kinds, kinds
    assert board.link.lines.dropped > 10  # the agent did log: its lines were counted, not queued
