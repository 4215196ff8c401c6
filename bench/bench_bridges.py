"""Tool-chain throughput: agent -> gateway -> MCP tool -> agent, vs the same agents asking the
gateway's echo handler, side by side in one run through a real Mosquitto on 127.0.0.1.

Boards (the real firmware on CPython, in this process) run a pump agent that keeps WINDOW
requests in flight; the gateway runs in its own process with the `parts` MCP server of the
tests (tests/mcp_tools_server.py, official SDK, stdio, its own process) bridged as tool.call,
once with one session (one server process) and once with SESSIONS. Every tool call passes the
guard (registered manifest, exfiltration screen, output filter) and is audited.
Baselines: the bare MCP SDK client calling the same server, nothing else (same concurrency):
over stdio with 1 and SESSIONS sessions, and over streamable HTTP (one server process): the
ceiling a Python MCP server sets here, and which transport carries more. Each phase also records
the CPU milliseconds per task of the boards (this process), the gateway, its MCP server processes
and Mosquitto: where a task's time goes. Goal: >= 3,000
tool-chain tasks/s. Rounds alternate so drift hits every phase; the load average is recorded.

Usage: python bench/bench_bridges.py [--quick]; results go to bench/results/bridges.json.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import AsyncExitStack
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))
from bench_fleet import drive, make_boards, pump, start_gateway  # noqa: E402
from results_file import save  # noqa: E402
from brokers import Mosquitto  # noqa: E402

from microfang.firmware import bundle, cbor  # noqa: E402
from microfang.gateway.store import Store  # noqa: E402

WINDOW = 16
SESSIONS = 2
SERVER = [sys.executable, str(ROOT / "tests" / "mcp_tools_server.py")]


def bare_mcp(targets: list, calls: int, concurrency: int) -> float:
    """Calls/s of the official SDK client straight to the MCP server (one client session per
    target, each call to the least busy one, as the gateway's bridge does)."""
    from mcp import Client

    async def measure() -> float:
        async with AsyncExitStack() as stack:
            clients = [await stack.enter_async_context(Client(t)) for t in targets]
            for client in clients:
                await client.list_tools()
            busy = [0] * len(clients)
            gate = asyncio.Semaphore(concurrency)

            async def one() -> None:
                async with gate:
                    i = min(range(len(busy)), key=busy.__getitem__)
                    busy[i] += 1
                    try:
                        await clients[i].call_tool("lookup", {"part": "fuse"})
                    finally:
                        busy[i] -= 1

            start = time.perf_counter()
            await asyncio.gather(*[one() for _ in range(calls)])
            return calls / (time.perf_counter() - start)

    return asyncio.run(measure())


def stdio_targets(n: int) -> list:
    from mcp import StdioServerParameters

    return [StdioServerParameters(command=SERVER[0], args=SERVER[1:]) for _ in range(n)]


def http_server() -> tuple[subprocess.Popen, str]:
    """The same parts server over streamable HTTP on a free port; (process, URL) once it answers."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([*SERVER, "--http", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return proc, f"http://127.0.0.1:{port}/mcp"
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError("the HTTP MCP server did not start")


def cpu_s(pid: int) -> float:
    """CPU seconds (user + system) process `pid` has used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text(encoding="ascii").rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(c) for c in (task / "children").read_text(encoding="ascii").split()]
    return found


def run(port: int, db: str, prefix: str, kind: str, body: bytes, boards_n: int, per_board: int,
        procs: dict[str, list[int]]) -> dict:
    """Fresh boards pumping `kind` requests; tasks/s and the CPU milliseconds per task each of
    `procs` (name -> pids) used meanwhile, with the boards' (this process)."""
    agent = pump(per_board, WINDOW, kind, body, **{"sandbox.permissions.tool_access": ["parts.lookup"]})
    boards = make_boards(db, port, boards_n, agent, prefix)
    store = Store(db)
    for board in boards:
        store.register_manifest(board.device, bundle.decode(agent)[0])
    store.close()
    procs = {"boards": [os.getpid()], **procs}
    before = {name: sum(cpu_s(p) for p in pids) for name, pids in procs.items()}
    got, elapsed = asyncio.run(drive(boards, boards_n * per_board, 120))
    cpu_ms = {name: (sum(cpu_s(p) for p in pids) - before[name]) * 1000 / max(got, 1) for name, pids in procs.items()}
    return {"kind": kind, "boards": boards_n, "tasks": got, "per_s": got / elapsed, "cpu_ms_per_task": cpu_ms}


