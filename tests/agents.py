"""The agents the specifications run: inline WAT plus manifest changes, built with the real
toolchain. test_sandbox.py runs them on CPython; tests/device/ runs the same bundles under
MicroPython with board heaps."""

from __future__ import annotations

from pathlib import Path

from helpers import agent_wat, build_bundle, raw_bundle

from microfang.tools.build import cap_memory
from microfang.tools.wasm import binary as wb
from microfang.tools.wasm.meter import meter
from microfang.tools.wasm.wasmtools import parse_wat

ON_EVENT = '(func (export "mf_on_event") (param i32 i32 i32) (result i32) {body})'
NEVER_RESTART = {"agent.restart": {"policy": "never"}}

HELLO = agent_wat("""
  (data (i32.const 0) "hi")
  (func (export "mf_on_event") (param i32 i32 i32) (result i32)
    (call $log (i32.const 0) (i32.const 2)) (i32.const 0))""")

# Logs "hi" on its start event and traps on every later one (a timer's): restarts again and again.
TRAP_AFTER_START = agent_wat("""
  (data (i32.const 16) "hi")
  (func (export "mf_on_event") (param i32 i32 i32) (result i32)
    (i32.store (i32.const 0) (i32.add (i32.load (i32.const 0)) (i32.const 1)))
    (call $log (i32.const 16) (i32.const 2))
    (if (i32.gt_u (i32.load (i32.const 0)) (i32.const 1)) (then unreachable))
    (i32.const 0))""")

INFINITE_LOOP = agent_wat(ON_EVENT.format(body="(loop $forever (br $forever)) (i32.const 0)"))

# Counts its events in memory at address 0, then spins forever on the third one.
COUNT_THEN_SPIN = agent_wat(ON_EVENT.format(body="""
    (i32.store (i32.const 0) (i32.add (i32.load (i32.const 0)) (i32.const 1)))
    (if (i32.eq (i32.load (i32.const 0)) (i32.const 3)) (then (loop $l (br $l))))
    (i32.const 0)"""))

DEEP_RECURSION = agent_wat("""
  (func $down (param i32) (result i32) (i32.add (call $down (i32.add (local.get 0) (i32.const 1))) (i32.const 1)))
  (func (export "mf_on_event") (param i32 i32 i32) (result i32) (call $down (i32.const 0)))""")

# Grows memory until refused, then logs the final page count as one digit.
MEMORY_BOMB = agent_wat(ON_EVENT.format(body="""
    (block $done (loop $more
      (br_if $done (i32.eq (memory.grow (i32.const 1)) (i32.const -1)))
      (br $more)))
    (i32.store8 (i32.const 0) (i32.add (i32.const 48) (memory.size)))
    (call $log (i32.const 0) (i32.const 1))
    (i32.const 0)"""))

START_LOOP = agent_wat("""
  (func $start (loop $l (br $l)))
  (start $start)
  (func (export "mf_on_event") (param i32 i32 i32) (result i32) (i32.const 0))""")

SUB_PAGE = agent_wat(ON_EVENT.format(body="""
    (i32.store8 (local.get 1) (i32.const 1)) (i32.store8 (i32.const 8192) (i32.const 1)) (i32.const 0)"""))

UNREACHABLE = agent_wat(ON_EVENT.format(body="unreachable"))

# ---- hostile agents: each once crashed, hung or fooled the engine (issue 14) ---------------

# A block with a parameter in unreachable code: wasm3 0.5.0 wrote m3Slots[65535] compiling it.
DEAD_BLOCK_PARAM = agent_wat("""
  (func $dead unreachable block (param i32) drop end)
  (func (export "mf_on_event") (param i32 i32 i32) (result i32)
    (if (i32.eq (local.get 0) (i32.const 3)) (then (call $dead)))
    (call $log (i32.const 0) (i32.const 2)) (i32.const 0))
  (data (i32.const 0) "ok")""")

# Counts 0..5 in a loop whose parameter each `br` back replaces (wasm3 issue #582: wasm3 kept
# the first parameter, so the loop never ended); stores the count at address 0.
LOOP_PARAMS = agent_wat("""
  (func (export "mf_on_event") (param i32 i32 i32) (result i32) (local $i i32)
    i32.const 0
    block $exit (result i32)
      i32.const 0
      loop $again (param i32)
        local.tee $i
        i32.const 5
        i32.ge_s
        if
          local.get $i
          br $exit
        end
        local.get $i
        i32.const 1
        i32.add
        br $again
      end
      unreachable
    end
    i32.store8
    i32.const 0)""")

