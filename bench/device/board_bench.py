# Runs on microfang's MicroPython (bench/bench_micropython.py drives it). Prints one JSON line.
#   micropython -X heapsize=110k board_bench.py BUNDLE   (the compute loop: loop_bench.py)
import gc
import json
import sys
import time

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


def main():
    bundle_path = sys.argv[1]
    manifest, wasm = bundle.decode(read(bundle_path))
    heap = free()
    count, per_agent = agents_that_fit(manifest, wasm)
    print(json.dumps({
        "heap_free_after_boot": heap,
        "agents_fit": count,
        "bytes_per_agent": per_agent,
        "linear_memory_per_agent": manifest["memory"]["max_bytes"],
        "wasm_bytes": len(wasm),
        "spawn_us": spawn_time_us(manifest, wasm, 15),
    }))


main()
