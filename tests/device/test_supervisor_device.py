# The supervisor and sandbox specifications that must hold on a board: run under MicroPython
# with an ESP32 heap and under CPython (tests/test_device_runtimes.py). Plain asserts only.
import gc

from microfang.firmware import abi
from microfang.firmware.errors import BundleError, SandboxError
from microfang.firmware.supervisor import EXHAUSTED, FAILED, RUNNING, Supervisor


class Recorder:
    def __init__(self):
        self.seen = []

    def __call__(self, agent_id, kind, text):
        self.seen.append((agent_id, kind, text))

    def texts(self, agent_id, kind):
        return [t for a, k, t in self.seen if a == agent_id and k == kind]


def started(data, clock=None):
    rec = Recorder()
    sup = Supervisor(report=rec) if clock is None else Supervisor(report=rec, clock=clock)
    sup.spawn(data)
    return sup, rec


def steps(sup, n):
    for _ in range(n):
        sup.step()


def raises(kind, fn, *args):
    try:
        fn(*args)
    except kind as e:
        return str(e)
    raise AssertionError("expected %s" % kind.__name__)


def test_hello_logs_on_start(bundle):
    sup, rec = started(bundle("hello"))
    steps(sup, 1)
    assert rec.texts("a1", "log") == ["hi"], rec.seen


def test_infinite_loop_exhausts_fuel_and_others_keep_running(bundle):
    sup, rec = started(bundle("spinner"))
    sup.spawn(bundle("hello"))
    steps(sup, 3)
    assert sup.stats("spinner")["state"] == EXHAUSTED
    assert sup.stats("spinner")["fuel"] == 0
    assert rec.texts("a1", "log") == ["hi"]
    assert sup.stats("a1")["state"] == RUNNING


def test_exhausted_agent_keeps_memory_and_resumes_after_refuel(bundle):
    now = [0]
    sup, rec = started(bundle("counter"), clock=lambda: now[0])
    for _ in range(3):
        sup.post("a1", abi.EV_MESSAGE, b"")
    steps(sup, 5)
    assert sup.stats("a1")["state"] == EXHAUSTED
    assert sup.agents["a1"].sandbox.read(0, 1, "test") == b"\x03"
    now[0] = 100
    sup.post("a1", abi.EV_MESSAGE, b"")
    steps(sup, 3)
    assert sup.agents["a1"].sandbox.read(0, 1, "test") == b"\x06"


def test_loop_in_start_function_is_refused_at_spawn(bundle):
    sup = Supervisor()
    assert "cannot start: ran past its time slice" in raises(SandboxError, sup.spawn, bundle("start_loop"))
    assert sup.agents == {}


def test_deep_recursion_traps_only_that_agent(bundle):
    sup, rec = started(bundle("deep"))
    sup.spawn(bundle("hello"))
    steps(sup, 2)
    faults = rec.texts("deep", "fault")
    assert faults and "stack overflow" in faults[0], faults
    assert sup.stats("deep")["state"] == FAILED
    assert rec.texts("a1", "log") == ["hi"]


def test_memory_bomb_stops_at_the_cap(bundle):
    sup, rec = started(bundle("bomb"))
    steps(sup, 1)
    assert rec.texts("a1", "log") == ["1"], rec.seen  # memory.grow refused: still one (capped) page
    assert sup.stats("a1")["memory"] == 12 * 1024


def test_sub_page_cap_traps_at_the_byte(bundle):
    sup, rec = started(bundle("sub_page"))
    steps(sup, 1)
    assert sup.stats("a1")["memory"] == 8192
    faults = rec.texts("a1", "fault")
    assert faults and "out of bounds memory access" in faults[0], faults


def test_a_link_short_of_memory_reclaims_the_agent_holding_the_most_then_the_next(bundle):
    sup, rec = started(bundle("small"))  # a1: 2 KB of linear memory
    sup.spawn(bundle("big_wasm"))  # big: 8 KB
    assert sup.relieve_memory("MemoryError: 147 bytes") == "big"
    assert sorted(sup.agents) == ["a1"]
    assert rec.texts("big", "fault") == ["reclaimed: the board's link ran out of memory (MemoryError: 147 bytes) "
                                         "while it held 8192 B"], rec.seen
    assert sup.relieve_memory("again") == "a1"
    assert sup.relieve_memory("again") is None and not sup.agents


def test_huge_declared_memory_is_refused_at_spawn(bundle):
    message = raises(SandboxError, Supervisor().spawn, bundle("huge_memory"))
    assert "above the memory cap of 8192 bytes" in message, message


def test_disallowed_import_is_refused_at_spawn(bundle):
    message = raises(SandboxError, Supervisor().spawn, bundle("bad_import"))
    assert "imports env.system, which its manifest does not allow" in message, message


def test_malformed_wasm_is_refused_at_spawn(bundle):
    raises(SandboxError, Supervisor().spawn, bundle("malformed"))


