"""Reconnect time after a broker restart: a MicroPython board (microfang's unix port at the
ESP32 heap, -X heapsize=110k) and a CPython board, side by side in one run, each with the echo
example, against a persistent Mosquitto and the gateway.

Each round stops the broker, waits `down` seconds, starts it again and measures, per board,
the seconds from the broker accepting connections to (a) the board's "link connected" line and
(b) its echo agent's first answer after the restart. The board's backoff (250 ms doubling,
+-25% jitter) is part of the figure: it is what a fleet sees.

Usage: python bench/bench_reconnect.py [--quick]; results go to bench/results/reconnect.json.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))
from boards_runtime import RunningBoard  # noqa: E402
from brokers import Mosquitto  # noqa: E402
from results_file import save  # noqa: E402

from microfang.gateway import Gateway  # noqa: E402
from microfang.tools import portbuild  # noqa: E402
from microfang.tools.build import build  # noqa: E402

BOARDS = (("mp1", "micropython"), ("c1", "cpython"))


def connects(lines: list[str]) -> int:
    return sum(1 for ln in lines if "[board] link connected" in ln)


def answers(lines: list[str], after_connect: int = 0) -> int:
    """Echo answers logged after the `after_connect`-th "link connected" line (0: all)."""
    count = seen = 0
    for ln in lines:
        if "[board] link connected" in ln:
            seen += 1
        elif ln.startswith("[echo] log echoed") and seen >= after_connect:
            count += 1
    return count


async def until(check, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return True
        await asyncio.sleep(0.01)
    return False


async def measure(folder: Path, rounds: int, down: float) -> dict:
    micropython = portbuild.build_unix(lambda line: None)
    echo = build(ROOT / "tools" / "sdk" / "examples" / "echo" / "agent.toml", folder / "echo.mfa")[0].read_bytes()
    broker = Mosquitto(folder, persistence=True).start()
    figures: dict[str, dict[str, list[float]]] = {name: {"connected_s": [], "answered_s": []} for name, _ in BOARDS}
    try:
        async with Gateway(broker=f"mqtt://127.0.0.1:{broker.port}", db=folder / "gw.db", quiet=True) as gw:
            boards = []
            for name, runtime in BOARDS:
                config = {"device": name, "fleet": "bench", "key": gw.add_device(name, fleet="bench"),
                          "host": "127.0.0.1", "port": broker.port, "telemetry_ms": 1000}
                boards.append(await RunningBoard(runtime, config, folder, [echo], micropython).start())
            try:
                assert await until(lambda: all(answers(b.lines()) >= 1 for b in boards), 30)
                for _ in range(rounds):
                    seen = [connects(b.lines()) for b in boards]
                    await asyncio.to_thread(broker.stop)
                    await asyncio.sleep(down)
                    await asyncio.to_thread(broker.start)
                    back = time.monotonic()
                    pending = {i for i in range(len(boards))}
                    got: dict[int, dict[str, float]] = {i: {} for i in pending}
                    deadline = back + 60
                    while pending and time.monotonic() < deadline:
                        for i in list(pending):
                            lines = boards[i].lines()
                            if "connected_s" not in got[i] and connects(lines) > seen[i]:
                                got[i]["connected_s"] = time.monotonic() - back
                            if "answered_s" not in got[i] and answers(lines, seen[i] + 1):
                                got[i]["answered_s"] = time.monotonic() - back
                            if len(got[i]) == 2:
                                pending.discard(i)
                        await asyncio.sleep(0.01)
                    for i, (name, _) in enumerate(BOARDS):
                        for key in ("connected_s", "answered_s"):
                            figures[name][key].append(round(got[i].get(key, float("inf")), 3))
            finally:
                for b in boards:
                    await b.stop()
    finally:
        broker.stop()
    return {name: {**rows, "median_connected_s": statistics.median(rows["connected_s"]),
                   "median_answered_s": statistics.median(rows["answered_s"])} for name, rows in figures.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 rounds instead of 5")
    args = parser.parse_args()
    rounds, down = (2, 1.0) if args.quick else (5, 1.0)
    with tempfile.TemporaryDirectory(prefix="bench-reconnect-") as tmp:
        figures = asyncio.run(measure(Path(tmp), rounds, down))
    for name, runtime in BOARDS:
        row = figures[name]
        print(f"{name} ({runtime}): connected again {row['median_connected_s']:.2f} s, first answer "
              f"{row['median_answered_s']:.2f} s after the broker came back (median of {rounds})")
    save("reconnect", rounds=rounds, broker_down_s=down, boards=dict(BOARDS), figures=figures)


if __name__ == "__main__":
    main()