# Records its depth at address 0 on the way down, so a test reads how deep it got.
DEPTH_PROBE = agent_wat("""
  (func $down (param i32) (result i32)
    (i32.store (i32.const 0) (local.get 0))
    (i32.add (call $down (i32.add (local.get 0) (i32.const 1))) (i32.const 1)))
  (func (export "mf_on_event") (param i32 i32 i32) (result i32) (call $down (i32.const 2)))""")

# DEPTH_PROBE with wide frames (16 i64 locals): a 1 KiB wasm stack runs out well before the
# engine's call-depth bound.
WIDE_DEPTH_PROBE = agent_wat("""
  (func $down (param i32) (result i32) (local i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64)
    (i32.store (i32.const 0) (local.get 0))
    (i32.add (call $down (i32.add (local.get 0) (i32.const 1))) (i32.const 1)))
  (func (export "mf_on_event") (param i32 i32 i32) (result i32) (call $down (i32.const 2)))""")

# Reads sensor channel memory.grow(1): the channel the board sees is -1 if memory.grow failed.
# Thirty 64-bit constants fill the engine's constant table (64 slots) to 60, so of a block's
# results (i64 7, i32 8, 9, 10, 11) the last three are materialised in the slots the block had
# reserved for its i64 result: wasm3 0.5.0 saved only the first of the two it overwrote, and
# the block gave 7, 8, 9, 0, 11 (found by fuzzing, patches/0021). Stores them at 0, 8, 12, 16, 20.
BLOCK_RESULTS_PAST_CONSTANTS = agent_wat("""
  (func (export "mf_on_event") (param i32 i32 i32) (result i32) (local i64 i32 i32 i32 i32)
    %s
    (block (result i64 i32 i32 i32 i32)
      (i64.const 7) (i32.const 8) (i32.const 9) (i32.const 10) (i32.const 11))
    (local.set 7) (local.set 6) (local.set 5) (local.set 4) (local.set 3)
    (i64.store (i32.const 0) (local.get 3)) (i32.store (i32.const 8) (local.get 4))
    (i32.store (i32.const 12) (local.get 5)) (i32.store (i32.const 16) (local.get 6))
    (i32.store (i32.const 20) (local.get 7))
    (i32.const 0))""" % " ".join("(drop (i64.const %d))" % (1000 + i) for i in range(30)))

GROW_ONE = agent_wat(ON_EVENT.format(body="(drop (call $sensor (memory.grow (i32.const 1)))) (i32.const 0)"),
                     imports='(import "mf" "sensor_read" (func $sensor (param i32) (result i32)))',
                     abi='(memory (export "memory") 0 0) (func (export "mf_alloc") (param i32) (result i32) (i32.const 0))')
SENSORS = {"sandbox.permissions.allowed_host_functions": ["sensor_read"]}


# Reads sensor channel d at each depth d of a recursion down to 40: the board's sensor callback
# sees where the C stack is at each wasm call depth.
STACK_PROBE = agent_wat("""
  (func $down (param i32)
    (drop (call $sensor (local.get 0)))
    (if (i32.lt_u (local.get 0) (i32.const 40)) (then (call $down (i32.add (local.get 0) (i32.const 1))))))
  (func (export "mf_on_event") (param i32 i32 i32) (result i32) (call $down (i32.const 2)) (i32.const 0))""",
                        imports='(import "mf" "sensor_read" (func $sensor (param i32) (result i32)))')


def nested_blocks(depth: int) -> str:
    return agent_wat(ON_EVENT.format(body="block " * depth + "end " * depth + "(i32.const 0)"))


def many_locals(count: int) -> str:
    return agent_wat(ON_EVENT.format(body="(local " + "i32 " * count + ") (i32.const 0)"))


# An element segment in form 2 (explicit table 0), as wasm-tools json-from-wast writes it.
ELEM_FORM_2 = agent_wat("""
  (table 1 funcref)
  (elem (table 0) (i32.const 0) func $hi)
  (type $v (func))
  (func $hi (call $log (i32.const 0) (i32.const 2)))
  (func (export "mf_on_event") (param i32 i32 i32) (result i32) (call_indirect (type $v) (i32.const 0)) (i32.const 0))
  (data (i32.const 0) "hi")""")

