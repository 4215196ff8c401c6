# Runs on microfang's MicroPython (bench/bench_micropython.py drives it). Prints one JSON line.
#   micropython -X heapsize=110k board_bench.py BUNDLE LOOP_METERED LOOP_PLAIN ITERATIONS
import gc
import json
import sys
import time

import wasm3
from microfang.firmware import bundle
from microfang.firmware.errors import MicrofangError
from microfang.firmware.supervisor import Supervisor


def read(path):
    with open(path, "rb") as f:
        return f.read()


def free():
    gc.collect()
    return gc.mem_free()


def agents_that_fit(manifest, wasm):
    """Spawn copies (each with its own wasm bytes, as if loaded from flash) until the heap is
    full; return (count, bytes per agent measured on the first few)."""
    sup = Supervisor()
    deltas = []
    spawned = []  # kept as the heap fills: a list(sup.agents) at the end needs memory it has not
    count = 0
    while True:
        before = free()
        m = dict(manifest)
        m["agent_id"] = "a%d" % count
        try:
            sup.spawn(manifest=m, wasm=bytes(bytearray(wasm)))
            sup.step()  # the start event: the agent has run once and is now idle
        except (MemoryError, MicrofangError):
            break
        count += 1
        spawned.append(m["agent_id"])
        if count <= 8:
            deltas.append(before - free())
        if count >= 2000:
            break
    deltas.sort()
    per_agent = deltas[len(deltas) // 2] if deltas else 0
    while spawned:
        sup.reclaim(spawned.pop())
    return count, per_agent


def spawn_time_us(manifest, wasm, rounds):
    times = []
    for i in range(rounds):
        sup = Supervisor()
        gc.collect()
        start = time.ticks_us()
        sup.spawn(manifest=manifest, wasm=wasm)
        times.append(time.ticks_diff(time.ticks_us(), start))
        sup.reclaim(manifest["agent_id"])
    times.sort()
    return times[len(times) // 2]


def loop_ms(wasm, iterations):
    env = wasm3.Environment()
    rt = env.new_runtime(4096, 4096)  # the loop uses no memory: cap it small
    mod = env.parse_module(wasm)
    rt.load(mod)
    mod.fuel = 1 << 60
    work = rt.find_function("work")
    work(10)
    start = time.ticks_us()
    result = work(iterations)
    return time.ticks_diff(time.ticks_us(), start) / 1000, result


def main():
    bundle_path, metered_path, plain_path, iterations = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    manifest, wasm = bundle.decode(read(bundle_path))
    heap = free()
    count, per_agent = agents_that_fit(manifest, wasm)
    metered = read(metered_path)
    plain = read(plain_path)
    runs = []
    for _ in range(7):  # alternated; the fastest of each is the least disturbed by a busy machine
        runs.append((loop_ms(metered, iterations), loop_ms(plain, iterations)))
    m = min(r[0][0] for r in runs)
    p = min(r[1][0] for r in runs)
    print(json.dumps({
        "heap_free_after_boot": heap,
        "agents_fit": count,
        "bytes_per_agent": per_agent,
        "linear_memory_per_agent": manifest["memory"]["max_bytes"],
        "wasm_bytes": len(wasm),
        "spawn_us": spawn_time_us(manifest, wasm, 15),
        "loop_metered_ms": m,
        "loop_plain_ms": p,
        "loop_result": runs[0][0][1],
    }))


main()
