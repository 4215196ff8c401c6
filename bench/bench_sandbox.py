"""Sandbox benchmarks, measured side by side in one run (machines are noisy: compare only
within a run).

1. Spawn of a ~1 KB agent (the hello example: validate imports and memory, new runtime with a
   byte cap, parse, load, link, find exports, mf_init) vs bare pywasm3 parse+load of the same
   module. Goal: ratio <= 1.3.
2. Fuel-metering overhead: a compute loop metered vs unmetered on the same engine, on CPython
   (microfang._wasm3) and on microfang's MicroPython (esp32 heap): the fastest of alternated
   runs, and with valgrind the machine instructions per iteration (a busy machine cannot
   disturb that count). Goal: <= 15%. Context: the same metered loop on upstream pywasm3,
   whose metering is a host call per basic block.
3. Fair time: a 20 ms ticker agent next to a runaway loop or a flood of 4 KB publishes (each
   with max_fuel 1e8), worst gap between the ticker's events / its period, on CPython and on
   microfang's MicroPython (esp32 heap), with the time slice and without it (a whole tank per
   event, as before). Goal: <= 2x with the slice.

Usage: python bench/bench_sandbox.py [--quick]; results go to bench/results/sandbox.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import wasm3 as pywasm3

from microfang import _wasm3
from microfang.firmware import bundle
from microfang.firmware.sandbox import Sandbox
from microfang.tools.build import build
from microfang.tools.wasm.meter import meter
from microfang.tools.wasm.wasmtools import parse_wat

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"

LOOP = """(module (memory (export "memory") 1)
  (func (export "work") (param $n i32) (result i32) (local $i i32) (local $acc i32)
    (loop $l
      (local.set $acc (i32.add (local.get $acc)
        (i32.xor (i32.mul (local.get $i) (i32.const 2654435761)) (i32.shr_u (local.get $acc) (i32.const 7)))))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $l (i32.lt_u (local.get $i) (local.get $n))))
    (local.get $acc)))"""


class _Quiet:
    """Host functions that go nowhere: the bench measures the sandbox, not printing."""

    def host_log(self, sandbox, ptr, length):
        sandbox.read(ptr, length, "log")


def _timed(fn, repeat):
    start = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - start) / repeat


def _side_by_side(ours, baseline, rounds, repeat):
    """Alternate the two in each round; return median seconds per call of each."""
    a, b = [], []
    for _ in range(rounds):
        a.append(_timed(ours, repeat))
        b.append(_timed(baseline, repeat))
    return statistics.median(a), statistics.median(b)


def bench_spawn(rounds, repeat):
    out, _ = build(ROOT / "tools" / "sdk" / "examples" / "hello" / "agent.toml", Path("/tmp/mf-bench-hello.mfa"))
    manifest, wasm = bundle.decode(out.read_bytes())
    services = _Quiet()

    def ours():
        Sandbox(manifest, wasm, services)

    def bare_pywasm3():
        env = pywasm3.Environment()
        runtime = env.new_runtime(manifest["memory"]["stack_bytes"])
        runtime.load(env.parse_module(wasm))

    def bare_engine():
        env = _wasm3.Environment()
        runtime = env.new_runtime(manifest["memory"]["stack_bytes"], manifest["memory"]["max_bytes"])
        runtime.load(env.parse_module(wasm))

    ours_s, base_s = _side_by_side(ours, bare_pywasm3, rounds, repeat)
    _, engine_s = _side_by_side(ours, bare_engine, rounds, repeat)
    return {"module_bytes": len(wasm), "microfang_spawn_us": ours_s * 1e6, "pywasm3_parse_load_us": base_s * 1e6,
            "ratio": ours_s / base_s, "goal": 1.3, "microfang_wasm3_parse_load_us": engine_s * 1e6}


def pywasm3_work(wasm, iterations):
    """A call running LOOP's `work(iterations)` on upstream pywasm3 (metered with its host call)."""
    env = pywasm3.Environment()
    runtime = env.new_runtime(65536)
    module = env.parse_module(wasm)
    runtime.load(module)
    module.gasLimit = 1e12
    work = runtime.find_function("work")
    # pywasm3's Function does not keep its Module alive, and the gas counter lives there.
    return lambda: (module, work(iterations))[1]


def _runtimes():
    """The two runtimes the firmware runs on: CPython and microfang's MicroPython (esp32 heap)."""
    import sys

    from microfang.boards import PROFILES
    from microfang.tools import portbuild

    return {"cpython": [sys.executable],
            "micropython": [str(portbuild.build_unix(lambda line: None)), "-X", PROFILES["esp32"].heapsize_arg()]}


