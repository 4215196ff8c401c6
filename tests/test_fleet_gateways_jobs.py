"""Deploys and migrations with two gateway processes on one PostgreSQL store. The broker's
shared subscription hands each board answer to either gateway; the one that does not own the
job forwards it to the owner through the store (gateway/jobrunner.py), so transfers finish; a
job whose gateway is killed is taken over by the other, which probes the boards and goes on.
Boards: the real firmware on CPython and microfang's MicroPython at the ESP32 heap (110 KB)."""

import asyncio
import os
import signal

import pytest
from boards_runtime import RunningBoard
from fleet import wait_until
from test_fleet_durability import start_named_gateway
from helpers import agent_wat, build_bundle
from signing_keys import board_trust

from microfang.broker import free_port
from microfang.deploy import queue_deploy, queue_migrate, wait
from microfang.gateway.jobs import JobsFailed
from microfang.gateway.jobstore import JOB_ACTIVE
from microfang.gateway.store import Store

BOARDS = {"c1": "cpython", "mp1": "micropython"}


def many_functions(count):
    """An agent whose module is mostly code (`count` small functions, each called once per event),
    then a log line "big ok": a bundle of many chunks."""
    body = "\n".join(f"""(func $f{i} (param i32) (result i32)
      (i32.add (i32.xor (i32.mul (local.get 0) (i32.const {i * 7 + 3})) (i32.const {i * 13 + 11})) (i32.const {i})))"""
                     for i in range(count))
    calls = " ".join(f"(drop (call $f{i} (i32.const 1)))" for i in range(count))
    wat = agent_wat(body + f"""
      (data (i32.const 0) "big ok")
      (func (export "mf_on_event") (param i32 i32 i32) (result i32)
        {calls} (call $log (i32.const 0) (i32.const 6)) (i32.const 0))""",
                    abi='(memory (export "memory") 1 1) (func (export "mf_alloc") (param i32) (result i32) '
                        "(i32.const 1024))")
    return build_bundle(wat, **{"sandbox.agent_id": "big", "sandbox.memory.max_heap_kb": 2,
                                "sandbox.memory.stack_size_kb": 2, "sandbox.memory.grow_limit_pages": 0,
                                "sandbox.fuel.max_fuel": 1_000_000})


@pytest.fixture
def two_gateways(mosquitto, pg_store):
    """gw-a and gw-b on `pg_store`, the boards registered first: {name: process}."""
    store = Store(pg_store)
    for device in BOARDS:
        store.add_device(device, "test")
    store.close()
    procs = {name: start_named_gateway(mosquitto.port, pg_store, name, free_port()) for name in ("gw-a", "gw-b")}
    yield procs
    for proc in procs.values():
        if proc.poll() is None:
            proc.send_signal(signal.SIGCONT)
            proc.terminate()
            proc.wait(timeout=20)


async def boards_up(mosquitto, pg_store, tmp_path, micropython, running):
    store = Store(pg_store)
    devices = store.devices()
    started = {}
    for device, runtime in BOARDS.items():
        config = {"device": device, "fleet": "test", "key": devices[device]["key"], "host": "127.0.0.1",
                  "port": mosquitto.port, **board_trust(), "telemetry_ms": 1000}
        started[device] = await RunningBoard(runtime, config, tmp_path, running.get(device, []), micropython).start()
    online = await wait_until(lambda: all(d["online"] for d in store.devices().values()), 30)
    store.close()
    assert online, {name: b.lines() for name, b in started.items()}
    return started


def jobs_of(pg_store, ids, timeout):
    try:
        return wait(pg_store, ids, timeout)
    except JobsFailed as e:
        return e.jobs


def test_a_deploy_and_a_migration_finish_with_two_gateways(mosquitto, pg_store, two_gateways, tmp_path,
                                                           micropython, example_bundle):
    (tmp_path / "echo.mfa").write_bytes(example_bundle("echo"))
    (tmp_path / "hello.mfa").write_bytes(example_bundle("hello"))

    async def scenario():
        boards = await boards_up(mosquitto, pg_store, tmp_path, micropython, {})
        try:
            deployed = await asyncio.to_thread(jobs_of, pg_store, queue_deploy(pg_store, tmp_path / "echo.mfa",
                                                                               list(BOARDS)), 30)
            # Only what the operator signed moves: hello is deployed, then migrated.
            await asyncio.to_thread(jobs_of, pg_store, queue_deploy(pg_store, tmp_path / "hello.mfa", ["c1"]), 30)
            migrated = await asyncio.to_thread(jobs_of, pg_store, queue_migrate(pg_store, "hello", "c1", "mp1"), 30)
            ticking = await wait_until(lambda: any(ln.startswith("[hello] log tick") for ln in boards["mp1"].lines()),
                                       10)
        finally:
            lines = {name: await b.stop() for name, b in boards.items()}
        return deployed, migrated, ticking, lines

    deployed, migrated, ticking, lines = asyncio.run(scenario())
    assert [(j["target"] or j["device"], j["state"], j["detail"]) for j in deployed] == \
        [("c1", "done", "version 1 running"), ("mp1", "done", "version 1 running")], lines
    assert [(j["state"], j["detail"].split(" (")[0]) for j in migrated] == [("done", "moved from c1 to mp1")], lines
    assert ticking, lines["mp1"]  # the agent goes on on the MicroPython board
    for name in BOARDS:
        assert "[echo] state running" in lines[name], lines[name]
    store = Store(pg_store)
    assert store.verify_audit()[1] is None
    store.close()


def test_a_deploy_whose_gateway_is_killed_is_finished_by_the_other(mosquitto, pg_store, two_gateways, tmp_path,
                                                                   micropython):
    big = many_functions(550)  # several windows of chunks: the transfer is under way when its gateway dies
    assert len(big) > 16_000
    (tmp_path / "big.mfa").write_bytes(big)

    async def scenario():
        boards = await boards_up(mosquitto, pg_store, tmp_path, micropython, {})
        store = Store(pg_store)
        try:
            [job_id] = queue_deploy(pg_store, tmp_path / "big.mfa", ["c1"])
            assert await wait_until(lambda: store.jobs([job_id])[0]["owner"] != "", 10)
            owner = store.jobs([job_id])[0]["owner"]
            two_gateways[owner].send_signal(signal.SIGSTOP)  # at once: mid-transfer
            at_kill = store.jobs([job_id])[0]
            os.kill(two_gateways[owner].pid, signal.SIGKILL)
            two_gateways[owner].wait(timeout=10)
            [done] = await asyncio.to_thread(jobs_of, pg_store, [job_id], 40)
        finally:
            store.close()
            lines = {name: await b.stop() for name, b in boards.items()}
        return owner, at_kill, done, lines

    owner, at_kill, done, lines = asyncio.run(scenario())
    assert at_kill["state"] in JOB_ACTIVE and at_kill["progress"] < len(big), at_kill
    survivor = ({"gw-a", "gw-b"} - {owner}).pop()
    assert (done["state"], done["detail"], done["owner"]) == ("done", "version 1 running", survivor), (done["detail"], lines)
    assert "[big] state running" in lines["c1"] and "[big] log big ok" in lines["c1"], lines["c1"]
    store = Store(pg_store)
    assert store.verify_audit()[1] is None
    store.close()
