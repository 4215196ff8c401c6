# Runs on microfang's MicroPython and on CPython (bench/bench_sandbox.py drives it): LOOP's
# `work(N)` on each module given, alternated for ROUNDS rounds; prints the fastest time of each
# in microseconds, one JSON list (the fastest run is the one a busy machine disturbed least).
#   micropython -X heapsize=110k loop_bench.py N ROUNDS A.wasm [B.wasm ...]
import json
import sys
import time

from microfang.firmware import port

if port.MICROPYTHON:
    now_us, since = time.ticks_us, time.ticks_diff
else:
    def now_us():
        return time.perf_counter_ns() // 1000

    def since(a, b):
        return a - b


def work(path):
    env = port.engine.Environment()
    runtime = env.new_runtime(4096, 4096)  # the loop uses no memory: cap it small
    with open(path, "rb") as f:
        module = env.parse_module(f.read())
    runtime.load(module)
    module.fuel = 1 << 60
    function = runtime.find_function("work")
    function(10)
    return env, runtime, module, function


def main():
    n, rounds = int(sys.argv[1]), int(sys.argv[2])
    loaded = [work(path) for path in sys.argv[3:]]
    best = [None] * len(loaded)
    for _ in range(rounds):
        for i, one in enumerate(loaded):
            start = now_us()
            one[3](n)
            took = since(now_us(), start)
            best[i] = took if best[i] is None else min(best[i], took)
    print(json.dumps(best))


main()