def loop_bench(command, iterations, rounds, *wasm_files):
    """The fastest of `rounds` alternated runs of LOOP's work(iterations), in microseconds, of
    each module, on the runtime `command` starts (bench/device/loop_bench.py)."""
    return _loop_bench(command, iterations, rounds, *wasm_files)[0]


def _loop_bench(command, iterations, rounds, *wasm_files, valgrind=()):
    import subprocess

    proc = subprocess.run([*valgrind, *command, str(ROOT / "bench" / "device" / "loop_bench.py"), str(iterations),
                           str(rounds), *map(str, wasm_files)], capture_output=True, text=True, timeout=600, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1]), proc.stderr


def _instructions(command, wasm_file, iterations):
    """Machine instructions per loop iteration (valgrind's count: the same on a busy machine)."""
    import re

    def count(n):
        _, log = _loop_bench(command, n, 1, wasm_file,
                             valgrind=("valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null"))
        return int(re.search(r"Collected : (\d+)", log).group(1))

    return (count(iterations) - count(1)) / (iterations - 1)


def bench_metering(rounds, iterations):
    """Metered vs unmetered LOOP on both runtimes: the fastest of alternated runs, and (with
    valgrind) the instructions per iteration, which a noisy machine cannot disturb."""
    import shutil
    import tempfile

    plain = parse_wat(LOOP)
    metered = meter(plain)
    out = {"iterations": iterations, "goal": 0.15}
    with tempfile.TemporaryDirectory() as tmp:
        files = {"metered": Path(tmp) / "metered.wasm", "plain": Path(tmp) / "plain.wasm"}
        files["metered"].write_bytes(metered)
        files["plain"].write_bytes(plain)
        for runtime, command in _runtimes().items():
            m, p = loop_bench(command, iterations, rounds, files["metered"], files["plain"])
            row = {"metered_ms": m / 1e3, "unmetered_ms": p / 1e3, "overhead": m / p - 1}
            if shutil.which("valgrind"):
                counted = min(iterations, 1_000_000)
                im, ip = (_instructions(command, files[k], counted) for k in ("metered", "plain"))
                row.update(instructions_metered=im, instructions_unmetered=ip, instructions_overhead=im / ip - 1)
            out[runtime] = row
    run_py = pywasm3_work(metered, iterations)
    engine = _wasm3.Environment()
    runtime = engine.new_runtime(65536)
    module = engine.parse_module(plain)
    runtime.load(module)
    work = runtime.find_function("work")
    assert run_py() == work(iterations)
    py, p2 = _side_by_side(run_py, lambda: work(iterations), rounds, 1)
    out.update(pywasm3_usegas_call_ms=py * 1e3, pywasm3_overhead_vs_unmetered=py / p2 - 1)
    return out


TICKER = """(module (import "mf" "log" (func $log (param i32 i32))) (memory (export "memory") 1)
  (func (export "mf_alloc") (param i32) (result i32) (i32.const 1024)) (data (i32.const 0) "hi")
  (func (export "mf_on_event") (param i32 i32 i32) (result i32) (call $log (i32.const 0) (i32.const 2)) (i32.const 0)))"""
RUNAWAY = """(module (memory (export "memory") 1) (func (export "mf_alloc") (param i32) (result i32) (i32.const 1024))
  (func (export "mf_on_event") (param i32 i32 i32) (result i32) (loop $l (br $l)) (i32.const 0)))"""
FLOOD = """(module (import "mf" "publish" (func $p (param i32 i32 i32 i32) (result i32))) (memory (export "memory") 1)
  (func (export "mf_alloc") (param i32) (result i32) (i32.const 1024))
  (func (export "mf_on_event") (param i32 i32 i32) (result i32)
    (loop $l (drop (call $p (i32.const 0) (i32.const 1) (i32.const 0) (i32.const 4096))) (br $l)) (i32.const 0)))"""
PERIOD_MS = 20


def _agent(wat, agent_id, allowed, every_ms, max_fuel):
    from microfang.tools import manifest as manifests
    from microfang.tools.build import build_wasm

    raw = {"schema_version": 1, "agent": {"module": "a.wat", "version": 1, "timers": [{"id": 1, "every_ms": every_ms}]},
           "sandbox": {"agent_id": agent_id, "fuel": {"max_fuel": max_fuel, "refuel_interval_ms": 50},
                       "memory": {"max_heap_kb": 8, "stack_size_kb": 2},
                       "permissions": {"allowed_host_functions": allowed}}}
    manifest = manifests.validate(raw, "bench.toml")
    return bundle.encode(manifest, build_wasm(parse_wat(wat), manifest))