# A spinner with a tank far above one time slice, and one that floods 4 KB publishes.
RUNAWAY = INFINITE_LOOP
FLOOD = agent_wat(ON_EVENT.format(body="""
    (loop $more (drop (call $publish (i32.const 0) (i32.const 1) (i32.const 0) (i32.const 4096))) (br $more))
    (i32.const 0)"""), imports='(import "mf" "publish" (func $publish (param i32 i32 i32 i32) (result i32)))')


def log_call(ptr: int, length: int) -> str:
    return agent_wat(ON_EVENT.format(body=f"(call $log (i32.const {ptr}) (i32.const {length})) (i32.const 0)"))


def unbuilt(imports: str, memory: str = '(memory (export "memory") 1 1)', body: str = "(i32.const 0)",
            extra: str = "") -> bytes:
    """A module that skips `microfang build`: metered by hand (or not), with what the build refuses."""
    abi = memory + ' (func (export "mf_alloc") (param i32) (result i32) (call $usegas (i32.const 1)) (i32.const 0))'
    return parse_wat(agent_wat(ON_EVENT.format(body=body) + extra,
                               imports='(import "metering" "usegas" (func $usegas (param i32))) ' + imports, abi=abi))


def metered_only(wat: str) -> bytes:
    """A module capped to one page and metered as the build does, without the build's other
    refusals (what a host with a modified toolchain could sign)."""
    module = wb.Module.parse(parse_wat(wat))
    cap_memory(module, {"max_bytes": wb.PAGE, "grow_limit_pages": 0})
    return meter(module.encode())


# Hand-made bundles the build would never produce.
PAY = "(call $usegas (i32.const 1)) "
UNMETERED_LOOP = dict(body=PAY + "(loop $l (br $l)) (i32.const 0)")
NEGATIVE_CHARGE = dict(body=PAY + "(call $usegas (i32.const -1000000)) (i32.const 0)")
NUL_EXPORT = dict(body=PAY + "(i32.const 0)",
                  extra='(func (export "mf_on_event\\00x") (param i32 i32 i32) (result i32) ' + PAY + "(i32.const 7))")


