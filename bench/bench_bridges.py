"""Tool-chain throughput: agent -> gateway -> MCP tool -> agent, vs the same agents asking the
gateway's echo handler, side by side in one run through a real Mosquitto on 127.0.0.1.

Boards (the real firmware on CPython, in this process) run a pump agent that keeps WINDOW
requests in flight; the gateway runs in its own process with the `parts` MCP server of the
tests (tests/mcp_tools_server.py, stdio, its own process) bridged as tool.call. Every tool call
passes the guard (registered manifest, exfiltration screen, output filter) and is audited.
A second baseline: the bare MCP SDK client calling the same server over stdio, nothing else
(same concurrency): the ceiling a Python MCP server sets here. Goal: >= 3,000 tool-chain tasks/s.

Usage: python bench/bench_bridges.py [--quick]; results go to bench/results/bridges.json.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
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


def bare_mcp(server: list[str], calls: int, concurrency: int) -> float:
    """Calls/s of the official SDK client straight to the MCP server process (stdio)."""
    from mcp import Client, StdioServerParameters

    async def measure() -> float:
        async with Client(StdioServerParameters(command=server[0], args=server[1:])) as client:
            await client.list_tools()
            gate = asyncio.Semaphore(concurrency)

            async def one() -> None:
                async with gate:
                    await client.call_tool("lookup", {"part": "fuse"})

            start = time.perf_counter()
            await asyncio.gather(*[one() for _ in range(calls)])
            return calls / (time.perf_counter() - start)

    return asyncio.run(measure())


def run(port: int, db: str, prefix: str, kind: str, body: bytes, boards_n: int, per_board: int) -> dict:
    agent = pump(per_board, WINDOW, kind, body, **{"sandbox.permissions.tool_access": ["parts.lookup"]})
    boards = make_boards(db, port, boards_n, agent, prefix)
    store = Store(db)
    for board in boards:
        store.register_manifest(board.device, bundle.decode(agent)[0])
    store.close()
    got, elapsed = asyncio.run(drive(boards, boards_n * per_board, 120))
    return {"kind": kind, "boards": boards_n, "tasks": got, "per_s": got / elapsed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer tasks")
    args = parser.parse_args()
    per_board = 250 if args.quick else 1000
    boards_n = 4
    tool = cbor.dumps({"name": "parts.lookup", "args": {"part": "fuse"}})
    servers = {"parts": {"command": [sys.executable, str(ROOT / "tests" / "mcp_tools_server.py")]}}
    rounds = []
    with tempfile.TemporaryDirectory() as tmp:
        broker = Mosquitto(Path(tmp)).start()
        db = str(Path(tmp) / "gw.db")
        gateway, stop = start_gateway(broker.port, db, {"mcp_servers": servers})
        try:
            for n in range(1 if args.quick else 2):  # alternate, so drift hits both
                echo = run(broker.port, db, f"e{n}", "echo", b"\xf6", boards_n, per_board)
                chain = run(broker.port, db, f"t{n}", "tool.call", tool, boards_n, per_board)
                bare = bare_mcp(servers["parts"]["command"], boards_n * per_board, boards_n * WINDOW)
                rounds.append({"echo": echo, "tool_call": chain, "bare_mcp_per_s": bare,
                               "ratio": chain["per_s"] / echo["per_s"], "ratio_to_bare_mcp": chain["per_s"] / bare})
                print(f"round {n + 1}: echo handler {echo['per_s']:,.0f} tasks/s, agent->gateway->MCP tool->agent "
                      f"{chain['per_s']:,.0f} tasks/s, bare MCP SDK calls {bare:,.0f}/s -> "
                      f"{chain['per_s'] / echo['per_s']:.2f}x the echo path, {chain['per_s'] / bare:.2f}x bare MCP "
                      f"({boards_n} boards x window {WINDOW}; goal >= 3,000/s)")
        finally:
            stop.set()
            gateway.join(10)
            broker.stop()
    save("bridges", rounds=rounds)


if __name__ == "__main__":
    main()
