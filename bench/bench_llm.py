"""LLM benchmarks, side by side in one run:

- gateway overhead per LLM call: the same prompts answered by the local model directly
  (provider.complete) and through the whole path (agent -> board -> Mosquitto -> gateway ->
  model -> back to the agent); ratio of medians (goal <= 1.05x);
- tokens/s of the local default (SmolLM2-135M-Instruct, llama.cpp, this CPU);
- time from `microfang demo` start to the first LLM answer shown.

Usage: python bench/bench_llm.py [--quick]; results go to bench/results/llm.json.
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from results_file import save  # noqa: E402
from brokers import Mosquitto  # noqa: E402
from fleet import make_board  # noqa: E402
from helpers import agent_wat, build_bundle  # noqa: E402

from microfang.firmware import cbor  # noqa: E402
from microfang.gateway import Gateway, Router  # noqa: E402
from microfang.llm import LocalProvider, llm_handler  # noqa: E402

PROMPT = "In one short sentence: why do boards sleep?"
MAX_TOKENS = 32

# Asks the same question on start and after each answer, `COUNT` times in all.
ASKER = agent_wat(
    """
  (data (i32.const 0) "llm")
  (data (i32.const 16) "BODY")
  (global $n (mut i32) (i32.const 0))
  (func $ask (drop (call $request (i32.const 0) (i32.const 3) (i32.const 16) (i32.const LEN)))
             (global.set $n (i32.add (global.get $n) (i32.const 1))))
  (func (export "mf_on_event") (param i32 i32 i32) (result i32)
    (if (i32.eq (local.get 0) (i32.const 1)) (then (call $ask)))
    (if (i32.and (i32.eq (local.get 0) (i32.const 4)) (i32.lt_u (global.get $n) (i32.const COUNT)))
      (then (call $ask)))
    (i32.const 0))""",
    imports='(import "mf" "request" (func $request (param i32 i32 i32 i32) (result i32)))',
)


def wat_bytes(data: bytes) -> str:
    return "".join(f"\\{b:02x}" for b in data)


async def through_gateway(provider: LocalProvider, port: int, db: Path, count: int) -> list[float]:
    body = cbor.dumps({"prompt": PROMPT, "max_tokens": MAX_TOKENS})
    wat = ASKER.replace("BODY", wat_bytes(body)).replace("LEN", str(len(body))).replace("COUNT", str(count))
    bundle = build_bundle(wat, **{"sandbox.permissions.allowed_host_functions": ["request"],
                                  "sandbox.agent_id": "asker", "sandbox.memory.max_heap_kb": 4})
    router = Router()
    router.add("llm", llm_handler(provider))
    async with Gateway(broker=f"mqtt://127.0.0.1:{port}", db=db, router=router, quiet=True) as gw:
        board, _ = make_board("b1", gw.add_device("b1", fleet="test"), port,
                              clock=lambda: time.perf_counter() * 1000)  # sub-millisecond round trips
        board.spawn(bundle)
        run = asyncio.create_task(board.run(600_000))
        while len(board.link.rtt_ms) < count:
            await asyncio.sleep(0.01)
        board.stop()
        await run
        return list(board.link.rtt_ms)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer calls, a shorter demo")
    args = parser.parse_args()
    count = 6 if args.quick else 20
    provider = LocalProvider()
    messages = [{"role": "user", "content": PROMPT}]
    asyncio.run(provider.complete(messages, MAX_TOKENS))  # warm up
    direct, tokens = [], 0
    for _ in range(count):
        start = time.perf_counter()
        _, n = asyncio.run(provider.complete(messages, MAX_TOKENS))
        direct.append((time.perf_counter() - start) * 1000)
        tokens += n
    tokens_per_s = tokens / (sum(direct) / 1000)
    with tempfile.TemporaryDirectory() as tmp:
        broker = Mosquitto(Path(tmp)).start()
        try:
            path = asyncio.run(through_gateway(provider, broker.port, Path(tmp) / "gw.db", count))
        finally:
            broker.stop()
    ratio = statistics.median(path) / statistics.median(direct)
    print(f"LLM call, {count} times: direct {statistics.median(direct):.0f} ms vs agent->gateway->agent "
          f"{statistics.median(path):.0f} ms (medians) -> {ratio:.3f}x (goal <= 1.05x)")
    print(f"local model: {tokens_per_s:.0f} tokens/s (SmolLM2-135M-Instruct Q4_1, llama.cpp, {platform.machine()})")
    demo = subprocess.run([sys.executable, "-m", "microfang", "demo", "--seconds", "12" if args.quick else "20"],
                          capture_output=True, text=True, timeout=300, check=True)
    found = re.search(r"first LLM answer after ([0-9.]+) s", demo.stdout)
    first = float(found.group(1)) if found else None
    print(f"microfang demo: first LLM answer {first} s after start")
    save("llm", direct_ms=statistics.median(direct), through_gateway_ms=statistics.median(path),
         ratio=ratio, goal=1.05, tokens_per_s=tokens_per_s, demo_first_answer_s=first)


if __name__ == "__main__":
    main()
