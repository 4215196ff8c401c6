"""Vector memory for agents: the `mem.put` and `mem.search` request kinds, and episodic memory
indexed from the memory-log records boards replicate.

Scopes: an agent always reads and writes its own (`agent:{device}/{agent}`); the fleet's shared
scope (`fleet:{fleet}`) only if the agent's registered manifest says `[vector_memory] shared =
true` — the gateway's own record from deploy/flash, never what a board claims. Embedding runs
on one worker thread, so requests never block the gateway's event loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from microfang.firmware import cbor
from microfang.firmware.errors import MicrofangError
from microfang.memory.embed import Embedder
from microfang.memory.store import KINDS, VectorStore
from microfang.request import REPLY_BYTES, Handler, Request

MAX_TEXT = 2000  # bytes of text per memory
MAX_K = 10


class MemoryRequestError(MicrofangError):
    """A mem.put or mem.search request is malformed or not allowed."""


def agent_scope(device: str, agent: str) -> str:
    return f"agent:{device}/{agent}"


def fleet_scope(fleet: str) -> str:
    return f"fleet:{fleet}"


TOOLS_SCOPE = "tools"  # procedural memory every agent may search: the tools the gateway bridges


class VectorMemory:
    """An embedder and a store, used from the event loop."""

    def __init__(self, embedder: Embedder, store: VectorStore) -> None:
        if embedder.dim != store.dim:
            raise MicrofangError(f"embedder {embedder.name} makes {embedder.dim}-dim vectors, the store holds {store.dim}")
        self.embedder = embedder
        self.store = store
        self._worker = ThreadPoolExecutor(1, thread_name_prefix="microfang-embed")
        self.indexed = 0

    async def _run(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._worker, fn, *args)

    async def put(self, scope: str, kind: str, text: str, meta: dict[str, Any] | None = None) -> int:
        def work() -> int:
            return self.store.add(scope, kind, text, meta or {}, self.embedder.embed([text])[0])

        return await self._run(work)

    async def search(self, scope: str, query: str, k: int = 3, kind: str | None = None) -> list[dict[str, Any]]:
        def work() -> list[dict[str, Any]]:
            return self.store.search(scope, self.embedder.embed([query])[0], k, kind)

        return await self._run(work)

    def index_log(self, device: str, agent: str, records: list[tuple[int, bytes]]) -> None:
        """Episodic memory: each replicated record that is text becomes a memory (in the background)."""
        texts = []
        for seq, payload in records:
            try:
                text = payload.decode("utf-8")
            except UnicodeDecodeError:
                continue  # binary records (counters, sensor frames) have no text to embed
            if text.strip() and text.isprintable():
                texts.append((seq, text[:MAX_TEXT]))
        if not texts:
            return

        def work() -> None:
            vectors = self.embedder.embed([t for _, t in texts])
            for (seq, text), vector in zip(texts, vectors, strict=True):
                self.store.add(agent_scope(device, agent), "episodic", text, {"seq": seq}, vector)
                self.indexed += 1

        self._worker.submit(work)

    async def index_tools(self, tools: dict[str, str]) -> int:
        """Procedural memory of the bridged tools ({"server.tool": description}) in the tools
        scope, so agents can find the tool for a job; tools already indexed are skipped."""
        def work() -> int:
            known = self.store.texts(TOOLS_SCOPE)
            texts = [f"{name}: {description}".strip() for name, description in sorted(tools.items())]
            texts = [t for t in texts if t not in known]
            for text, vector in zip(texts, self.embedder.embed(texts) if texts else [], strict=True):
                self.store.add(TOOLS_SCOPE, "procedural", text, {"tool": text.split(":", 1)[0]}, vector)
            return len(texts)

        return await self._run(work)

    def close(self) -> None:
        self._worker.shutdown(wait=True)
        self.store.close()


def _text(body: dict[str, Any], field: str) -> str:
    value = body.get(field)
    if not isinstance(value, str) or not value.strip():
        raise MemoryRequestError(f"needs {field} (text)")
    if len(value.encode("utf-8")) > MAX_TEXT:
        raise MemoryRequestError(f"{field} is over {MAX_TEXT} bytes")
    return value


def fit_reply(results: list[dict[str, Any]], limit: int = REPLY_BYTES) -> dict[str, Any]:
    """As many results as fit `limit` bytes of CBOR, best first, texts shortened if need be."""
    reply: dict[str, Any] = {"results": []}
    for r in results:
        item = {"text": r["text"], "kind": r["kind"], "score": r["score"]}
        while len(cbor.dumps({**reply, "results": reply["results"] + [item]})) > limit and len(item["text"]) > 24:
            item["text"] = item["text"][: max(24, len(item["text"]) * 2 // 3)]
        if len(cbor.dumps({**reply, "results": reply["results"] + [item]})) > limit:
            break
        reply["results"].append(item)
    reply["more"] = len(results) - len(reply["results"])
    return reply


def memory_handlers(memory: VectorMemory, fleet_of: Callable[[str], str | None],
                    manifest_of: Callable[[str, str], dict[str, Any] | None]) -> dict[str, Handler]:
    """Router handlers for `mem.put` and `mem.search`. `fleet_of(device)` names a device's
    fleet; `manifest_of(device, agent)` is the registered manifest (None: unknown)."""

    def scope_for(request: Request, body: dict[str, Any], writing: bool = False) -> str:
        wanted = body.get("scope", "agent")
        if wanted == "agent":
            return agent_scope(request.device, request.agent)
        if wanted == TOOLS_SCOPE:
            if writing:
                raise MemoryRequestError("the tools scope is read-only: the gateway fills it from its MCP servers")
            return TOOLS_SCOPE
        if wanted != "fleet":
            raise MemoryRequestError(f"scope must be agent, fleet or (to search) tools, not {wanted!r}")
        manifest = manifest_of(request.device, request.agent)
        if not manifest or not manifest.get("vector_memory", {}).get("shared"):
            raise MemoryRequestError("the fleet's shared memory needs [vector_memory] shared = true in the agent's "
                                     "registered manifest")
        fleet = fleet_of(request.device)
        assert fleet is not None
        return fleet_scope(fleet)

    async def put(request: Request) -> dict[str, Any]:
        body = request.body if isinstance(request.body, dict) else {"text": request.body}
        kind = body.get("kind", "semantic")
        if kind not in ("semantic", "procedural"):
            raise MemoryRequestError("kind must be semantic or procedural (episodic memory comes from the memory log)")
        meta = body.get("meta") if isinstance(body.get("meta"), dict) else {}
        memory_id = await memory.put(scope_for(request, body, writing=True), kind, _text(body, "text"), meta)
        return {"id": memory_id}

    async def search(request: Request) -> dict[str, Any]:
        body = request.body if isinstance(request.body, dict) else {"query": request.body}
        k = body.get("k", 3)
        if not isinstance(k, int) or not 1 <= k <= MAX_K:
            raise MemoryRequestError(f"k must be an integer in 1..{MAX_K}")
        kind = body.get("kind")
        if kind is not None and kind not in KINDS:
            raise MemoryRequestError(f"kind must be one of {', '.join(KINDS)}")
        return fit_reply(await memory.search(scope_for(request, body), _text(body, "query"), k, kind))

    return {"mem.put": put, "mem.search": search}
