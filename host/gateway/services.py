"""What the gateway offers agents beyond routing, set up from its settings (CLI and TOML):
the LLM, vector memory, MCP tools (tool.call) and A2A (a2a.send, and the fleet served as A2A
agents). One async context manager opens them, registers their request kinds with the
gateway's router and closes them in reverse order.

    async with Gateway(...) as gw, Services(gw, settings) as services:
        print(services.summary)      # ["llm local", "memory minilm (gateway-memory.db)", ...]
"""

from __future__ import annotations

from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

from microfang.firmware.errors import MicrofangError
from microfang.gateway.core import Gateway


def memory_db_for(db: Path) -> Path:
    return db.with_name(f"{db.stem}-memory.db")


class Services:
    def __init__(self, gateway: Gateway, settings: dict[str, Any]) -> None:
        self.gw = gateway
        self.s = settings
        self.summary: list[str] = []
        self._stack = AsyncExitStack()

    async def __aenter__(self) -> Services:
        try:
            self._llm()
            self._memory()
            await self._tools()
            await self._a2a()
        except BaseException:
            await self._stack.aclose()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._stack.aclose()

    def _llm(self) -> None:
        s = self.s
        if s.get("llm", "none") == "none":
            return
        from microfang.llm import LocalProvider, OpenAIProvider, ProviderError, llm_handler
        from microfang.llm.handler import TokenBudget

        try:
            provider = LocalProvider() if s["llm"] == "local" else OpenAIProvider(
                s["llm_url"], s["llm_model"], api_key=s["llm_key"])
        except ProviderError as e:
            raise MicrofangError(str(e)) from None
        self._stack.callback(provider.close)
        self.gw.router.add("llm", llm_handler(provider, TokenBudget(s.get("llm_tokens")), router=self.gw.router))
        self.summary.append(f"llm {s['llm']}")

    def _memory(self) -> None:
        s = self.s
        if s.get("memory", "none") == "none":
            return
        from microfang.memory.embed import open_embedder
        from microfang.memory.service import VectorMemory, memory_handlers
        from microfang.memory.store import SqliteVectorStore

        embedder = open_embedder(s["memory"], s.get("embed_url"), s.get("embed_model"))
        path = Path(s["memory_db"]) if s.get("memory_db") else memory_db_for(Path(s["db"]))
        memory = VectorMemory(embedder, SqliteVectorStore(path, embedder.dim, embedder.name))
        self._stack.callback(memory.close)
        self.gw.memory = memory
        for kind, handler in memory_handlers(memory, self.gw.fleet_of, self.gw.manifest_of).items():
            self.gw.router.add(kind, handler)
        self.summary.append(f"memory {embedder.name} ({path})")

    async def _tools(self) -> None:
        servers = self.s.get("mcp_servers") or {}
        if not servers:
            return
        from microfang.bridges.mcp_client import ToolBridge

        bridge = await self._stack.enter_async_context(ToolBridge(servers, self.gw))
        self.gw.router.add("tool.call", bridge.handle)
        if self.gw.memory is not None:
            await self.gw.memory.index_tools(bridge.descriptions)  # agents find tools with mem.search
        self.summary.append(f"{len(bridge.tools)} MCP tools from {', '.join(sorted(servers))}")

    async def _a2a(self) -> None:
        a2a = self.s.get("a2a") or {}
        if not a2a:
            return
        from microfang.bridges.a2a import A2ABridge

        bridge = await self._stack.enter_async_context(A2ABridge(a2a, self.gw))
        if bridge.peers:
            self.gw.router.add("a2a.send", bridge.handle)
        self.summary.extend(bridge.summary)
