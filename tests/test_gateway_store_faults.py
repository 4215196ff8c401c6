"""The store failing under a running gateway: a full disk (a small tmpfs mounted for the test),
a database locked by another process, a damaged database file, a second gateway on the same
SQLite file. Nothing is acknowledged before it is committed, so once the store works again
every request is answered exactly once and the audit chain holds; /healthz says 503 with the
reason meanwhile. A board on the wire is a paho client sending signed requests."""

import asyncio
import contextlib
import json
import os
import sqlite3
import subprocess
import sys
import urllib.error
import urllib.request

import pytest
from wireboard import KEY, WireBoard

from microfang.firmware.errors import MicrofangError
from microfang.gateway import Gateway
from microfang.gateway.db import StoreLocked
from microfang.gateway.store import Store

REQUESTS = 60


def healthz(port):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


async def until(check, seconds):
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while not check() and loop.time() < deadline:
        await asyncio.sleep(0.05)
    return check()


async def through_a_failure(broker_port, db, fail, recover, stays_failing=True):
    """REQUESTS requests: the first third before `fail()`, the rest while the store fails;
    /healthz is read while it fails (unless the failure does not last: not `stays_failing`),
    then `recover()`. Returns (reply ids, health while failing, health after, store failures
    counted, audit check, connections the store opened)."""
    async with Gateway(broker=f"mqtt://127.0.0.1:{broker_port}", db=db, http_port=0, quiet=True) as gw:
        gw.add_device("dev1", fleet="f", key=KEY)
        http_port = gw._http.sockets[0].getsockname()[1]
        board = WireBoard(broker_port)
        third = REQUESTS // 3
        board.send(1, third)
        await until(lambda: len(board.replies) >= third, 10)
        await asyncio.get_running_loop().run_in_executor(None, fail)
        board.send(third + 1, REQUESTS - third)
        failing = None
        if stays_failing:
            await until(lambda: gw.batches.problem is not None, 15)
            failing = await asyncio.get_running_loop().run_in_executor(None, healthz, http_port)
        await asyncio.get_running_loop().run_in_executor(None, recover)
        await until(lambda: len(board.replies) >= REQUESTS, 30)
        await asyncio.sleep(0.3)  # a duplicate would arrive now
        after = await asyncio.get_running_loop().run_in_executor(None, healthz, http_port)
        board.stop()
        return (sorted(board.replies), failing, after, gw.metrics["store_failures"], gw.store.verify_audit(),
                getattr(gw.store.db, "sessions", 1))


@pytest.fixture
def small_disk(tmp_path):
    """A 3 MB tmpfs mounted for this test (the suite runs as root, as CI does)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount)], capture_output=True,
                          text=True)
    if done.returncode != 0:
        pytest.fail(f"cannot mount a tmpfs for the full-disk test (needs root): {done.stderr.strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(folder):
    """Fill the file system under `folder` to the last byte."""
    with open(folder / "filler", "wb", buffering=0) as f:
        for size in (65536, 1):
            with contextlib.suppress(OSError):
                while True:
                    f.write(b"\0" * size)


def test_a_full_disk_loses_no_request_and_healthz_says_why(mosquitto, small_disk):
    replies, failing, after, failures, audit, _ = asyncio.run(through_a_failure(
        mosquitto.port, small_disk / "gw.db", lambda: fill(small_disk), lambda: (small_disk / "filler").unlink()))
    assert failures > 0  # the disk really was full for the gateway
    assert failing[0] == 503 and "full" in failing[1]["store"], failing
    assert replies == list(range(1, REQUESTS + 1))  # every request answered, exactly once
    assert after[0] == 200 and after[1]["store"] == "ok"
    assert audit[1] is None and audit[0] >= 2 * REQUESTS


def test_a_locked_database_loses_no_request_and_healthz_says_why(mosquitto, tmp_path):
    holder = {}

    def lock():  # another process's write transaction, held past the gateway's busy timeout
        holder["db"] = sqlite3.connect(tmp_path / "gw.db", isolation_level=None, check_same_thread=False)
        holder["db"].execute("BEGIN EXCLUSIVE")

    def unlock():
        holder["db"].execute("ROLLBACK")
        holder["db"].close()

    replies, failing, after, failures, audit, _ = asyncio.run(through_a_failure(mosquitto.port, tmp_path / "gw.db",
                                                                             lock, unlock))
    assert failures > 0
    assert failing[0] == 503 and "locked" in failing[1]["store"], failing
    assert replies == list(range(1, REQUESTS + 1))
    assert after[0] == 200 and audit[1] is None


def test_a_rolled_back_message_leaves_no_trace_in_the_audit_chain(tmp_path):
    store = Store(tmp_path / "gw.db")
    store.audit("dev1", "a1", "request", {"id": 1})
    with pytest.raises(OverflowError), store.transaction():
        store.audit("dev1", "a1", "request", {"id": 2})
        store.add_request("dev1", "a1", 1 << 63, "echo", b"")  # fails after the audit record was written
    store.audit("dev1", "a1", "request", {"id": 3})
    store.close()
    reopened = Store(tmp_path / "gw.db")
    assert reopened.verify_audit() == (2, None)


def test_a_damaged_database_is_a_one_line_error(tmp_path):
    db = tmp_path / "gw.db"
    db.write_bytes(b"this is not SQLite at all " * 200)
    with pytest.raises(MicrofangError, match=r"gw\.db: not a gateway database \(file is not a database\)$"):
        Store(db)


@pytest.mark.parametrize("command", [["status"], ["audit", "verify"], ["gateway", "--broker", "mqtt://127.0.0.1:1"]])
def test_a_damaged_database_makes_the_cli_say_so_in_one_line(tmp_path, command):
    db = tmp_path / "gw.db"
    db.write_bytes(b"\x00garbage" * 500)
    done = subprocess.run([sys.executable, "-m", "microfang", *command, "--db", str(db)], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "not a gateway database" in lines[0], done.stderr


def test_a_second_gateway_on_the_same_sqlite_file_is_refused(mosquitto, tmp_path):
    async def scenario():
        async with Gateway(broker=f"mqtt://127.0.0.1:{mosquitto.port}", db=tmp_path / "gw.db", quiet=True):
            with pytest.raises(StoreLocked, match=rf"gw\.db: another gateway \(pid {os.getpid()}\) is using"):
                async with Gateway(broker=f"mqtt://127.0.0.1:{mosquitto.port}", db=tmp_path / "gw.db", quiet=True):
                    pass
        # once the first has stopped, the file is free again
        async with Gateway(broker=f"mqtt://127.0.0.1:{mosquitto.port}", db=tmp_path / "gw.db", quiet=True):
            pass

    asyncio.run(scenario())


def test_a_second_gateway_process_on_the_same_sqlite_file_exits_with_one_line(mosquitto, tmp_path):
    args = [sys.executable, "-m", "microfang", "gateway", "--broker", f"mqtt://127.0.0.1:{mosquitto.port}",
            "--db", str(tmp_path / "gw.db"), "--http", "0"]
    first = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert first.stdout.readline().startswith("gateway up")
        second = subprocess.run(args, capture_output=True, text=True, timeout=60)
        assert second.returncode != 0
        lines = [line for line in second.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and f"another gateway (pid {first.pid}) is using this database" in lines[0], lines
    finally:
        first.terminate()
        first.wait(timeout=10)