def test_truncated_bundle_is_refused(bundle):
    data = bundle("hello")
    assert raises(BundleError, Supervisor().spawn, data[: len(data) // 2]).startswith("not a bundle: ")


def test_out_of_bounds_pointer_faults_with_a_clear_error(bundle):
    sup, rec = started(bundle("oob"))
    steps(sup, 1)
    assert rec.texts("a1", "fault") == ["agent a1: log: 10 bytes at 0xffff0000 are outside its 8192 byte memory"]


def test_oversized_length_faults_with_a_clear_error(bundle):
    sup, rec = started(bundle("too_long"))
    steps(sup, 1)
    assert rec.texts("a1", "fault") == ["agent a1: log: length 100000 is outside 0..4096 bytes"]


def test_trap_restarts_with_backoff_then_fails(bundle):
    now = [0]
    sup, rec = started(bundle("trap"), clock=lambda: now[0])
    sup.step()
    assert sup.stats("a1")["state"] == "backoff"
    now[0] = 100
    sup.step()
    now[0] = 300
    sup.step()
    assert sup.stats("a1")["state"] == FAILED
    assert sup.stats("a1")["restarts"] == 2


def test_reclaimed_agents_give_their_memory_back(bundle):
    if not hasattr(gc, "mem_free"):
        return  # CPython: tests/test_sandbox.py checks runtimes are freed
    sup = Supervisor()
    data = bundle("hello")
    gc.collect()
    empty = gc.mem_free()
    sup.spawn(data)
    sup.step()
    gc.collect()
    one_agent = empty - gc.mem_free()
    sup.reclaim("a1")
    for _ in range(30):
        sup.spawn(data)
        sup.step()
        sup.reclaim("a1")
    gc.collect()
    left = empty - gc.mem_free()
    assert left < one_agent // 2, (one_agent, left)  # 30 leaked agents would be 30 * one_agent


def test_a_running_agent_keeps_only_the_manifest_fields_the_board_reads(bundle):
    sup, _ = started(bundle("example_hello"))  # its manifest also has description, module, vector_memory, ...
    kept = sup.agents["hello"].manifest
    assert sorted(kept) == ["agent_id", "budgets", "fuel", "memory", "memory_log", "permissions", "restart", "timers",
                            "version"], sorted(kept)
    assert sorted(kept["permissions"]) == ["allowed", "denied"], kept["permissions"]  # no tool_access, a2a_access
    assert kept["permissions"]["allowed"] == ["log"] and kept["timers"] == [{"id": 1, "every_ms": 200}], kept


def test_agents_with_the_same_settings_share_their_manifest_tables(bundle):
    from microfang.firmware import bundle as bundles

    sup = Supervisor()
    sup.spawn(bundle("hello"))
    manifest, wasm = bundles.decode(bundle("hello"))
    manifest["agent_id"] = "a2"
    sup.spawn(manifest=manifest, wasm=wasm)
    manifest, wasm = bundles.decode(bundle("hello"))
    manifest["agent_id"] = "a3"
    manifest["fuel"]["max"] += 1
    sup.spawn(manifest=manifest, wasm=wasm)
    one, two, three = (sup.agents[a].manifest for a in ("a1", "a2", "a3"))
    assert one["fuel"] is two["fuel"] and one["restart"] is two["restart"] and one["permissions"] is two["permissions"]
    assert three["fuel"] is not one["fuel"] and three["fuel"]["max"] == one["fuel"]["max"] + 1
    assert three["restart"] is one["restart"]
    assert (one["agent_id"], two["agent_id"], three["agent_id"]) == ("a1", "a2", "a3")


def test_example_agents_run_their_timers_and_requests(bundle):
    from microfang.firmware import cbor, port

    replies = []

    def outbox(agent_id, kind, target, body, request_id):
        replies.append((agent_id, kind, target))
        if kind == "request":
            reply = {"id": request_id, "ok": True, "text": "sleep saves power"}
            sup.post(agent_id, abi.EV_REPLY, cbor.dumps(reply))
        return 0

    from microfang.firmware.blockdev import RAMBlockDevice
    from microfang.firmware.port import Flash

    rec = Recorder()
    readings = [2000, 3200, 3300, 2500]
    flash = Flash(RAMBlockDevice(512, 16), "/mf_t")
    sup = Supervisor(report=rec, outbox=outbox, sensors=lambda agent_id, channel: readings[len(rec.seen) % 4],
                     flash=flash)
    for name in ("example_hello", "example_threshold", "example_ask"):
        sup.spawn(bundle(name))
    port.asyncio.run(sup.run(700))
    assert rec.texts("hello", "log")[:3] == ["hello from a wasm agent", "tick 1", "tick 2"], rec.seen
    assert any(t.startswith("ALERT temperature high") for t in rec.texts("threshold", "log")), rec.seen
    assert rec.texts("ask", "log") == ["asking the gateway's LLM", "sleep saves power"], rec.seen
    assert ("ask", "request", "llm") in replies
    assert [p for _, p in sup.log("ask").records()] == [b"sleep saves power"]
    flash.unmount()
    port.asyncio.new_event_loop()  # MicroPython's loop keeps its last task (and this supervisor) otherwise
