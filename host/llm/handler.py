"""The `llm` request kind: an agent's prompt (or chat messages) -> the provider -> a reply that
fits the agent. Token budgets per agent, size-capped answers, every call audited by the router
path (the gateway audits each request)."""

from __future__ import annotations

from typing import Any

from microfang.llm.providers import Provider, ProviderError
from microfang.request import REPLY_BYTES, Handler, Request, SpendWindow, fit_text, redact

MAX_TOKENS = 256  # per call, whatever an agent asks


class TokenBudget:
    """Tokens each (device, agent) may generate per hour: the gateway's limit (None: none),
    or the agent's own from its manifest ([budgets] llm_tokens_per_hour), whichever is lower."""

    def __init__(self, limit: int | None = None, window_s: float = 3600.0, spending: SpendWindow | None = None) -> None:
        self.limit = limit
        self.window_s = window_s
        self._spent = spending or SpendWindow(window_s)  # several gateways: one they share

    def limit_for(self, request: Request) -> int | None:
        own = request.budgets.get("llm_tokens_per_hour") or 0
        limits = [x for x in (self.limit, own or None) if x]
        return min(limits) if limits else None

    def left(self, request: Request, limit: int | None) -> int | None:
        if limit is None:
            return None
        return limit - int(self._spent.spent(request.device, request.agent))

    def charge(self, request: Request, tokens: int) -> None:
        self._spent.add(request.device, request.agent, tokens)


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


LLM_COUNTS = ("llm_calls", "llm_errors", "llm_tokens")  # what llm_handler counts in `counts`


def llm_handler(provider: Provider, budget: TokenBudget | None = None, reply_bytes: int = REPLY_BYTES,
                counts: dict[str, int] | None = None) -> Handler:
    """A router handler for kind `llm` (register with `router.add("llm", llm_handler(p))`); the
    agents' manifest budgets (Request.budgets) apply besides `budget`. Calls answered, calls
    failed and tokens generated are added up in `counts` (the gateway's metrics) when given."""
    budget = budget or TokenBudget()
    counts = {} if counts is None else counts
    for name in LLM_COUNTS:
        counts.setdefault(name, 0)

    async def handle(request: Request) -> dict[str, Any]:
        try:
            reply = await _answer(request)
        except Exception:
            counts["llm_errors"] += 1
            raise
        counts["llm_calls"] += 1
        counts["llm_tokens"] += reply["tokens"]
        return reply

    async def _answer(request: Request) -> dict[str, Any]:
        messages = _messages(request.body)
        asked = request.body.get("max_tokens", 64) if isinstance(request.body, dict) else 64
        max_tokens = max(1, min(int(asked) if isinstance(asked, int) else 64, MAX_TOKENS))
        limit = budget.limit_for(request)
        left = budget.left(request, limit)
        if left is not None:
            if left <= 0:
                raise ProviderError(f"token budget exhausted ({limit} tokens per hour)")
            max_tokens = min(max_tokens, left)
        text, tokens = await provider.complete(messages, max_tokens)
        budget.charge(request, tokens)
        # LLM output is filtered like any bridged result before it reaches a board.
        text, cut = fit_text(redact(text), reply_bytes)
        return {"text": text, "tokens": tokens, "truncated": cut, "provider": provider.name}

    return handle
