"""The sandbox and supervisor against adversarial agents: each gets a clear error and the
supervisor and the other agents keep running."""

import asyncio

import pytest
from agents import (COUNT_THEN_SPIN, DEEP_RECURSION, HELLO, INFINITE_LOOP, MEMORY_BOMB, NEVER_RESTART, START_LOOP,
                    SUB_PAGE, UNREACHABLE, log_call, many_locals, nested_blocks, unbuilt)
from helpers import agent_wat, build_bundle, raw_bundle

from microfang.boards import PROFILES
from microfang.firmware import abi, bundle, cbor
from microfang.firmware.errors import BundleError, SandboxError, WasmError
from microfang.firmware.supervisor import EXHAUSTED, FAILED, RUNNING, Supervisor

def events(sup):
    """Collect (agent, kind, text) reports."""
    seen = []
    sup._report = lambda agent_id, kind, text: seen.append((agent_id, kind, text))
    return seen


def run_steps(sup, n=20):
    for _ in range(n):
        sup.step()


def test_hello_agent_logs_on_start():
    sup = Supervisor()
    seen = events(sup)
    sup.spawn(build_bundle(HELLO))
    run_steps(sup, 1)
    assert ("a1", "log", "hi") in seen


def test_infinite_loop_exhausts_fuel_and_other_agents_keep_running():
    sup = Supervisor()
    seen = events(sup)
    sup.spawn(build_bundle(INFINITE_LOOP, **{"sandbox.agent_id": "spinner", "sandbox.fuel.max_fuel": 40_000,
                                             "sandbox.fuel.refuel_interval_ms": 60_000}))
    sup.spawn(build_bundle(HELLO, **{"sandbox.agent_id": "good"}))
    run_steps(sup, 3)
    assert sup.stats("spinner")["state"] == EXHAUSTED
    assert sup.stats("spinner")["fuel"] == 0
    assert ("spinner", "fault", "out of fuel: suspended until refuel (memory kept)") in seen
    assert ("good", "log", "hi") in seen
    assert sup.stats("good")["state"] == RUNNING


def test_fuel_exhaustion_keeps_memory_and_resumes_after_refuel():
    now = [0]
    sup = Supervisor(clock=lambda: now[0])
    sup.spawn(build_bundle(COUNT_THEN_SPIN, **{"sandbox.fuel.max_fuel": 5_000, "sandbox.fuel.refuel_amount": 5_000,
                                                "sandbox.fuel.refuel_interval_ms": 100}))
    for _ in range(3):
        sup.post("a1", abi.EV_MESSAGE, b"")
    run_steps(sup, 5)  # start + 2 messages counted, the next one spins out of fuel
    assert sup.stats("a1")["state"] == EXHAUSTED
    assert sup.agents["a1"].sandbox.memory_snapshot()[0] == 3
    now[0] = 100
    sup.post("a1", abi.EV_MESSAGE, b"")
    run_steps(sup, 3)  # refuel event + the message left queued + the new one: counting goes on
    assert sup.agents["a1"].sandbox.memory_snapshot()[0] == 6
    assert sup.stats("a1")["exhausted"] == 1


def test_loop_in_start_function_is_refused_at_spawn():
    sup = Supervisor()
    with pytest.raises(SandboxError, match="cannot start: ran past its time slice of 50000 fuel"):
        sup.spawn(build_bundle(START_LOOP))
    with pytest.raises(SandboxError, match="cannot start: out of fuel"):
        sup.spawn(build_bundle(START_LOOP, **{"sandbox.fuel.max_fuel": 1000}))
    assert sup.agents == {}


@pytest.mark.parametrize(
    ("wat", "problem"),
    [
        (nested_blocks(200), "blocks nested deeper than the engine allows"),
        (many_locals(200), "compiling function overran its stack height limit"),
        (agent_wat('(func (export "mf_on_event") (param i32 i32 i32) (result i32) (i32.const 0)) '
                   '(func (export "mf_on_event\\00x") (param i32 i32 i32) (result i32) (i32.const 1))'),
         "a name contains a NUL byte"),
    ],
)
def test_what_the_board_engine_refuses_is_refused_at_build(wat, problem):
    with pytest.raises(WasmError, match="the agent engine refuses it: " + problem):
        build_bundle(wat)


