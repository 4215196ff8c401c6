"""The composition root: the gateway and what it offers agents beyond routing, built from its
settings (microfang.config.GatewaySettings): the LLM, vector memory, MCP tools (tool.call)
and A2A (a2a.send, and the fleet served as A2A agents). Each plug-in gets the gateway as a
`microfang.request.GatewayAPI` and is hooked in here, in plain sight: its request kinds with
`router.add`, episodic memory with `add_log_listener`, its health with `add_health_part`.

    async with open_gateway(settings) as (gw, summary):   # summary: ["llm local", ...]
        await gw.serve_forever()

`Services(gw, settings)` alone adds the plug-ins to a gateway built elsewhere (tests, benches).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

from microfang.a2aserve import A2AServer
from microfang.bridges.a2a import A2ABridge
from microfang.bridges.mcp_client import ToolBridge
from microfang.config import GatewaySettings
from microfang.firmware.errors import MicrofangError
from microfang.gateway.core import Gateway
from microfang.gateway.db import is_url
from microfang.gateway.limits import Ledger, SharedBudget, SharedRateLimiter, SharedSpendWindow
from microfang.gateway.requests import LLM_KIND
from microfang.gateway.router import Budget, RateLimiter, Router
from microfang.llm import LocalProvider, OpenAIProvider, ProviderError, llm_handler
from microfang.llm.handler import TokenBudget
from microfang.memory.embed import open_embedder
from microfang.memory.pg import PgVectorStore
from microfang.memory.service import VectorMemory, memory_handlers
from microfang.memory.store import SqliteVectorStore, VectorStore


class Services:
    def __init__(self, gateway: Gateway, settings: GatewaySettings, ledger: Ledger | None = None) -> None:
        self.gw = gateway
        self.s = settings
        self.ledger = ledger  # the limits shared with the other gateways on the store (limits.py)
        self.summary: list[str] = []
        self.memory: VectorMemory | None = None
        self._stack = AsyncExitStack()

    async def __aenter__(self) -> Services:
        async with AsyncExitStack() as stack:  # a part that fails closes those opened before it
            self._llm(stack)
            self._memory(stack)
            await self._tools(stack)
            await self._a2a(stack)
            self._stack = stack.pop_all()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._stack.aclose()

    def _llm(self, stack: AsyncExitStack) -> None:
        s = self.s
        if s.llm == "none":
            return
        try:
            provider = LocalProvider() if s.llm == "local" else OpenAIProvider(s.llm_url, s.llm_model,
                                                                                api_key=s.llm_key)
        except ProviderError as e:
            raise MicrofangError(str(e)) from None
        stack.callback(provider.close)
        spending = None if self.ledger is None else SharedSpendWindow(self.ledger, "llm_tokens")
        self.gw.router.add(LLM_KIND, llm_handler(provider, TokenBudget(s.llm_tokens, spending=spending),
                                                  counts=self.gw.metrics))
        self.summary.append(f"llm {s.llm}")

    def _memory(self, stack: AsyncExitStack) -> None:
        s = self.s
        if s.memory == "none":
            return
        embedder = open_embedder(s.memory, s.embed_url, s.embed_model)
        memory = VectorMemory(embedder, vector_store(s.memory_store, embedder.dim, embedder.name))
        stack.callback(memory.close)
        self.memory = memory
        self.gw.add_log_listener(memory.index_log)
        self.gw.add_health_part("memory", lambda: {"embedder": memory.embedder.name,
                                                   "episodic_indexed": memory.indexed})
        for kind, handler in memory_handlers(memory, self.gw.fleet_of, self.gw.manifest_of).items():
            self.gw.router.add(kind, handler)
        self.summary.append(f"memory {embedder.name} ({s.memory_store})")

    async def _tools(self, stack: AsyncExitStack) -> None:
        servers = self.s.mcp_servers
        if not servers:
            return
        bridge = await stack.enter_async_context(ToolBridge(servers, self.gw))
        self.gw.router.add("tool.call", bridge.handle)
        if self.memory is not None:
            await self.memory.index_tools(bridge.descriptions)  # agents find tools with mem.search
        self.summary.append(f"{len(bridge.tools)} MCP tools from {', '.join(sorted(servers))}")

    async def _a2a(self, stack: AsyncExitStack) -> None:
        if not self.s.a2a:
            return
        bridge = await stack.enter_async_context(A2ABridge(self.s.a2a, self.gw))
        if bridge.peers:
            self.gw.router.add("a2a.send", bridge.handle)
        if self.s.a2a.get("port"):  # the fleet served as an A2A agent: a process of its own (a2aserve.py)
            server = await stack.enter_async_context(A2AServer(self.s.a2a, self.s.where))
            self.gw.add_health_part("a2a", server.health)
            self.summary.append(server.summary)
        self.summary.extend(bridge.summary)


def vector_store(where: str, dim: int, model: str) -> VectorStore:
    """Vector memory in PostgreSQL + pgvector at a postgresql:// URL, else in SQLite at a path."""
    if where.startswith(("postgresql://", "postgres://")):
        return PgVectorStore(where, dim, model)
    return SqliteVectorStore(Path(where), dim, model)


def router_for(settings: GatewaySettings, ledger: Ledger | None = None) -> Router:
    """The request router with the settings' rate limit (bursts of twice the rate) and budget,
    counted in `ledger` if given (shared with the other gateways on the store)."""
    burst = max(1, int(settings.rate * 2))
    if ledger is not None:
        return Router(limiter=SharedRateLimiter(ledger, rate=settings.rate, burst=burst),
                      budget=SharedBudget(ledger, settings.budget))
    return Router(limiter=RateLimiter(rate=settings.rate, burst=burst), budget=Budget(settings.budget))


@asynccontextmanager
async def open_gateway(settings: GatewaySettings, *, quiet: bool = False) -> AsyncIterator[tuple[Gateway, list[str]]]:
    """The gateway connected to its broker with every plug-in the settings turn on; yields it
    and one line of summary per plug-in. ConnectionError if the broker cannot be reached."""
    s = settings
    ledger = Ledger(s.where) if is_url(s.where) else None  # several gateways may share the store: and its limits
    try:
        async with Gateway(broker=s.broker, db=s.where, name=s.name, http_port=s.http or None, user=s.user,
                           password=s.password, cafile=s.cafile, router=router_for(s, ledger), quiet=quiet,
                           outputs=s.outputs, discovery=s.discovery) as gw, \
                Services(gw, s, ledger) as services:
            assert gw.presence is not None
            gw.presence.silence_s = s.offline_after
            yield gw, services.summary
    finally:
        if ledger is not None:
            ledger.close()