def bench_fair_time(window_ms):
    import subprocess
    import tempfile

    from microfang.firmware.sandbox import SLICE_FUEL

    runtimes = _runtimes()
    out = {"period_ms": PERIOD_MS, "window_ms": window_ms, "slice_fuel": SLICE_FUEL, "hog_max_fuel": 10**8, "goal": 2.0}
    with tempfile.TemporaryDirectory() as tmp:
        files = {"ticker": Path(tmp) / "ticker.mfa", "runaway": Path(tmp) / "runaway.mfa", "flood": Path(tmp) / "flood.mfa"}
        files["ticker"].write_bytes(_agent(TICKER, "ticker", ["log"], PERIOD_MS, 100_000))
        files["runaway"].write_bytes(_agent(RUNAWAY, "runaway", [], 10, 10**8))
        files["flood"].write_bytes(_agent(FLOOD, "flood", ["publish"], 10, 10**8))
        for runtime, command in runtimes.items():
            for hog in ("alone", "runaway", "flood"):
                for sliced in (True, False) if hog != "alone" else (True,):
                    proc = subprocess.run([*command, str(ROOT / "bench" / "device" / "fair_bench.py"), str(files["ticker"]),
                                           "-" if hog == "alone" else str(files[hog]), str(window_ms),
                                           str(SLICE_FUEL if sliced else 0)],
                                          capture_output=True, text=True, timeout=120, check=True)
                    gap, ticks = (int(x) for x in proc.stdout.split())
                    key = f"{runtime}_{hog}" + ("" if hog == "alone" else "_sliced" if sliced else "_no_slice")
                    out[key] = {"worst_gap_ms": gap, "worst_gap_over_period": gap / PERIOD_MS, "ticks": ticks}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds (a smoke run)")
    args = parser.parse_args()
    rounds = 3 if args.quick else 9
    spawn = bench_spawn(rounds, 200 if args.quick else 1000)
    metering = bench_metering(rounds, 2_000_000 if args.quick else 10_000_000)
    fair = bench_fair_time(500 if args.quick else 2000)
    print(f"spawn of a {spawn['module_bytes']} B agent: microfang {spawn['microfang_spawn_us']:.1f} us vs bare "
          f"pywasm3 parse+load {spawn['pywasm3_parse_load_us']:.1f} us -> ratio {spawn['ratio']:.2f}x "
          f"(goal <= {spawn['goal']}x); context: our engine's bare parse+load {spawn['microfang_wasm3_parse_load_us']:.1f} us; "
          f"pywasm3 allocates a whole 64 KiB page per spawn and never frees a runtime, so it slows as a run goes on")
    for runtime in ("cpython", "micropython"):
        row = metering[runtime]
        counted = (f"; instructions per iteration {row['instructions_metered']:.1f} vs {row['instructions_unmetered']:.1f} "
                   f"-> {row['instructions_overhead']:+.1%}") if "instructions_overhead" in row else ""
        print(f"fuel metering on {runtime}, a {metering['iterations']:,}-iteration loop: metered {row['metered_ms']:.1f} ms "
              f"vs unmetered {row['unmetered_ms']:.1f} ms -> overhead {row['overhead']:+.1%} (goal <= 15%){counted}")
    print(f"context: upstream pywasm3's host-call metering {metering['pywasm3_overhead_vs_unmetered']:+.1%} on CPython")
    for runtime in ("cpython", "micropython"):
        cells = ", ".join(f"{hog} {fair[f'{runtime}_{hog}_sliced']['worst_gap_over_period']:.2f}x "
                          f"(no slice {fair[f'{runtime}_{hog}_no_slice']['worst_gap_over_period']:.1f}x)"
                          for hog in ("runaway", "flood"))
        print(f"fair time on {runtime}: a {PERIOD_MS} ms timer's worst gap / period: alone "
              f"{fair[f'{runtime}_alone']['worst_gap_over_period']:.2f}x, next to a {cells} (goal <= 2x)")
    RESULTS.mkdir(parents=True, exist_ok=True)
    result = {"bench": "sandbox", "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "machine": {"python": platform.python_version(), "cpu": platform.machine()},
              "spawn": spawn, "metering": metering, "fair_time": fair}
    (RESULTS / "sandbox.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"results: {RESULTS / 'sandbox.json'}")


if __name__ == "__main__":
    main()