def through_gateway(broker: Mosquitto, tmp: str, n: int, sessions: int, phases: list[tuple[str, str, bytes]],
                    boards_n: int, per_board: int) -> dict[str, dict]:
    """A gateway bridged to the parts server with `sessions` sessions; each phase (label, kind,
    CBOR body) run by fresh boards in turn."""
    db = str(Path(tmp) / f"gw-{n}-{sessions}.db")
    servers = {"parts": {"command": SERVER, "sessions": sessions}}
    gateway, stop = start_gateway(broker.port, db, {"mcp_servers": servers})
    assert gateway.pid is not None and broker.proc is not None
    procs = {"gateway": [gateway.pid], "mcp_servers": children(gateway.pid), "mosquitto": [broker.proc.pid]}
    try:
        return {label: run(broker.port, db, f"{label[:1]}{n}{sessions}", kind, body, boards_n, per_board, procs)
                for label, kind, body in phases}
    finally:
        stop.set()
        gateway.join(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer tasks, one round")
    args = parser.parse_args()
    per_board = 250 if args.quick else 1000
    boards_n = 4
    calls = boards_n * per_board
    tool = cbor.dumps({"name": "parts.lookup", "args": {"part": "fuse"}})
    rounds = []
    with tempfile.TemporaryDirectory() as tmp:
        broker = Mosquitto(Path(tmp)).start()
        http, url = http_server()
        try:
            for n in range(1 if args.quick else 2):  # alternate, so drift hits every phase
                load = os.getloadavg()[0]
                one = through_gateway(broker, tmp, n, 1, [("echo", "echo", b"\xf6"), ("tool", "tool.call", tool)],
                                      boards_n, per_board)
                many = through_gateway(broker, tmp, n, SESSIONS, [("tool", "tool.call", tool)], boards_n, per_board)
                bare = {"stdio_1": bare_mcp(stdio_targets(1), calls, boards_n * WINDOW),
                        f"stdio_{SESSIONS}": bare_mcp(stdio_targets(SESSIONS), calls, boards_n * WINDOW),
                        "http_1": bare_mcp([url], calls, boards_n * WINDOW)}
                echo, chain1, chain2 = one["echo"]["per_s"], one["tool"]["per_s"], many["tool"]["per_s"]
                best = max(chain1, chain2)
                rounds.append({"load_avg_1min": load, "echo": one["echo"], "tool_call_1_session": one["tool"],
                               f"tool_call_{SESSIONS}_sessions": many["tool"], "bare_mcp_per_s": bare,
                               "ratio_to_echo": best / echo, "ratio_to_bare_mcp": best / max(bare.values())})
                print(f"round {n + 1} (load {load:.2f}): echo handler {echo:,.0f} tasks/s; agent->gateway->MCP tool->agent "
                      f"{chain1:,.0f}/s with 1 session, {chain2:,.0f}/s with {SESSIONS} -> {best / echo:.2f}x the echo "
                      f"path; bare MCP SDK calls: stdio {bare['stdio_1']:,.0f}/s (1 session), "
                      f"{bare[f'stdio_{SESSIONS}']:,.0f}/s ({SESSIONS}), streamable HTTP {bare['http_1']:,.0f}/s -> "
                      f"chain {best / max(bare.values()):.2f}x the best bare ({boards_n} boards x window {WINDOW}; "
                      f"goal >= 3,000/s)")
                for label, phase in (("echo", one["echo"]), ("tool, 1 session", one["tool"]),
                                     (f"tool, {SESSIONS} sessions", many["tool"])):
                    print(f"  CPU ms per task, {label}: " + ", ".join(f"{k} {v:.2f}" for k, v in phase["cpu_ms_per_task"].items()))
        finally:
            http.terminate()
            http.wait(10)
            broker.stop()
    best = [max(r["tool_call_1_session"]["per_s"], r[f"tool_call_{SESSIONS}_sessions"]["per_s"]) for r in rounds]
    save("bridges", rounds=rounds, tool_chain_median_per_s=statistics.median(best), goal_per_s=3000)


if __name__ == "__main__":
    main()
