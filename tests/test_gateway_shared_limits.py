"""Rate limits and budgets with two gateway processes on one PostgreSQL store: the broker's
shared subscription splits an agent's requests between them, and they count in one ledger
(gateway/limits.py), so two gateways allow what one would, not twice as much. A board on the
wire is a paho client sending signed echo requests (tests/wireboard.py)."""

import subprocess
import sys
import time

import pytest
from test_fleet_durability import requests_handled
from wireboard import KEY, WireBoard

from microfang.broker import free_port
from microfang.gateway.store import Store

REQUESTS = 30


def gateways(port, store, *limits):
    """gw-a and gw-b with `limits` (gateway options), each once it is up: [(process, http port)]."""
    started = []
    for name in ("gw-a", "gw-b"):
        http = free_port()
        proc = subprocess.Popen([sys.executable, "-m", "microfang", "gateway", "--broker", f"mqtt://127.0.0.1:{port}",
                                 "--store", store, "--name", name, "--http", str(http), "--memory", "none", *limits],
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        started.append((proc, http))
        assert proc.stdout.readline().startswith("gateway up")
    return started


@pytest.fixture
def board_on(mosquitto, pg_store):
    """board_on(*limits): a registered wire board and two gateways with `limits`; stopped after."""
    store = Store(pg_store)
    store.add_device("dev1", "f", KEY)
    store.close()
    running = []

    def start(*limits):
        running.extend(gateways(mosquitto.port, pg_store, *limits))
        return WireBoard(mosquitto.port), [http for _, http in running]

    yield start
    for proc, _ in running:
        proc.terminate()
        proc.wait(timeout=20)


def answered(board, count, seconds=20):
    deadline = time.monotonic() + seconds
    while len(board.ok) < count and time.monotonic() < deadline:
        time.sleep(0.02)
    return dict(board.ok)


def test_two_gateways_allow_one_budget_not_two(board_on):
    board, https = board_on("--budget", "10")
    board.send(1, REQUESTS)
    ok = answered(board, REQUESTS)
    board.stop()
    assert len(ok) == REQUESTS
    assert sum(ok.values()) == 10, ok  # each gateway counting alone would allow about 20
    assert all(requests_handled(http) > 0 for http in https)  # both gateways took requests


def test_two_gateways_share_one_rate_limit(board_on):
    board, https = board_on("--rate", "0.5")  # a bucket of 1 token, refilled every 2 s
    started = time.monotonic()
    board.send(1, REQUESTS)
    ok = answered(board, REQUESTS)
    elapsed = time.monotonic() - started
    board.stop()
    assert len(ok) == REQUESTS
    assert sum(ok.values()) <= 1 + 0.5 * elapsed, (ok, elapsed)  # one bucket: each gateway's own would allow 2x
    assert all(requests_handled(http) > 0 for http in https)
