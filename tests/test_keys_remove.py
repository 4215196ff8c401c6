"""`microfang keys remove DEVICE`: the device's key stops working (a running gateway drops its
messages within registry.PRUNE_S), what the store kept of it goes, its active jobs fail, and the
audit log keeps its records plus one saying so; on SQLite and PostgreSQL."""

import asyncio
import json
import os
import subprocess
import sys

import pytest
from fleet import make_board, wait_until

from microfang.gateway import Gateway
from microfang.gateway.store import Store
from microfang.ops import remove_key


def microfang(*args):
    return subprocess.run([sys.executable, "-m", "microfang", *args], capture_output=True, text=True, timeout=60,
                          env=dict(os.environ))


@pytest.fixture(params=["sqlite", "postgresql"])
def where(request, tmp_path):
    if request.param == "sqlite":
        return str(tmp_path / "gw.db")
    return request.getfixturevalue("pg_store")


def test_removing_a_device_the_registry_does_not_have_is_one_line(where):
    Store(where).close()
    done = microfang("keys", "remove", "nobody", "--store", where)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 1 and len(lines) == 1 and "no device 'nobody'" in lines[0], done.stderr


def test_keys_remove_forgets_the_device_and_what_the_store_kept_of_it(where):
    store = Store(where)
    store.add_device("kitchen", "home")
    store.add_device("attic", "home")
    store.add_telemetry("kitchen", {"agents": {"a1": {"state": "running"}}})
    store.replicate("kitchen", "a1", [(1, b"note")])
    store.close()
    done = microfang("keys", "remove", "kitchen", "--store", where)
    assert done.returncode == 0, done.stderr
    assert [r["device"] for r in json.loads(microfang("keys", "list", "--json", "--store", where).stdout)] == ["attic"]
    store = Store(where)
    try:
        assert store.latest_telemetry("kitchen") is None and store.replica("kitchen", "a1") == []
    finally:
        store.close()


def test_keys_remove_fails_the_devices_active_jobs(where):
    store = Store(where)
    store.add_device("kitchen", "home")
    job = store.add_job("suspend", "kitchen", "a1")
    store.close()
    assert microfang("keys", "remove", "kitchen", "--store", where).returncode == 0
    [row] = json.loads(microfang("jobs", "--json", "--store", where).stdout)
    assert (row["id"], row["state"], row["detail"]) == (job, "failed", "device removed")


def test_keys_remove_is_in_the_audit_log_and_the_chain_holds(where):
    store = Store(where)
    store.add_device("kitchen", "home")
    with store.transaction():
        store.audit("kitchen", "a1", "request", {"kind": "echo"})
    store.close()
    assert microfang("keys", "remove", "kitchen", "--store", where).returncode == 0
    rows = json.loads(microfang("audit", "list", "--json", "--store", where).stdout)
    assert [(r["device"], r["action"]) for r in rows] == [("kitchen", "request"), ("kitchen", "device removed")]
    assert json.loads(microfang("audit", "verify", "--json", "--store", where).stdout) == {"intact": True, "records": 2}


def test_a_running_gateway_drops_the_messages_of_a_device_removed_meanwhile(mosquitto, tmp_path):
    async def scenario():
        async with Gateway(broker=f"mqtt://127.0.0.1:{mosquitto.port}", db=tmp_path / "gw.db", quiet=True) as gw:
            board, _ = make_board("b1", gw.add_device("b1", fleet="test"), mosquitto.port)
            run = asyncio.create_task(board.run(15_000))
            online = await wait_until(lambda: gw.devices["b1"].get("online"))
            await asyncio.to_thread(remove_key, tmp_path / "gw.db", "b1")
            forgotten = await wait_until(lambda: "b1" not in gw.devices, 10)
            dropped = gw.metrics["dropped_unknown-device"]
            refused = await wait_until(lambda: gw.metrics["dropped_unknown-device"] > dropped, 5)  # telemetry: 200 ms
            board.stop()
            await run
            return online, forgotten, refused

    assert asyncio.run(scenario()) == (True, True, True)
