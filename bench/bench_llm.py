"""LLM benchmarks, side by side in one run:

- gateway overhead per LLM call: the same prompt, settings and threads answered by the local
  model directly (provider.complete) and through the whole path (agent -> board -> Mosquitto
  -> gateway -> model -> back to the agent), alternating direct, through, through, direct so
  drift and the machine's load hit both alike, in one process with the board and gateway
  running for both; ratio of medians (goal <= 1.05x). Each call's model time (the provider's
  generation on its worker thread) is recorded too, so the path's own cost is seen apart
  from the model running slower or faster;
- tokens/s of the local default (SmolLM2-135M-Instruct, llama.cpp, this CPU);
- time from `microfang demo` start to the first LLM answer shown.

Usage: python bench/bench_llm.py [--quick]; results go to bench/results/llm.json.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from results_file import save  # noqa: E402
from brokers import Mosquitto  # noqa: E402
from fleet import make_board  # noqa: E402
from helpers import agent_wat, build_bundle  # noqa: E402

from microfang.firmware import abi, cbor  # noqa: E402
from microfang.gateway import Gateway, Router  # noqa: E402
from microfang.llm import LocalProvider, llm_handler  # noqa: E402

PROMPT = "In one short sentence: why do boards sleep?"
MAX_TOKENS = 32

# Asks the question once per message event it gets (the bench posts them, one at a time).
ASKER = agent_wat(
    """
  (data (i32.const 0) "llm")
  (data (i32.const 16) "BODY")
  (func (export "mf_on_event") (param i32 i32 i32) (result i32)
    (if (i32.eq (local.get 0) (i32.const 3))
      (then (drop (call $request (i32.const 0) (i32.const 3) (i32.const 16) (i32.const LEN)))))
    (i32.const 0))""",
    imports='(import "mf" "request" (func $request (param i32 i32 i32 i32) (result i32)))',
)


def wat_bytes(data: bytes) -> str:
    return "".join(f"\\{b:02x}" for b in data)


class TimedProvider(LocalProvider):
    """The local provider, noting how long each generation took on its worker thread, and
    seeded the same before each one: the same prompt gives the same answer, token for token,
    so both ways generate equal work."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.generation_ms: list[float] = []
        self.generated: list[int] = []

    def _generate(self, messages: list[dict[str, str]], max_tokens: int) -> tuple[str, int]:
        self._llm.set_seed(1)
        start = time.perf_counter()
        text, tokens = super()._generate(messages, max_tokens)
        self.generation_ms.append((time.perf_counter() - start) * 1000)
        self.generated.append(tokens)
        return text, tokens


async def side_by_side(provider: TimedProvider, port: int, db: Path, count: int) -> dict[str, list[float]]:
    """`count` calls each way, alternating (ABBA), with the board and gateway running throughout."""
    body = cbor.dumps({"prompt": PROMPT, "max_tokens": MAX_TOKENS})
    wat = ASKER.replace("BODY", wat_bytes(body)).replace("LEN", str(len(body)))
    bundle = build_bundle(wat, **{"sandbox.permissions.allowed_host_functions": ["request"],
                                  "sandbox.agent_id": "asker", "sandbox.memory.max_heap_kb": 4})
    messages = [{"role": "user", "content": PROMPT}]
    out: dict[str, list[float]] = {"direct": [], "through": [], "direct_model": [], "through_model": [],
                                   "direct_tokens": [], "through_tokens": []}
    router = Router()
    router.add("llm", llm_handler(provider))
    async with Gateway(broker=f"mqtt://127.0.0.1:{port}", db=db, router=router, quiet=True) as gw:
        board, _ = make_board("b1", gw.add_device("b1", fleet="test"), port,
                              clock=lambda: time.perf_counter() * 1000)  # sub-millisecond round trips
        board.spawn(bundle)
        run = asyncio.create_task(board.run(3_600_000))

        async def direct() -> float:
            start = time.perf_counter()
            await provider.complete(messages, MAX_TOKENS)
            return (time.perf_counter() - start) * 1000

        async def through() -> float:
            seen = len(board.link.rtt_ms)
            board.supervisor.post("asker", abi.EV_MESSAGE, b"")
            deadline = time.perf_counter() + 120
            while len(board.link.rtt_ms) == seen:  # the board times its own round trip
                if time.perf_counter() > deadline:
                    raise RuntimeError("no answer through the gateway in 120 s")
                await asyncio.sleep(0.05)  # the board times the call; rare polls leave the model alone
            return board.link.rtt_ms[-1]

        try:
            await direct()  # warm up both ways
            await through()
            for n in range(2 * count):
                way = "direct" if n % 4 in (0, 3) else "through"
                ms = await (direct() if way == "direct" else through())
                out[way].append(ms)
                out[f"{way}_model"].append(provider.generation_ms[-1])
                out[f"{way}_tokens"].append(provider.generated[-1])
        finally:
            board.stop()
            await run
    return out


