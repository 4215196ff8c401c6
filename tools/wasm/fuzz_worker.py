# The fuzz campaign's worker (tools/wasm/fuzz.py): runs one batch of built modules on the board's
# engine, under MicroPython (microfang's unix port: its `wasm3` C module) or CPython
# (microfang._wasm3). Plain MicroPython/CPython common subset, only the firmware imported: it runs
# as a script file on either interpreter (the firmware's port layer picks the engine).
#
#   micropython -X heapsize=2m fuzz_worker.py BATCH_DIR FUEL STACK_BYTES MEMORY_BYTES
#
# For each NAME.wasm in BATCH_DIR (sorted) it prints "> NAME" before touching the module and
# "= NAME outcome;outcome;...|fuel_used" after: one outcome per line of NAME.txt (an export as
# "param_kinds:hex(name)", kinds i/I/f/F), each "T" (trap), "F" (out of fuel), "S" (the engine's
# call-depth or stack limit), or the results joined by ",". A spawn refusal prints
# "= NAME !message". A crash or a hang leaves a "> NAME" without its "=": the campaign saves that
# module and goes on with the next one.
import binascii
import gc
import os
import struct
import sys

from microfang.firmware import port

engine = port.engine  # the board's wasm3 module, or microfang._wasm3 on CPython


def _value(v):
    if isinstance(v, float):
        if v != v:
            return "nan"
        return "x" + str(binascii.hexlify(struct.pack("<d", v)), "ascii")
    return str(v)


def _calls(path):
    calls = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line:
                kinds, name = line.split(":")
                calls.append((str(binascii.unhexlify(name), "utf-8"), kinds))
    return calls


def _args(kinds):
    return tuple(0.0 if k in "fF" else 0 for k in kinds)


def _outcome(fn, kinds):
    try:
        out = fn(*_args(kinds))
    except engine.OutOfFuel:
        return "F"
    except engine.Wasm3Error as e:
        return "S" if "stack overflow" in str(e) else "T"
    if out is None:
        return ""
    if isinstance(out, tuple):
        return ",".join(_value(v) for v in out)
    return _value(out)


def run_module(wasm, calls, fuel, stack, memory):
    env = engine.Environment()
    runtime = env.new_runtime(stack, memory)
    try:
        module = env.parse_module(wasm)
        runtime.load(module)
        module.fuel = fuel
        module.compile()
    except (engine.Wasm3Error, MemoryError) as e:
        runtime.close()
        return "!" + (str(e) or type(e).__name__).replace("\n", " ")
    outcomes = []
    for name, kinds in calls:
        try:
            fn = runtime.find_function(name)  # the first lookup runs the start function
        except engine.OutOfFuel:
            outcomes.append("F")
            break
        except engine.Wasm3Error as e:
            outcomes.append("S" if "stack overflow" in str(e) else "T")
            break
        outcomes.append(_outcome(fn, kinds))
    used = fuel - module.fuel
    runtime.close()
    return ";".join(outcomes) + "|" + str(used)


def _flush():
    flush = getattr(sys.stdout, "flush", None)  # MicroPython's unix stdout is unbuffered
    if flush is not None:
        flush()


def main():
    folder, fuel, stack, memory = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    for entry in sorted(os.listdir(folder)):
        if not entry.endswith(".wasm"):
            continue
        name = entry[:-5]
        print("> " + name)
        _flush()
        with open(folder + "/" + entry, "rb") as f:
            wasm = f.read()
        line = run_module(wasm, _calls(folder + "/" + name + ".txt"), fuel, stack, memory)
        # Each module spawns on a collected heap, as a board's steady state: on a fragmented
        # MicroPython heap a 128 KiB memory.grow can fail (-1, a board's right answer) where
        # wasmtime's succeeds, and the differential would compare heaps, not engines.
        gc.collect()
        print("= " + name + " " + line)
        _flush()
    print("done")


main()
