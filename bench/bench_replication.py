"""Memory-log replication: records a second an agent can append and have replicated to the
gateway, sustained, on a MicroPython board (microfang's unix port at the ESP32 heap,
-X heapsize=110k) and a CPython board side by side in one run, against Mosquitto and the
gateway. The agent (tests/agents.py appender) appends a 16-byte record on every timer event,
every 10 ms (the shortest timer), to a 4 KiB memory log; the figure is the growth of the
gateway's replica over the run, its ratio to the goal (50 records/s with no E_FULL), and the
E_FULL faults the agent met (goal 0).

Usage: python bench/bench_replication.py [--quick]; results go to bench/results/replication.json.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))
from brokers import Mosquitto  # noqa: E402
from results_file import save  # noqa: E402
from test_replication import RATE, replication_run  # noqa: E402

from microfang.tools import portbuild  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="5 s per board instead of 30")
    args = parser.parse_args()
    seconds = 5 if args.quick else 30
    micropython = portbuild.build_unix(lambda line: None)
    figures = {}
    with tempfile.TemporaryDirectory() as tmp:
        broker = Mosquitto(Path(tmp)).start()
        try:
            for runtime in ("micropython", "cpython"):
                rate, replica, lines = asyncio.run(replication_run(runtime, broker.port, Path(tmp), micropython,
                                                                   seconds))
                full = sum(1 for ln in lines if "mem_append" in ln and "full" in ln)
                in_order = [seq for seq, _ in replica] == list(range(1, len(replica) + 1))
                figures[runtime] = {"records_per_s": round(rate, 1), "ratio_to_goal": round(rate / RATE, 2),
                                    "e_full": full, "records": len(replica), "in_order_once": in_order,
                                    "seconds": seconds}
                print(f"{runtime}: {rate:.1f} records/s replicated over {seconds} s ({rate / RATE:.2f}x the goal of "
                      f"{RATE}/s), {full} E_FULL, {len(replica)} records held, each once in order: {in_order}")
        finally:
            broker.stop()
    save("replication", goal_records_per_s=RATE, heap="110k (micropython)", runtimes=figures)


if __name__ == "__main__":
    main()