def device_bundles() -> dict[str, bytes]:
    """Every bundle the device suite needs, by name: capped at 8 KiB of linear memory (not a
    whole 64 KiB page) and a 2 KiB wasm stack, so that several fit the ~110 KB heap of a plain
    ESP32."""
    small = {"sandbox.memory.max_heap_kb": 8, "sandbox.memory.stack_size_kb": 2}

    def build(wat: str, **changes: object) -> bytes:
        return build_bundle(wat, **{**small, **changes})

    def raw(wasm: bytes) -> bytes:
        return raw_bundle(wasm, **small)

    return {
        "hello": build(HELLO),
        "hello_v2": build(HELLO, **{"agent.version": 2}),
        "trap_v3": build(UNREACHABLE, **{"agent.version": 3, **NEVER_RESTART}),
        "spinner": build(INFINITE_LOOP, **{"sandbox.agent_id": "spinner", "sandbox.fuel.max_fuel": 40_000,
                                           "sandbox.fuel.refuel_interval_ms": 60_000}),
        "counter": build(COUNT_THEN_SPIN, **{"sandbox.fuel.max_fuel": 5_000, "sandbox.fuel.refuel_amount": 5_000,
                                                    "sandbox.fuel.refuel_interval_ms": 100}),
        "deep": build(DEEP_RECURSION, **{"sandbox.agent_id": "deep", "sandbox.fuel.max_fuel": 10**9,
                                                **NEVER_RESTART}),
        "bomb": build(MEMORY_BOMB, **{"sandbox.memory.max_heap_kb": 12,
                                             "sandbox.memory.grow_limit_pages": 100}),
        "start_loop": build(START_LOOP),
        "sub_page": build(SUB_PAGE, **{"sandbox.memory.max_heap_kb": 8, **NEVER_RESTART}),
        "oob": build(log_call(0xFFFF0000, 10), **NEVER_RESTART),
        "too_long": build(log_call(0, 100000), **NEVER_RESTART),
        "trap": build(UNREACHABLE, **{"agent.restart": {"policy": "on-failure", "max_restarts": 2,
                                                               "backoff_ms": 100}}),
        # 6 KB of wasm (a data segment): what RAM its module bytes take is easy to see.
        "big_wasm": build(HELLO.replace('(data (i32.const 0) "hi")', '(data (i32.const 0) "hi") (data (i32.const 1024) "%s")'
                                        % ("x" * 6000)), **{"sandbox.agent_id": "big", "sandbox.memory.max_heap_kb": 8}),
        "trap_later": build(TRAP_AFTER_START, **{"sandbox.agent_id": "later", "agent.timers": [{"id": 1, "every_ms": 100}],
                                                 "agent.restart": {"policy": "always", "backoff_ms": 10}}),
        "trap_40k": build(UNREACHABLE, **{"sandbox.agent_id": "big", "sandbox.memory.max_heap_kb": 40,
                                          "agent.restart": {"policy": "always", "backoff_ms": 10}}),
        "huge_memory": raw(unbuilt("", memory='(memory (export "memory") 100)')),
        "bad_import": raw(unbuilt('(import "env" "system" (func))')),
        "malformed": raw(b"\x00asm\x01\x00\x00\x00\x01\xff\xff"),
        "small": build(HELLO, **{"sandbox.memory.max_heap_kb": 2, "sandbox.memory.stack_size_kb": 1}),
        "dead_block_param": build(DEAD_BLOCK_PARAM, **{"sandbox.agent_id": "dead", **NEVER_RESTART}),
        "loop_params": build(LOOP_PARAMS, **NEVER_RESTART),
        "block_results_past_constants": build(BLOCK_RESULTS_PAST_CONSTANTS, **NEVER_RESTART),
        "depth_probe": build(DEPTH_PROBE, **{"sandbox.fuel.max_fuel": 10**9, "sandbox.memory.stack_size_kb": 24,
                                             **NEVER_RESTART}),
        "stack_probe": build(STACK_PROBE, **SENSORS),
        "wide_depth_probe": build(WIDE_DEPTH_PROBE, **{"sandbox.agent_id": "wide", "sandbox.memory.stack_size_kb": 1,
                                                       **NEVER_RESTART}),
        "wide_depth_probe_4k": build(WIDE_DEPTH_PROBE, **{"sandbox.agent_id": "wide4", "sandbox.memory.stack_size_kb": 4,
                                                          **NEVER_RESTART}),
        "four_mb": build(HELLO.replace('(memory (export "memory") 1)', '(memory (export "memory") 64)'),
                         **{"sandbox.memory.max_heap_kb": 4096}),
        "grow_max_zero": build(GROW_ONE, **SENSORS),
        "grow_max_zero_raw": raw_bundle(metered_only(GROW_ONE), **{**small, **SENSORS}),
        "deep_nesting_raw": raw(metered_only(nested_blocks(200))),
        "many_locals_raw": raw(metered_only(many_locals(200))),
        "elem_form_2": build(ELEM_FORM_2),
        "elem_form_2_raw": raw(parse_wat(ELEM_FORM_2.replace('(import "mf" "log"', '(import "metering" "usegas" (func (param i32))) (import "mf" "log"')
                                        .replace('(memory (export "memory") 1)', '(memory (export "memory") 1 1)'))),
        "unmetered_loop": raw(unbuilt("", **UNMETERED_LOOP)),
        "negative_charge": raw(unbuilt("", **NEGATIVE_CHARGE)),
        "nul_export": raw(unbuilt("", **NUL_EXPORT)),
        "runaway": build(RUNAWAY, **{"sandbox.agent_id": "runaway", "sandbox.fuel.max_fuel": 10**9,
                                     "agent.timers": [{"id": 1, "every_ms": 10}]}),
        "flood": build(FLOOD, **{"sandbox.agent_id": "flood", "sandbox.fuel.max_fuel": 10**9,
                                 "agent.timers": [{"id": 1, "every_ms": 10}],
                                 "sandbox.permissions.allowed_host_functions": ["publish"]}),
        "ticker": build(HELLO, **{"sandbox.agent_id": "ticker", "agent.timers": [{"id": 7, "every_ms": 20}]}),
        **{f"example_{name}": _example(name) for name in ("hello", "threshold", "ask", "bootcount")},
    }


