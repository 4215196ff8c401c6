"""The `llm` request kind: an agent's prompt (or chat messages) -> the provider -> a reply that
fits the agent. Token budgets per agent, size-capped answers, every call audited by the router
path (the gateway audits each request)."""

from __future__ import annotations

import time
from typing import Any

from microfang.bridges.guard import redact
from microfang.gateway.router import Request
from microfang.llm.providers import Provider, ProviderError

MAX_TOKENS = 256  # per call, whatever an agent asks
REPLY_BYTES = 384  # text that fits the SDK's 512-byte event buffer with the reply's CBOR around it


class TokenBudget:
    """Tokens each (device, agent) may generate per hour: the gateway's limit (None: none),
    or the agent's own from its manifest ([budgets] llm_tokens_per_hour), whichever is lower."""

    def __init__(self, limit: int | None = None, window_s: float = 3600.0) -> None:
        self.limit = limit
        self.window_s = window_s
        self.spent: dict[tuple[str, str], list[float]] = {}

    def limit_for(self, request: Request, router_budgets: dict | None) -> int | None:
        own = (router_budgets or {}).get((request.device, request.agent), {}).get("llm_tokens_per_hour") or 0
        limits = [x for x in (self.limit, own or None) if x]
        return min(limits) if limits else None

    def left(self, request: Request, limit: int | None) -> int | None:
        if limit is None:
            return None
        now = time.monotonic()
        spent = self.spent.setdefault((request.device, request.agent), [now, 0])
        if now - spent[0] >= self.window_s:
            spent[0], spent[1] = now, 0
        return limit - int(spent[1])

    def charge(self, request: Request, tokens: int) -> None:
        now = time.monotonic()
        self.spent.setdefault((request.device, request.agent), [now, 0])[1] += tokens


def _messages(body: Any) -> list[dict[str, str]]:
    if isinstance(body, dict) and isinstance(body.get("messages"), list):
        out = []
        for m in body["messages"]:
            if not isinstance(m, dict) or not isinstance(m.get("content"), str):
                raise ProviderError("messages must be maps with role and content")
            out.append({"role": str(m.get("role", "user")), "content": m["content"]})
        return out
    prompt = body.get("prompt") if isinstance(body, dict) else body
    if not isinstance(prompt, str) or not prompt.strip():
        raise ProviderError("an llm request needs a prompt (text) or messages")
    return [{"role": "user", "content": prompt}]


def truncate_utf8(text: str, limit: int) -> tuple[str, bool]:
    raw = text.encode("utf-8")
    if len(raw) <= limit:
        return text, False
    return raw[:limit].decode("utf-8", "ignore"), True


def llm_handler(provider: Provider, budget: TokenBudget | None = None, reply_bytes: int = REPLY_BYTES,
                router: Any = None):
    """A router handler for kind `llm` (register with `router.add("llm", llm_handler(p, router=router))`;
    with `router`, agents' manifest budgets apply too)."""
    budget = budget or TokenBudget()

    async def handle(request: Request) -> dict[str, Any]:
        messages = _messages(request.body)
        asked = request.body.get("max_tokens", 64) if isinstance(request.body, dict) else 64
        max_tokens = max(1, min(int(asked) if isinstance(asked, int) else 64, MAX_TOKENS))
        limit = budget.limit_for(request, getattr(router, "agent_budgets", None))
        left = budget.left(request, limit)
        if left is not None:
            if left <= 0:
                raise ProviderError(f"token budget exhausted ({limit} tokens per hour)")
            max_tokens = min(max_tokens, left)
        text, tokens = await provider.complete(messages, max_tokens)
        budget.charge(request, tokens)
        # LLM output is filtered like any bridged result before it reaches a board.
        text, cut = truncate_utf8(redact(text), reply_bytes)
        return {"text": text, "tokens": tokens, "truncated": cut, "provider": provider.name}

    return handle
