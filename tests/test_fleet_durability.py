"""Crashes between board, broker and gateway: after recovery no QoS 1 message is lost and no
agent sees a reply twice.

A board (real firmware on CPython) runs an agent that fires REQUESTS echo requests at once
and stores every reply it gets in its memory log. Mid-stream the gateway process is killed
with SIGKILL (and restarted), or the broker is restarted; at the end each request id must
appear exactly once in the agent's log. A request refused at intake is answered after such a
kill too (a board on the wire, tests/wireboard.py).
"""

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest
from brokers import Mosquitto
from fleet import make_board, wait_until
from helpers import agent_wat, build_bundle

from microfang.firmware import cbor
from microfang.gateway.store import Store

REQUESTS = 120

# On start: REQUESTS echo requests with bodies 1..REQUESTS (CBOR uint8 at 100..101);
# on every reply: append the reply's payload to the memory log.
BURST = agent_wat(
    f"""
  (data (i32.const 0) "echo")
  (func (export "mf_on_event") (param i32 i32 i32) (result i32) (local $i i32)
    (if (i32.eq (local.get 0) (i32.const 4))
      (then (drop (call $append (local.get 1) (local.get 2))) (return (i32.const 0))))
    (if (i32.eq (local.get 0) (i32.const 1))
      (then
        (i32.store8 (i32.const 100) (i32.const 0x18))  ;; CBOR uint8
        (loop $next
          (local.set $i (i32.add (local.get $i) (i32.const 1)))
          (i32.store8 (i32.const 101) (local.get $i))
          (drop (call $request (i32.const 0) (i32.const 4) (i32.const 100) (i32.const 2)))
          (br_if $next (i32.lt_u (local.get $i) (i32.const {REQUESTS}))))))
    (i32.const 0))""",
    imports='(import "mf" "request" (func $request (param i32 i32 i32 i32) (result i32))) '
            '(import "mf" "mem_append" (func $append (param i32 i32) (result i32)))',
)
PERMS = {"sandbox.permissions.allowed_host_functions": ["request", "mem_append"], "sandbox.agent_id": "burst",
         "sandbox.fuel.max_fuel": 1_000_000}


def start_gateway(port, db):
    """A gateway process, returned once it is subscribed (its persistent session then queues
    messages for it at the broker even while it is down)."""
    # Its stderr goes beside the database; with PYTHONFAULTHANDLER a SIGABRT writes every
    # thread's stack there (stop_gateway, when it does not stop).
    proc = subprocess.Popen([sys.executable, "-m", "microfang", "gateway", "--broker", f"mqtt://127.0.0.1:{port}",
                             "--db", str(db), "--http", "0"], stdout=subprocess.PIPE,
                            stderr=open(f"{db}.stderr", "w"),  # the child writes to it
                            text=True, env={**os.environ, "PYTHONFAULTHANDLER": "1"})
    line = proc.stdout.readline()
    assert line.startswith("gateway up"), line
    return proc


def stop_gateway(proc, db, seconds=10):
    """SIGTERM, and the gateway must be gone within `seconds`; if not, the stacks it hung in."""
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGABRT)
        proc.wait(timeout=10)
        raise AssertionError(f"the gateway did not stop within {seconds} s of SIGTERM; its threads were in:\n"
                             + open(f"{db}.stderr").read()[-4000:]) from None


def replies(board):
    return sorted(cbor.loads(p)["id"] for _, p in board.supervisor.log("burst").records())


async def run_with_crash(broker, db, crash):
    store = Store(db)
    key = store.add_device("b1", "test")
    store.close()
    gateway = start_gateway(broker.port, db)
    board, rec = make_board("b1", key, broker.port, outbox_bytes=64 * 1024)
    board.spawn(build_bundle(BURST, **PERMS))
    run = asyncio.create_task(board.run(25_000))
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 20
    while len(replies(board)) < 5 and loop.time() < deadline:
        await asyncio.sleep(0.005)
    gateway = await loop.run_in_executor(None, crash, gateway)
    while len(replies(board)) < REQUESTS and loop.time() < deadline:
        await asyncio.sleep(0.05)
    board.link.stop()
    got = replies(board)
    run.cancel()
    try:
        await run
    except asyncio.CancelledError:
        pass
    gateway.send_signal(signal.SIGTERM)
    gateway.wait(timeout=10)
    return got, board


@pytest.fixture
def persistent_broker(tmp_path):
    broker = Mosquitto(tmp_path, persistence=True).start()
    yield broker
    broker.stop()


def test_gateway_killed_mid_stream_loses_and_duplicates_nothing(persistent_broker, tmp_path):
    def kill_and_restart(gateway):
        os.kill(gateway.pid, signal.SIGKILL)
        gateway.wait(timeout=10)
        return start_gateway(persistent_broker.port, tmp_path / "gw.db")

    got, board = asyncio.run(run_with_crash(persistent_broker, tmp_path / "gw.db", kill_and_restart))
    assert got == list(range(1, REQUESTS + 1)), got


def test_broker_restart_mid_stream_loses_and_duplicates_nothing(persistent_broker, tmp_path):
    def restart_broker(gateway):
        persistent_broker.stop()
        time.sleep(0.5)  # messages pile up on both sides while it is down
        persistent_broker.start()
        return gateway

    got, board = asyncio.run(run_with_crash(persistent_broker, tmp_path / "gw.db", restart_broker))
    assert got == list(range(1, REQUESTS + 1)), got
    assert board.link.stats["reconnects"] >= 1