def demo_first_answer(seconds: int) -> float | None:
    """Seconds from `microfang demo` start to the first LLM answer it shows."""
    demo = subprocess.run([sys.executable, "-m", "microfang", "demo", "--seconds", str(seconds)],
                          capture_output=True, text=True, timeout=300, check=True)
    found = re.search(r"first LLM answer after ([0-9.]+) s", demo.stdout)
    return float(found.group(1)) if found else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer calls, a shorter demo")
    parser.add_argument("--threads", type=int, default=1,
                        help="llama.cpp threads, the same both ways (default 1: with as many threads as cores, "
                             "a core taken by anything else stalls every step of the model)")
    parser.add_argument("--no-demo", action="store_true", help="leave out the demo's time to a first answer")
    args = parser.parse_args()
    count = 6 if args.quick else 20
    threads = args.threads
    provider = TimedProvider(threads=threads)
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        broker = Mosquitto(Path(tmp)).start()
        try:
            got = asyncio.run(side_by_side(provider, broker.port, Path(tmp) / "gw.db", count))
        finally:
            broker.stop()
            provider.close()
    med = {k: statistics.median(v) for k, v in got.items()}
    ratio = med["through"] / med["direct"]
    path_ms = statistics.median(t - m for t, m in zip(got["through"], got["through_model"]))
    hop_ms = statistics.median(d - m for d, m in zip(got["direct"], got["direct_model"]))
    tokens_per_s = sum(got["direct_tokens"]) / (sum(got["direct_model"]) / 1000)
    print(f"LLM call, {count} times each way, alternating (load {load:.2f}, {threads} threads, {MAX_TOKENS} tokens "
          f"max): direct {med['direct']:.1f} ms vs agent->gateway->agent {med['through']:.1f} ms (medians) -> "
          f"{ratio:.3f}x (goal <= 1.05x)")
    print(f"  model time: {med['direct_model']:.1f} ms direct, {med['through_model']:.1f} ms through; beyond the model: "
          f"{hop_ms:.2f} ms direct (the worker thread), {path_ms:.2f} ms through (board, broker, gateway, store); "
          f"tokens {med['direct_tokens']:.0f} vs {med['through_tokens']:.0f}")
    print(f"local model: {tokens_per_s:.0f} tokens/s (SmolLM2-135M-Instruct Q4_1, llama.cpp, {platform.machine()})")
    first = None if args.no_demo else demo_first_answer(12 if args.quick else 20)
    if first is not None:
        print(f"microfang demo: first LLM answer {first} s after start")
    save("llm", direct_ms=med["direct"], through_gateway_ms=med["through"], ratio=ratio, goal=1.05,
         model_ms={"direct": med["direct_model"], "through": med["through_model"]},
         beyond_model_ms={"direct": hop_ms, "through": path_ms}, calls_each_way=count, threads=threads,
         max_tokens=MAX_TOKENS, load_avg_1min=load, tokens_per_s=tokens_per_s, demo_first_answer_s=first,
         samples_ms={k: got[k] for k in ("direct", "through", "direct_model", "through_model")})


if __name__ == "__main__":
    main()
