"""The MCP tools beyond reading the store: vector memory search (MemorySearch) and the tools
that act on the fleet (FleetControl; left out by `microfang mcp --read-only`): send an agent a
message and wait for its answer, spawn (deploy) a bundle, suspend, resume, reclaim.

`microfang mcp` does not own the boards' MQTT sessions: it queues each action as a job in the
gateway's database, where the running gateway carries it out (as for `microfang deploy`), and
waits for the job's end with gateway.jobs.wait_jobs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mcp.server.mcpserver.exceptions import ToolError

from microfang.config import memory_db_for
from microfang.deploy import queue_deploy
from microfang.firmware.errors import MicrofangError
from microfang.gateway.db import is_url
from microfang.gateway.jobs import JobsFailed, wait_jobs
from microfang.memory.embed import Embedder, open_embedder
from microfang.memory.service import agent_scope, fleet_scope
from microfang.memory.store import SqliteVectorStore
from microfang.ops import Where, open_store


class FleetControl:
    """The control tools; each queues a job for the gateway running on `db` and waits for it."""

    def __init__(self, db: Where) -> None:
        self.db = db

    async def _wait(self, job: int, timeout: float) -> dict[str, Any]:
        store = open_store(self.db)
        try:
            [row] = await wait_jobs(store, [job], timeout)
        except JobsFailed as e:
            [row] = e.jobs
            if row["state"] == "failed":
                raise ToolError(row["detail"]) from None
            raise ToolError(f"the gateway did not carry out the {row['kind']} in {timeout:.0f} s (is `microfang "
                            "gateway` running on this database?)") from None
        finally:
            store.close()
        return row

    async def _run(self, kind: str, device: str, agent: str, data: bytes | None, timeout: float) -> str:
        store = open_store(self.db)
        try:
            if store.device(device) is None:
                raise ToolError(f"no device {device!r} in this fleet")
            if store.manifest(device, agent) is None:  # at once, not after the job's whole timeout
                raise ToolError(f"no agent {agent!r} installed on {device!r}")
            job = store.add_job(kind, device, agent, data)
        finally:
            store.close()
        return str((await self._wait(job, timeout))["detail"])

    async def send_event(self, device: str, agent: str, text: str, timeout_s: float = 10.0) -> str:
        """Send an agent a message event {text} and return what it publishes in answer."""
        data = json.dumps({"text": text[:256], "timeout": max(1.0, min(timeout_s, 60.0))}).encode()
        return await self._run("message", device, agent, data, min(timeout_s, 60.0) + 5)

    async def spawn_agent(self, device: str, bundle_path: str) -> str:
        """Install and start an agent bundle (.mfa on the gateway host) on a board: a signed deploy."""
        try:
            [job] = queue_deploy(self.db, Path(bundle_path), [device])
        except MicrofangError as e:
            raise ToolError(str(e)) from None
        row = await self._wait(job, 60)
        return f"{row['agent']} on {device}: {row['detail']}"

    async def suspend_agent(self, device: str, agent: str) -> str:
        """Suspend an agent: it keeps its memory and gets no events until resumed."""
        return await self._run("suspend", device, agent, None, 15)

    async def resume_agent(self, device: str, agent: str) -> str:
        """Resume a suspended agent."""
        return await self._run("resume", device, agent, None, 15)

    async def reclaim_agent(self, device: str, agent: str) -> str:
        """Stop an agent and give its memory back to the board (its bundle stays on flash)."""
        return await self._run("reclaim", device, agent, None, 15)


class MemorySearch:
    """search_memory: the gateway's vector memory (beside `db`), read with the same embedder."""

    def __init__(self, db: Where) -> None:
        # A PostgreSQL store keeps vector memory where the gateway's [memory] db says; beside a
        # SQLite file by default.
        self.path = Path("-") if is_url(db) else memory_db_for(Path(db))
        self._opened: tuple[Embedder, SqliteVectorStore] | None = None

    def _open(self) -> tuple[Embedder, SqliteVectorStore]:
        if self._opened is None:
            if not self.path.is_file():
                raise ToolError(f"no vector memory at {self.path} (the gateway creates it with --memory)")
            try:
                embedder = open_embedder("auto")
                # cache_bytes=0: the gateway, another process, keeps adding memories; read them from disk.
                self._opened = embedder, SqliteVectorStore(self.path, embedder.dim, embedder.name, cache_bytes=0)
            except MicrofangError as e:
                raise ToolError(str(e)) from None
        return self._opened

    def search_memory(self, device: str, agent: str, query: str, k: int = 3, kind: str | None = None,
                      fleet: str | None = None) -> list[dict[str, Any]]:
        """Search an agent's vector memory (episodic, semantic, procedural), or a fleet's shared
        memory when `fleet` is given; best matches first with their scores."""
        embedder, store = self._open()
        scope = fleet_scope(fleet) if fleet else agent_scope(device, agent)
        return store.search(scope, embedder.embed([query])[0], max(1, min(k, 20)), kind)