DENIED = "request is not allowed by the agent's registered manifest"


def refused_then_killed(port, tmp_path, sent_meanwhile=0):
    """A request refused at intake (its registered manifest does not allow requests) is
    committed (its sequence number taken) with its error reply; the gateway is killed before
    the broker has the reply or the request's PUBACK; `sent_meanwhile` messages later (sent to
    the board by another gateway) it starts again, and the broker gives it the request again:
    a replay now. (refused and audited before the kill, replies before the restart, replies
    after it: id -> error)."""
    from stall_proxy import StallProxy
    from wireboard import WireBoard

    db = tmp_path / "gw.db"
    store = Store(db)
    key = store.add_device("dev1", "f")
    store.register_manifest("dev1", {"agent_id": "a1", "version": 1,
                                     "permissions": {"allowed": [], "denied": ["request"]}})
    store.close()

    def refusals_audited():
        with sqlite3.connect(db) as conn:
            return conn.execute("SELECT COUNT(*) FROM audit WHERE action = 'request denied'").fetchone()[0]

    async def scenario():
        async with StallProxy(port) as proxy:
            gateway = await asyncio.to_thread(start_gateway, proxy.port, db)
            board = WireBoard(port, "dev1", key)
            try:
                proxy.mute()  # what the gateway sends from now on never reaches the broker
                board.send(1, 1)
                refused = await wait_until(refusals_audited, 10)  # committed with its reply
                os.kill(gateway.pid, signal.SIGKILL)
                gateway.wait(timeout=10)
                before_restart = dict(board.errors)
                with sqlite3.connect(db) as conn:
                    conn.execute("UPDATE devices SET down_seq = down_seq + ? WHERE id = 'dev1'", (sent_meanwhile,))
                gateway = await asyncio.to_thread(start_gateway, port, db)
                await wait_until(lambda: board.errors, 10)
                await asyncio.sleep(0.5)  # a second answer would come now
                return refused, before_restart, dict(board.errors), list(board.replies)
            finally:
                board.stop()
                stop_gateway(gateway, db)

    return asyncio.run(scenario())


def test_a_refused_request_whose_gateway_is_killed_before_the_broker_had_its_answer_is_answered_after_a_restart(
        mosquitto, tmp_path):
    assert refused_then_killed(mosquitto.port, tmp_path) == (True, {}, {1: DENIED}, [1])


def test_a_refused_request_whose_kept_answer_is_too_old_to_resend_is_refused_again_not_run(mosquitto, tmp_path):
    from microfang.gateway.requests import RESEND_WINDOW

    assert refused_then_killed(mosquitto.port, tmp_path, RESEND_WINDOW) == (True, {}, {1: DENIED}, [1])


# ---- several gateways on one PostgreSQL store ------------------------------------------------

BOARDS = 6
PER_BOARD = 150


def start_named_gateway(port, store, name, http):
    proc = subprocess.Popen([sys.executable, "-m", "microfang", "gateway", "--broker", f"mqtt://127.0.0.1:{port}",
                             "--store", store, "--name", name, "--http", str(http), "--memory", "none"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = proc.stdout.readline()
    assert line.startswith("gateway up"), line
    return proc


def requests_handled(http):
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{http}/metrics", timeout=5) as r:
        text = r.read().decode()
    return next(int(line.split()[1]) for line in text.splitlines() if line.startswith("microfang_requests_total"))


def test_two_gateways_on_postgresql_one_killed_mid_stream_lose_and_duplicate_nothing(mosquitto, pg_store):
    from wireboard import WireBoard

    from microfang.broker import free_port

    store = Store(pg_store)
    keys = {f"b{i}": store.add_device(f"b{i}", "f") for i in range(BOARDS)}
    store.close()
    http = {"gw-a": free_port(), "gw-b": free_port()}
    gateways = {name: start_named_gateway(mosquitto.port, pg_store, name, http[name]) for name in http}
    boards = [WireBoard(mosquitto.port, device, keys[device], fleet="f") for device in keys]
    try:
        for first in range(1, PER_BOARD + 1, 10):  # a steady stream: 10 per board at a time
            for board in boards:
                board.send(first, 10)
            time.sleep(0.02)
            if first == 51:  # mid-stream
                os.kill(gateways["gw-a"].pid, signal.SIGKILL)
                gateways["gw-a"].wait(timeout=10)
            if first == 91:
                handled_by_b = requests_handled(http["gw-b"])
                gateways["gw-a"] = start_named_gateway(mosquitto.port, pg_store, "gw-a", http["gw-a"])
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and any(len(b.replies) < PER_BOARD for b in boards):
            time.sleep(0.1)
        time.sleep(0.5)  # a duplicate would arrive now
        handled_by_a = requests_handled(http["gw-a"])
    finally:
        for board in boards:
            board.stop()
        for proc in gateways.values():
            proc.terminate()
            proc.wait(timeout=10)
    for board in boards:  # as the board's link sees them: a reply re-sent after the kill is dropped by its id
        assert sorted(set(board.replies)) == list(range(1, PER_BOARD + 1)), (board.device, len(board.replies))
    assert handled_by_a > 0 and handled_by_b > 0  # both took a share of the fleet
    store = Store(pg_store)
    count, bad = store.verify_audit()
    accepted = store.db.execute("SELECT device, detail FROM audit WHERE action = 'request'").fetchall()
    store.close()
    assert bad is None and count >= 2 * BOARDS * PER_BOARD
    assert len(accepted) == len(set(accepted)) == BOARDS * PER_BOARD  # each request accepted (and run) once
