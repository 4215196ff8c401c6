# Runs on microfang's MicroPython (bench/bench_micropython.py drives it). Prints one JSON line.
#   micropython -X heapsize=110k board_bench.py BUNDLE [SIGNED_V1 SIGNED_V2 OPERATOR_PUB]
# (the compute loop: loop_bench.py)
import gc
import hashlib
import json
import os
import sys
import time

from microfang.firmware import bundle, port
from microfang.firmware.errors import MicrofangError
from microfang.firmware.supervisor import Supervisor

port.collect_often()  # as a board does from its first import on (firmware/main.py)


def read(path):
    with open(path, "rb") as f:
        return f.read()


def free():
    gc.collect()
    return gc.mem_free()


def fill(sup, path, first, deltas=None):
    """Spawn copies of the bundle in the file `path` as agents a<first>, a<first+1>, ... until
    the heap is full, each with its own manifest decoded from the file as a board reads each of
    its agents' bundles from flash (bundle.decode_file: only the manifest and the wasm come into
    RAM; the module's bytes are shared, as they would be freed once compiled from flash);
    return the ids spawned. `deltas` gets the heap each of the first eight took."""
    spawned = []  # kept as the heap fills: a list(sup.agents) at the end needs memory it has not
    while len(spawned) < 2000:
        before = free()
        try:
            with open(path, "rb") as f:
                manifest, wasm = bundle.decode_file(f, (0, os.stat(path)[6], 2))
            manifest["agent_id"] = "a%d" % (first + len(spawned))
            sup.spawn(manifest=manifest, wasm=wasm)
            sup.step()  # the start event: the agent has run once and is now idle
        except (MemoryError, MicrofangError):
            break
        manifest = wasm = None
        spawned.append("a%d" % (first + len(spawned)))
        if deltas is not None and len(deltas) < 8:
            deltas.append(before - free())
    return spawned


def agents_that_fit(path):
    """(agents that fit at once, bytes per agent measured on the first few)."""
    sup = Supervisor()
    deltas = []
    spawned = fill(sup, path, 0, deltas)
    count = len(spawned)
    while spawned:
        sup.reclaim(spawned.pop())
    deltas.sort()
    return count, deltas[len(deltas) // 2] if deltas else 0


def agents_with_room_for_an_update(path, signed_v1, signed_v2, operator_key):
    """The most agents a board holds while an over-the-air update of one of them still goes
    through: a0 installed from its signed bundle (the file `signed_v1`), the heap filled with
    more agents, then a0's version 2 (the file `signed_v2`) sent in chunks as the gateway sends
    them (begin, chunk, finish, install: the board's deploy path, flash and all): each chunk read
    from the file into a block of its own, as a message's payload arrives, in the size the board
    asks for (Installer.chunk_bytes, its put_ack's `chunk`); while the update fails, one agent is
    reclaimed and it is tried again. Returns (agents running with a0 at version 2, the last
    refusal seen or None)."""
    from microfang.firmware.blockdev import FileBlockDevice
    from microfang.firmware.deploy import Installer
    from microfang.firmware.port import Flash
    from microfang.firmware.trust import Trust

    image = "/tmp/mf_board_bench_%d.img" % time.ticks_us()
    device = FileBlockDevice(image, 4096, 64)
    flash = Flash(device, "/bench")
    sup = Supervisor(flash=flash)
    installer = Installer(flash, sup, Trust(flash, {"sign_keys": [operator_key], "trust_serial": 1}))
    installer.install(read(signed_v1))
    size = os.stat(signed_v2)[6]
    with open(signed_v2, "rb") as f:
        sha256 = hashlib.sha256(f.read()).digest()  # what the gateway's put carries
    spawned = fill(sup, path, 1)
    refusal = None
    while True:
        try:
            installer.begin("ota", size, sha256, "a0")
            with open(signed_v2, "rb") as f:
                offset = 0
                while offset < size:
                    piece = f.read(installer.chunk_bytes)
                    installer.chunk("ota", offset, piece)
                    offset += len(piece)
                    piece = None
            installer.install_file(installer.finish("ota"))
            break
        except (MemoryError, MicrofangError) as e:
            refusal = str(e) or "MemoryError"
            if not spawned:
                return 0, refusal
            sup.reclaim(spawned.pop())
    count = len(sup.agents)
    for agent_id in spawned + ["a0"]:
        sup.reclaim(agent_id)
    flash.unmount()
    device.file.close()
    os.remove(image)
    return count, refusal


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
    # board_bench.py BUNDLE: agents that fit, RAM per agent, spawn time;
    # board_bench.py BUNDLE SIGNED_V1 SIGNED_V2 OPERATOR_PUB: the room left for an update (version
    # 1 and 2 of the bundle's agent as a0, signed by the operator), on a heap of its own.
    if len(sys.argv) > 4:
        count, refusal = agents_with_room_for_an_update(sys.argv[1], sys.argv[2], sys.argv[3], read(sys.argv[4]))
        print(json.dumps({"agents_with_an_update": count, "update_refusal": refusal}))
        return
    heap = free()
    count, per_agent = agents_that_fit(sys.argv[1])
    with open(sys.argv[1], "rb") as f:
        manifest, wasm = bundle.decode_file(f, (0, os.stat(sys.argv[1])[6], 2))
    print(json.dumps({
        "heap_free_after_boot": heap,
        "agents_fit": count,
        "bytes_per_agent": per_agent,
        "linear_memory_per_agent": manifest["memory"]["max_bytes"],
        "wasm_bytes": len(wasm),
        "spawn_us": spawn_time_us(manifest, wasm, 15),
    }))


main()