def test_nesting_up_to_the_engine_bound_builds():
    from microfang import _wasm3

    build_bundle(nested_blocks(_wasm3.MAX_BLOCK_DEPTH))
    with pytest.raises(WasmError, match="nested deeper"):
        build_bundle(nested_blocks(_wasm3.MAX_BLOCK_DEPTH + 1))


def test_deep_recursion_traps_only_that_agent():
    sup = Supervisor()
    seen = events(sup)
    sup.spawn(build_bundle(DEEP_RECURSION, **{"sandbox.agent_id": "deep", "sandbox.fuel.max_fuel": 10**9,
                                               **NEVER_RESTART}))
    sup.spawn(build_bundle(HELLO, **{"sandbox.agent_id": "good"}))
    run_steps(sup, 2)
    faults = [t for a, k, t in seen if a == "deep" and k == "fault"]
    assert faults and "stack overflow" in faults[0]
    assert sup.stats("deep")["state"] == FAILED
    assert ("good", "log", "hi") in seen


def test_memory_bomb_stops_at_the_cap():
    sup = Supervisor()
    seen = events(sup)
    sup.spawn(build_bundle(MEMORY_BOMB, **{"sandbox.memory.max_heap_kb": 192, "sandbox.memory.grow_limit_pages": 100}))
    run_steps(sup, 1)
    assert ("a1", "log", "3") in seen  # 192 KiB = 3 pages; memory.grow returned -1 after that
    assert sup.stats("a1")["memory"] == 192 * 1024


def test_sub_page_cap_traps_at_the_byte():
    sup = Supervisor()
    seen = events(sup)
    sup.spawn(build_bundle(SUB_PAGE, **{"sandbox.memory.max_heap_kb": 8, **NEVER_RESTART}))
    run_steps(sup, 1)
    assert sup.stats("a1")["memory"] == 8192
    assert any("out of bounds memory access" in t for a, k, t in seen if k == "fault")


def test_huge_declared_memory_is_refused_at_build():
    wat = agent_wat("""(func (export "mf_on_event") (param i32 i32 i32) (result i32) (i32.const 0))""",
                    abi='(memory (export "memory") 100) (func (export "mf_alloc") (param i32) (result i32) (i32.const 0))')
    with pytest.raises(WasmError, match="declares 100 pages .* above the cap of 64 KiB"):
        build_bundle(wat)


def test_huge_declared_memory_is_refused_at_spawn():
    with pytest.raises(SandboxError, match="declares 100..None pages, above the memory cap of 65536 bytes"):
        Supervisor().spawn(raw_bundle(unbuilt("", memory='(memory (export "memory") 100)')))


def test_disallowed_import_is_refused_at_build():
    wat = agent_wat("""(func (export "mf_on_event") (param i32 i32 i32) (result i32) (i32.const 0))""",
                    imports='(import "mf" "publish" (func (param i32 i32 i32 i32) (result i32)))')
    with pytest.raises(WasmError, match="imports mf.publish, which the manifest does not allow"):
        build_bundle(wat)


def test_disallowed_import_is_refused_at_spawn():
    with pytest.raises(SandboxError, match="imports env.system, which its manifest does not allow"):
        Supervisor().spawn(raw_bundle(unbuilt('(import "env" "system" (func))')))


@pytest.mark.parametrize("wasm", [b"", b"\x00asm", b"\x00asm\x01\x00\x00\x00\x01\xff\xff", b"hello world"])
def test_malformed_wasm_is_refused_at_spawn(wasm):
    with pytest.raises(SandboxError, match="malformed wasm|cannot load|not fuel-metered"):
        Supervisor().spawn(raw_bundle(wasm))