def _example(name: str) -> bytes:
    """A C example agent from tools/sdk/examples, built by `microfang build`'s library."""
    import tempfile

    from microfang.tools.build import build

    examples = Path(__file__).resolve().parent.parent / "tools" / "sdk" / "examples"
    with tempfile.TemporaryDirectory() as tmp:
        out, _ = build(examples / name / "agent.toml", Path(tmp) / f"{name}.mfa")
        return out.read_bytes()


def write_device_bundles(folder: Path) -> Path:
    from signing_keys import write_signed_bundles

    folder.mkdir(parents=True, exist_ok=True)
    plain = device_bundles()
    for name, data in plain.items():
        (folder / f"{name}.mfa").write_bytes(data)
    write_signed_bundles(folder, plain)
    return folder


def _wat_bytes(data: bytes) -> str:
    return "".join(f"\\{b:02x}" for b in data)


def request_chain(steps: list[tuple[str, bytes]], agent_id: str = "chain", **changes: object) -> bytes:
    """An agent that makes the requests `steps` (kind, CBOR body) one after the other: the
    first on start, each next one when the previous reply arrives; every reply's payload is
    appended to its memory log, so a test reads the answers back in order."""
    data, calls, offset = [], [], 2048
    for n, (kind, body) in enumerate(steps):
        k, b = kind.encode(), body
        data.append(f'(data (i32.const {offset}) "{_wat_bytes(k)}")')
        data.append(f'(data (i32.const {offset + len(k)}) "{_wat_bytes(b)}")')
        calls.append(f"(if (i32.eq (local.get $n) (i32.const {n})) (then (drop (call $request "
                     f"(i32.const {offset}) (i32.const {len(k)}) (i32.const {offset + len(k)}) (i32.const {len(b)})))))")
        offset += len(k) + len(b) + 8
    wat = agent_wat(f"""
  {" ".join(data)}
  (func (export "mf_on_event") (param i32 i32 i32) (result i32) (local $n i32)
    (local.set $n (i32.load (i32.const 1020)))  ;; requests made so far
    (if (i32.eq (local.get 0) (i32.const 4))
      (then (drop (call $append (local.get 1) (local.get 2)))))
    (if (i32.or (i32.eq (local.get 0) (i32.const 1)) (i32.eq (local.get 0) (i32.const 4)))
      (then {" ".join(calls)}
            (i32.store (i32.const 1020) (i32.add (local.get $n) (i32.const 1)))))
    (i32.const 0))""",
                    imports='(import "mf" "request" (func $request (param i32 i32 i32 i32) (result i32))) '
                            '(import "mf" "mem_append" (func $append (param i32 i32) (result i32)))')
    return build_bundle(wat, **{"sandbox.permissions.allowed_host_functions": ["request", "mem_append"],
                                "sandbox.agent_id": agent_id, "sandbox.fuel.max_fuel": 1_000_000,
                                "sandbox.memory.max_heap_kb": 64, **changes})


def appender(every_ms: int = 10, log_kb: int = 4) -> bytes:
    """Agent "appender": on each timer event (every `every_ms`) it counts and appends the count
    (u32 little-endian) as a 16-byte record to its memory log of `log_kb` KiB."""
    wat = agent_wat("""
  (func (export "mf_on_event") (param i32 i32 i32) (result i32)
    (if (i32.eq (local.get 0) (i32.const 2))
      (then
        (i32.store (i32.const 1000) (i32.add (i32.load (i32.const 1000)) (i32.const 1)))
        (i32.store (i32.const 1500) (i32.load (i32.const 1000)))
        (drop (call $append (i32.const 1500) (i32.const 16)))))
    (i32.const 0))""", imports='(import "mf" "mem_append" (func $append (param i32 i32) (result i32)))')
    return build_bundle(wat, **{"sandbox.agent_id": "appender", "sandbox.permissions.allowed_host_functions": ["mem_append"],
                                "agent.timers": [{"id": 1, "every_ms": every_ms}], "memory_log.max_kb": log_kb,
                                "sandbox.memory.max_heap_kb": 2, "sandbox.memory.stack_size_kb": 1,
                                "sandbox.memory.grow_limit_pages": 0})
