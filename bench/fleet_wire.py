"""The fleet bench's phases with boards on the wire (loadgen.py), so they measure the gateway:

- round trips: 4 boards keeping a window of echo requests in flight through the gateway,
  against the bare paho echo measured in the same run; then p99 at half that peak rate;
- connected boards: N boards (one TCP connection each) at 0.2 request/s, the largest N with
  zero loss and p99 <= 50 ms;
- one vs two gateway processes on one PostgreSQL store (MQTT shared subscriptions), and how
  long the fleet's replies stall when one of the two is killed -9.
"""

from __future__ import annotations

import asyncio
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from loadgen import Fleet

from microfang.gateway.store import Store

RATE = 0.2  # requests per second per board in the fleet phase


def raise_fd_limit() -> int:
    """Ten thousand boards are ten thousand sockets here (and at the broker)."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def register(where: str, prefix: str, count: int) -> dict[str, bytes]:
    store = Store(where)
    with store.transaction():
        keys = {f"{prefix}{n:05d}": store.add_device(f"{prefix}{n:05d}", "bench") for n in range(count)}
    store.close()
    return keys


def start_gateway(port: int, where: str, name: str, http: int = 0) -> subprocess.Popen:
    """`microfang gateway` as in production (no LLM, no memory, no rate limit in the way);
    `http`: the port of its /healthz (0: none)."""
    proc = subprocess.Popen([sys.executable, "-m", "microfang", "gateway", "--broker", f"mqtt://127.0.0.1:{port}",
                             "--store", where, "--name", name, "--http", str(http), "--memory", "none",
                             "--rate", "1000000"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = proc.stdout.readline() if proc.stdout else ""
    if not line.startswith("gateway up"):
        raise RuntimeError(f"gateway did not start: {line!r}")
    return proc


def stop(procs: list[subprocess.Popen]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(timeout=10)


def round_trips(port: int, keys: dict[str, bytes], total: int, window: int) -> dict[str, Any]:
    async def run() -> dict[str, Any]:
        async with Fleet(port, keys, "bench") as fleet:
            elapsed = await fleet.window(total, window)
            peak = fleet.stats()
            peak["per_s"] = peak["answered"] / elapsed
        async with Fleet(port, keys, "bench") as fleet:  # fresh boards: new request ids, same devices
            for board in fleet.boards:
                board.seq = 2 * total  # the gateway remembers the sequence numbers: go on above them
            await fleet.run(peak["per_s"] / 2 / len(keys), 5)
            half = fleet.stats()
        return {"peak": peak, "half_rate": half}

    return asyncio.run(run())


def fleet_scale(port: int, where: str, sizes: list[int], seconds: float, deadline: float) -> list[dict[str, Any]]:
    results = []
    for n in sizes:
        if time.monotonic() > deadline:
            break
        keys = register(where, f"n{n}-", n)

        async def run(keys: dict[str, bytes] = keys) -> dict[str, Any]:
            async with Fleet(port, keys, "bench") as fleet:
                await fleet.run(RATE, seconds, settle_s=3)
                return fleet.stats()

        row = asyncio.run(run())
        row["ok"] = row["lost"] == 0 and row["duplicates"] == 0 and row["p99_ms"] <= 50
        results.append(row)
        print(f"  {n:>6} boards at {RATE}/s: {row['asked']} asked, {row['answered']} answered, p50 "
              f"{row['p50_ms']:.1f} ms, p99 {row['p99_ms']:.1f} ms -> {'ok' if row['ok'] else 'over the limit'}")
        if not row["ok"]:
            break
    return results


def gateways_side_by_side(port: int, dsn: str, total: int, window: int) -> dict[str, Any]:
    """Round trips with one, then two gateway processes on one PostgreSQL store; then the two
    at a steady rate with one killed -9: the longest stall of the replies and what was lost."""
    figures: dict[str, Any] = {}
    keys = register(dsn, "pg", 4)
    used = 0
    for count in (1, 2):
        procs = [start_gateway(port, dsn, f"gw{i}") for i in range(count)]
        try:
            async def run(used: int = used) -> dict[str, Any]:
                async with Fleet(port, keys, "bench") as fleet:
                    for board in fleet.boards:
                        board.seq = used
                    elapsed = await fleet.window(total, window)
                    stats = fleet.stats()
                    stats["per_s"] = stats["answered"] / elapsed
                    return stats

            figures[f"gateways_{count}"] = asyncio.run(run())
            used += total
        finally:
            stop(procs)
    figures["two_vs_one"] = figures["gateways_2"]["per_s"] / figures["gateways_1"]["per_s"]
    figures["failover"] = _failover(port, dsn, used)
    return figures


def _failover(port: int, dsn: str, used: int) -> dict[str, Any]:
    keys = register(dsn, "fo", 200)
    procs = [start_gateway(port, dsn, f"gw{i}") for i in range(2)]
    try:
        async def run() -> dict[str, Any]:
            async with Fleet(port, keys, "bench") as fleet:
                steady = asyncio.create_task(fleet.run(1.0, 8, settle_s=10))
                await asyncio.sleep(3)
                killed = time.perf_counter()
                os.kill(procs[0].pid, signal.SIGKILL)
                await asyncio.sleep(2)
                restarted = time.perf_counter()
                procs[0] = await asyncio.get_running_loop().run_in_executor(None, start_gateway, port, dsn, "gw0")
                back = time.perf_counter() - restarted
                await steady
                stats = fleet.stats()
                stats["gateway_restart_s"] = back
                stats["max_ms"] = max((r for b in fleet.boards for r in b.rtt_ms), default=float("nan"))
                stats["since_kill_s"] = time.perf_counter() - killed
                return stats

        return asyncio.run(run())
    finally:
        stop(procs)


def postgres(folder: Path) -> tuple[Any, str]:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from postgres import PostgresCluster

    folder.parent.chmod(0o755)  # initdb runs as the postgres user
    cluster = PostgresCluster(folder).start()
    return cluster, cluster.dsn
