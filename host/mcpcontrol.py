"""The MCP tools that act on the fleet (left out by `microfang mcp --read-only`): send an agent a
message and wait for its answer, spawn (deploy) a bundle, suspend, resume, reclaim.

`microfang mcp` does not own the boards' MQTT sessions: it queues each action as a job in the
gateway's database, where the running gateway carries it out (as for `microfang deploy`), and
waits for the job's result.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError

from microfang.firmware.errors import MicrofangError
from microfang.gateway.store import JOB_ACTIVE, Store
from microfang.ops import open_store

POLL_S = 0.05


async def _wait(store: Store, job: int, timeout: float, what: str) -> dict[str, Any]:
    """The job's row once the gateway has ended it; a ToolError if it failed or never ended."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        [row] = store.jobs([job])
        if row["state"] not in JOB_ACTIVE:
            if row["state"] == "failed":
                raise ToolError(row["detail"])
            return row
        await asyncio.sleep(POLL_S)
    raise ToolError(f"the gateway did not carry out the {what} in {timeout:.0f} s (is `microfang gateway` running "
                    "on this database?)")


async def _run_job(db: Path, kind: str, device: str, agent: str, data: bytes | None, timeout: float) -> str:
    store = open_store(db)
    try:
        if device not in store.devices():
            raise ToolError(f"no device {device!r} in this fleet")
        return (await _wait(store, store.add_job(kind, device, agent, data), timeout, kind))["detail"]
    finally:
        store.close()


def add_control_tools(server: MCPServer, db: Path) -> None:
    @server.tool()
    async def send_event(device: str, agent: str, text: str, timeout_s: float = 10.0) -> str:
        """Send an agent a message event {text} and return what it publishes in answer."""
        data = json.dumps({"text": text[:256], "timeout": max(1.0, min(timeout_s, 60.0))}).encode()
        return await _run_job(db, "message", device, agent, data, min(timeout_s, 60.0) + 5)

    @server.tool()
    async def spawn_agent(device: str, bundle_path: str) -> str:
        """Install and start an agent bundle (.mfa on the gateway host) on a board: a signed deploy."""
        from microfang.deploy import queue_deploy

        try:
            [job] = queue_deploy(db, Path(bundle_path), [device])
        except MicrofangError as e:
            raise ToolError(str(e)) from None
        store = open_store(db)
        try:
            row = await _wait(store, job, 60, "deploy")
        finally:
            store.close()
        return f"{row['agent']} on {device}: {row['detail']}"

    async def lifecycle(kind: str, device: str, agent: str) -> str:
        return await _run_job(db, kind, device, agent, None, 15)

    @server.tool()
    async def suspend_agent(device: str, agent: str) -> str:
        """Suspend an agent: it keeps its memory and gets no events until resumed."""
        return await lifecycle("suspend", device, agent)

    @server.tool()
    async def resume_agent(device: str, agent: str) -> str:
        """Resume a suspended agent."""
        return await lifecycle("resume", device, agent)

    @server.tool()
    async def reclaim_agent(device: str, agent: str) -> str:
        """Stop an agent and give its memory back to the board (its bundle stays on flash)."""
        return await lifecycle("reclaim", device, agent)


def add_memory_tool(server: MCPServer, db: Path) -> None:
    """search_memory: the gateway's vector memory, read with the same embedder."""
    from microfang.gateway.services import memory_db_for

    opened: dict[str, Any] = {}

    def memory() -> Any:
        if "store" not in opened:
            from microfang.memory.embed import open_embedder
            from microfang.memory.store import SqliteVectorStore

            path = memory_db_for(db)
            if not path.is_file():
                raise ToolError(f"no vector memory at {path} (the gateway creates it with --memory)")
            embedder = open_embedder("auto")
            # cache_bytes=0: the gateway, another process, keeps adding memories; read them from disk.
            opened["embedder"], opened["store"] = embedder, SqliteVectorStore(path, embedder.dim, embedder.name,
                                                                               cache_bytes=0)
        return opened["embedder"], opened["store"]

    @server.tool()
    def search_memory(device: str, agent: str, query: str, k: int = 3, kind: str | None = None,
                      fleet: str | None = None) -> list[dict[str, Any]]:
        """Search an agent's vector memory (episodic, semantic, procedural), or a fleet's shared
        memory when `fleet` is given; best matches first with their scores."""
        from microfang.memory.service import agent_scope, fleet_scope

        try:
            embedder, store = memory()
        except MicrofangError as e:
            raise ToolError(str(e)) from None
        scope = fleet_scope(fleet) if fleet else agent_scope(device, agent)
        return store.search(scope, embedder.embed([query])[0], max(1, min(k, 20)), kind)
