"""Board benchmarks on microfang's MicroPython (the 32-bit unix port built by
`microfang port build --board unix`), under each board's heap profile, side by side with
pywasm3 on CPython in the same run.

Reports, per profile (esp32: -X heapsize=110k, esp32s3-psram: 2 MB):
- RAM per idle agent beyond its linear memory, for the ~1 KB hello example (goal <= 8 KB);
- how many such agents fit at once (goal >= 16 on esp32, >= 256 on esp32s3-psram), as ratios to
  the goal and to the figure before the memory diet (BEFORE_DIET), each with its own manifest
  decoded from the bundle as a board decodes its agents';
- how many agents a board with its flash and deploy path holds while an over-the-air update of
  one of them still goes through (chunks to flash, signature checked, installed: the goal's "room
  left for an OTA deploy on a full board");
and, in the same run:
- spawn time on MicroPython vs bare pywasm3 parse+load on CPython (ratio);
- a metered compute loop on MicroPython vs the same metered loop on pywasm3 (ratio), and the
  metering overhead on MicroPython (metered vs unmetered).

Usage: python bench/bench_micropython.py [--quick]; results go to bench/results/micropython.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import wasm3 as pywasm3

from microfang.boards import PROFILES
from microfang.firmware import bundle
from microfang.signing import Keyring
from microfang.tools import portbuild
from microfang.tools.build import build
from microfang.tools.wasm.meter import meter
from microfang.tools.wasm.wasmtools import parse_wat

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
from bench_sandbox import LOOP, loop_bench, pywasm3_work  # noqa: E402  (the same compute loop as the CPython bench)

GOALS = {"esp32": 16, "esp32s3-psram": 256}
PER_AGENT_GOAL = 8 * 1024
# Agents that fit on main before the memory diet (patches/0020, shared stack and module bytes),
# measured with this bench on 2026-12-02: the figure each run is compared with.
BEFORE_DIET = {"esp32": 10, "esp32s3-psram": 245}


def signed_update(manifest: dict, wasm: bytes, folder: Path) -> list[str]:
    """Files for the update phase: the agent as a0 version 1 and 2, signed by a fresh operator
    key, and that key's public half (what `microfang flash` provisions)."""
    keyring = Keyring.of([os.urandom(32)])
    paths = []
    for version in (1, 2):
        path = folder / f"a0-v{version}.mfs"
        path.write_bytes(keyring.sign(bundle.encode(dict(manifest, agent_id="a0", version=version), wasm)))
        paths.append(str(path))
    (folder / "operator.pub").write_bytes(keyring.public_keys()[0])
    return [*paths, str(folder / "operator.pub")]


def pywasm3_spawn_us(wasm: bytes, stack: int, rounds: int = 200) -> float:
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        env = pywasm3.Environment()
        runtime = env.new_runtime(stack)
        runtime.load(env.parse_module(wasm))
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e6