def test_truncated_metered_module_is_refused_at_spawn():
    good = build_bundle(HELLO)
    manifest, wasm = bundle.decode(good)
    with pytest.raises(SandboxError):
        Supervisor().spawn(manifest=manifest, wasm=wasm[: len(wasm) // 2])


@pytest.mark.parametrize(
    ("ptr", "length", "fault"),
    [
        (0xFFFF0000, 10, "agent a1: log: 10 bytes at 0xffff0000 are outside its 65536 byte memory"),
        (65530, 10, "agent a1: log: 10 bytes at 0xfffa are outside its 65536 byte memory"),
        (0, 100000, "agent a1: log: length 100000 is outside 0..4096 bytes"),
        (0, -1, "agent a1: log: length -1 is outside 0..4096 bytes"),
    ],
)
def test_bad_pointer_or_length_to_a_host_function_faults_only_that_call(ptr, length, fault):
    sup = Supervisor()
    seen = events(sup)
    sup.spawn(build_bundle(log_call(ptr, length), **NEVER_RESTART))
    run_steps(sup, 1)
    assert ("a1", "fault", fault) in seen


def test_trap_restarts_with_backoff_then_fails():
    now = [0]
    sup = Supervisor(clock=lambda: now[0])
    sup.spawn(build_bundle(UNREACHABLE, **{"agent.restart": {"policy": "on-failure", "max_restarts": 2,
                                                             "backoff_ms": 100}}))
    sup.step()
    assert sup.stats("a1")["state"] == "backoff"
    now[0] = 99
    sup.step()
    assert sup.stats("a1")["state"] == "backoff"  # not before the delay
    now[0] = 100
    sup.step()  # restarted, traps again on its start event; the next delay doubles
    assert sup.agents["a1"].restart_at == 300
    now[0] = 300
    sup.step()
    assert sup.stats("a1")["state"] == FAILED
    assert sup.stats("a1")["restarts"] == 2


def test_suspended_agent_gets_no_events_until_resumed():
    sup = Supervisor()
    seen = events(sup)
    sup.spawn(build_bundle(HELLO))
    sup.suspend("a1")
    run_steps(sup, 3)
    assert ("a1", "log", "hi") not in seen
    sup.resume("a1")
    run_steps(sup, 1)
    assert ("a1", "log", "hi") in seen


def test_reclaim_removes_the_agent_and_its_id_can_be_reused():
    sup = Supervisor()
    sup.spawn(build_bundle(HELLO))
    sup.reclaim("a1")
    assert "a1" not in sup.agents
    with pytest.raises(SandboxError, match="no agent 'a1'"):
        sup.post("a1", abi.EV_MESSAGE)
    sup.spawn(build_bundle(HELLO))
    assert sup.stats("a1")["state"] == RUNNING


def test_full_queue_drops_events_and_counts_them():
    sup = Supervisor()
    sup.spawn(build_bundle(HELLO))
    accepted = [sup.post("a1", abi.EV_MESSAGE, b"x") for _ in range(40)]
    assert accepted.count(False) == 40 - 31  # the start event holds one of the 32 places
    assert sup.stats("a1")["dropped"] == 9


def test_timers_fire_on_schedule_under_asyncio():
    sup = Supervisor()
    seen = events(sup)
    sup.spawn(build_bundle(HELLO, **{"agent.timers": [{"id": 7, "every_ms": 20}]}))
    asyncio.run(sup.run(150))
    logs = [t for a, k, t in seen if k == "log"]
    assert 4 <= len(logs) <= 9  # start + one per 20 ms over 150 ms, with scheduling slack
    assert sup.stats("a1")["events"] == len(logs)


def test_reclaimed_agents_give_their_runtimes_back():
    import gc

    def live_runtimes():
        gc.collect()
        return sum(1 for o in gc.get_objects() if type(o).__name__ == "Runtime")

    before = live_runtimes()
    sup = Supervisor()
    data = build_bundle(HELLO)
    sup.spawn(data)
    assert live_runtimes() == before + 1  # the count sees runtimes at all
    sup.reclaim("a1")
    for _ in range(200):
        sup.spawn(data)
        sup.step()
        sup.reclaim("a1")
    assert live_runtimes() == before


def test_restart_policy_always_ignores_max_restarts():
    now = [0]
    sup = Supervisor(clock=lambda: now[0])
    sup.spawn(build_bundle(UNREACHABLE, **{"agent.restart": {"policy": "always", "max_restarts": 1, "backoff_ms": 10}}))
    for _ in range(5):
        sup.step()
        now[0] += 10_000
    assert sup.stats("a1")["state"] == "backoff"
    assert sup.stats("a1")["restarts"] == 5


@pytest.mark.parametrize(
    ("path", "value", "problem"),
    [
        (("memory",), None, "memory must be a table"),
        (("memory", "max_bytes"), 1 << 40, "memory.max_bytes must be an integer in 1..4194304"),
        (("fuel", "max"), "lots", "fuel.max must be an integer"),
        (("agent_id",), 7, "agent_id is missing or not a str"),
        (("timers",), [{"id": 1, "every_ms": 0}], "timers.every_ms must be an integer in 10.."),
        (("permissions", "allowed"), ["log", "system"], "unknown host function 'system'"),
    ],
)
def test_forged_bundle_manifest_is_refused_with_the_field_named(path, value, problem):
    doc = cbor.loads(build_bundle(HELLO))
    table = doc["manifest"]
    for key in path[:-1]:
        table = table[key]
    table[path[-1]] = value
    sup = Supervisor()
    with pytest.raises(BundleError, match=problem):
        sup.spawn(cbor.dumps(doc))
    with pytest.raises(BundleError, match=problem):
        sup.spawn(manifest=doc["manifest"], wasm=doc["wasm"])
    assert sup.agents == {}


MEMORY_AGENT = agent_wat(
    """
  (data (i32.const 0) "remember me")
  (func (export "mf_on_event") (param i32 i32 i32) (result i32)
    (if (i32.eq (local.get 0) (i32.const 1))
      (then (return (call $append (i32.const 0) (i32.const 11)))))
    ;; any other event: read the latest record to 64 and log what came back
    (call $log (i32.const 64) (call $read (i32.const 0) (i32.const 64) (i32.const 32)))
    (i32.const 0))""",
    imports='(import "mf" "log" (func $log (param i32 i32))) '
            '(import "mf" "mem_append" (func $append (param i32 i32) (result i32))) '
            '(import "mf" "mem_read" (func $read (param i32 i32 i32) (result i32)))',
)
MEMORY_PERMS = {"sandbox.permissions.allowed_host_functions": ["log", "mem_append", "mem_read"]}


def ram_flash():
    from microfang.firmware.blockdev import RAMBlockDevice
    from microfang.firmware.port import Flash

    return Flash(RAMBlockDevice(4096, 16))


def test_mem_append_and_mem_read_go_through_the_agents_own_log():
    sup = Supervisor(flash=ram_flash())
    seen = events(sup)
    sup.spawn(build_bundle(MEMORY_AGENT, **MEMORY_PERMS))
    sup.post("a1", abi.EV_MESSAGE, b"")
    run_steps(sup, 2)
    assert ("a1", "log", "remember me") in seen
    assert [p for _, p in sup.log("a1").records()] == [b"remember me"]


def test_an_agent_cannot_read_another_agents_log():
    flash = ram_flash()
    sup = Supervisor(flash=flash)
    seen = events(sup)
    sup.spawn(build_bundle(MEMORY_AGENT, **MEMORY_PERMS))  # a1 appends on start
    run_steps(sup, 1)
    reader = MEMORY_AGENT.replace('(i32.eq (local.get 0) (i32.const 1))', '(i32.const 0)')
    sup.spawn(build_bundle(reader, **{**MEMORY_PERMS, "sandbox.agent_id": "b2"}))
    run_steps(sup, 1)  # b2's start event reads "its latest record": it has none
    assert [t for a, k, t in seen if a == "b2" and k == "log"] == []
    assert any(a == "b2" and k == "fault" and "length -5" in t for a, k, t in seen)  # E_NOT_FOUND as a length
    assert sup.log("b2").last_seq == 0 and sup.log("a1").last_seq == 1


def test_mem_functions_need_the_manifests_permission():
    with pytest.raises(WasmError, match="imports mf.mem_append, which the manifest does not allow"):
        build_bundle(MEMORY_AGENT)


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_every_board_profile_states_the_task_stack_its_firmware_is_built_with(profile):
    import re

    from microfang.boards import BOARDS_DIR

    board = PROFILES[profile]
    header = (BOARDS_DIR / board.MICROPYTHON_BOARD / "mpconfigboard.h").read_text()
    stated = re.search(r"#define MICROPY_TASK_STACK_SIZE \((\d+) \* 1024\)", header)
    assert stated and int(stated.group(1)) * 1024 == board.TASK_STACK_BYTES
    # the device suite measures the C stack per wasm call and holds the call bound to 8 KiB
    assert board.TASK_STACK_BYTES >= 2 * 8 * 1024
