"""The `llm` request kind: an agent's prompt (or chat messages) -> the provider -> a reply that
fits the agent. Token budgets per agent, size-capped answers, every call audited by the router
path (the gateway audits each request)."""

from __future__ import annotations

from typing import Any

from microfang.gateway.router import Request
from microfang.llm.providers import Provider, ProviderError

MAX_TOKENS = 256  # per call, whatever an agent asks
REPLY_BYTES = 384  # text that fits the SDK's 512-byte event buffer with the reply's CBOR around it


class TokenBudget:
    """Tokens each (device, agent) may generate in total (None: unlimited)."""

    def __init__(self, limit: int | None = None) -> None:
        self.limit = limit
        self.spent: dict[tuple[str, str], int] = {}

    def left(self, device: str, agent: str) -> int | None:
        if self.limit is None:
            return None
        return self.limit - self.spent.get((device, agent), 0)

    def charge(self, device: str, agent: str, tokens: int) -> None:
        self.spent[(device, agent)] = self.spent.get((device, agent), 0) + tokens


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


def llm_handler(provider: Provider, budget: TokenBudget | None = None, reply_bytes: int = REPLY_BYTES):
    """A router handler for kind `llm` (register with `router.add("llm", llm_handler(p))`)."""
    budget = budget or TokenBudget()

    async def handle(request: Request) -> dict[str, Any]:
        messages = _messages(request.body)
        asked = request.body.get("max_tokens", 64) if isinstance(request.body, dict) else 64
        max_tokens = max(1, min(int(asked) if isinstance(asked, int) else 64, MAX_TOKENS))
        left = budget.left(request.device, request.agent)
        if left is not None:
            if left <= 0:
                raise ProviderError(f"token budget exhausted ({budget.limit} tokens)")
            max_tokens = min(max_tokens, left)
        text, tokens = await provider.complete(messages, max_tokens)
        budget.charge(request.device, request.agent, tokens)
        text, cut = truncate_utf8(text, reply_bytes)
        return {"text": text, "tokens": tokens, "truncated": cut, "provider": provider.name}

    return handle