def pywasm3_loop_ms(wasm: bytes, iterations: int) -> float:
    work = pywasm3_work(wasm, iterations)
    times = []
    for _ in range(3):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a shorter compute loop")
    args = parser.parse_args()
    iterations = 200_000 if args.quick else 2_000_000
    binary = portbuild.build_unix(lambda line: None)
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        out, _ = build(ROOT / "tools" / "sdk" / "examples" / "hello" / "agent.toml", tmp_path / "hello.mfa")
        manifest, wasm = bundle.decode(out.read_bytes())
        update = signed_update(manifest, wasm, tmp_path)
        plain = parse_wat(LOOP)
        metered = meter(plain)
        (tmp_path / "metered.wasm").write_bytes(metered)
        (tmp_path / "plain.wasm").write_bytes(plain)
        results: dict = {"bench": "micropython", "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                         "machine": {"python": platform.python_version(), "cpu": platform.machine(),
                                     "micropython": str(binary)}, "profiles": {}}
        for name, board in sorted(PROFILES.items()):
            command = [str(binary), "-X", board.heapsize_arg()]
            mp = {}
            for extra in ([], update):  # each phase on a heap of its own
                proc = subprocess.run([*command, str(ROOT / "bench" / "device" / "board_bench.py"), str(out), *extra],
                                      capture_output=True, text=True, timeout=600, check=True)
                mp.update(json.loads(proc.stdout.strip().splitlines()[-1]))
            metered_us, plain_us = loop_bench(command, iterations, 7, tmp_path / "metered.wasm", tmp_path / "plain.wasm")
            mp.update(loop_metered_ms=metered_us / 1e3, loop_plain_ms=plain_us / 1e3)
            py_spawn = pywasm3_spawn_us(wasm, manifest["memory"]["stack_bytes"])
            py_loop = pywasm3_loop_ms(metered, iterations)
            beyond = mp["bytes_per_agent"] - mp["linear_memory_per_agent"]
            row = {**mp, "bytes_beyond_linear_memory": beyond, "per_agent_goal": PER_AGENT_GOAL,
                   "agents_goal": GOALS[name], "agents_ratio_to_goal": mp["agents_fit"] / GOALS[name],
                   "agents_with_an_update_ratio_to_goal": mp["agents_with_an_update"] / GOALS[name],
                   "agents_before_diet": BEFORE_DIET[name],
                   "agents_ratio_to_before_diet": mp["agents_fit"] / BEFORE_DIET[name], "pywasm3_spawn_us": py_spawn,
                   "spawn_ratio_micropython_vs_pywasm3": mp["spawn_us"] / py_spawn,
                   "pywasm3_loop_metered_ms": py_loop,
                   "loop_ratio_micropython_vs_pywasm3": mp["loop_metered_ms"] / py_loop,
                   "micropython_metering_overhead": mp["loop_metered_ms"] / mp["loop_plain_ms"] - 1}
            results["profiles"][name] = row
            print(f"{name} (-X {board.heapsize_arg()}, {mp['heap_free_after_boot']:,} B free after firmware import):")
            print(f"  RAM per idle agent: {mp['bytes_per_agent']:,} B of which {beyond:,} B beyond its "
                  f"{mp['linear_memory_per_agent']:,} B linear memory (goal <= {PER_AGENT_GOAL:,} B), "
                  f"{mp['wasm_bytes']} B module")
            print(f"  agents that fit at once: {mp['agents_fit']}: {row['agents_ratio_to_goal']:.2f}x the goal of "
                  f"{GOALS[name]}, {row['agents_ratio_to_before_diet']:.2f}x the {BEFORE_DIET[name]} before the diet")
            refused = (f"the refusal one more met: {mp['update_refusal']}" if mp["update_refusal"] else
                       "never refused: that is every agent the board held beside its flash and deploy path")
            print(f"  agents on a board with its flash and deploy path that still take an over-the-air update of "
                  f"one of them: {mp['agents_with_an_update']} ({mp['agents_with_an_update'] / GOALS[name]:.2f}x the goal; "
                  f"{refused})")
            print(f"  spawn: MicroPython {mp['spawn_us']:.0f} us vs pywasm3 parse+load on CPython {py_spawn:.0f} us "
                  f"-> {row['spawn_ratio_micropython_vs_pywasm3']:.2f}x")
            print(f"  metered {iterations:,}-iteration loop: MicroPython {mp['loop_metered_ms']:.1f} ms vs pywasm3 "
                  f"{py_loop:.1f} ms -> {row['loop_ratio_micropython_vs_pywasm3']:.2f}x; metering overhead on "
                  f"MicroPython {row['micropython_metering_overhead']:+.1%}")
    results_dir = ROOT / "bench" / "results"
    results_dir.mkdir(parents=True, exist_ok=True)
    (results_dir / "micropython.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(f"results: {results_dir / 'micropython.json'}")


if __name__ == "__main__":
    main()
