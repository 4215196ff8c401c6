"""Requests from agents, routed by kind to handlers that never block routing.

A handler is `async def handler(request) -> reply body`. The router runs each request as its
own task, bounded by `max_pending`, with a timeout; a slow or failing handler delays only its
own reply. Plug-ins add their kinds (llm, tool.call, mem.search, a2a.send) with
`router.add(kind, handler)`.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from microfang.request import Handler, Reply, Request, SpendWindow

RATE_LIMITED = "rate limited: too many requests from this agent"


class RateLimiter:
    """Token buckets per (device, agent): `rate` requests per second, bursts of `burst`; an
    agent's manifest may set its own rate ([budgets] requests_per_s)."""

    def __init__(self, rate: float = 50.0, burst: int = 100) -> None:
        self.rate = rate
        self.burst = burst
        self.rates: dict[tuple[str, str], float] = {}
        self._buckets: dict[tuple[str, str], list[float]] = {}

    def allow(self, device: str, agent: str) -> bool:
        now = time.monotonic()
        rate = self.rates.get((device, agent), self.rate)
        burst = self.burst if (device, agent) not in self.rates else max(1.0, 2 * rate)
        bucket = self._buckets.setdefault((device, agent), [float(burst), now])
        bucket[0] = min(burst, bucket[0] + (now - bucket[1]) * rate)
        bucket[1] = now
        if bucket[0] < 1:
            return False
        bucket[0] -= 1
        return True

    def empty(self, device: str, agent: str) -> bool:
        """Whether the agent's bucket holds no whole token now (nothing is taken). An agent not
        seen yet has a full one."""
        bucket = self._buckets.get((device, agent))
        if bucket is None:
            return False
        rate = self.rates.get((device, agent), self.rate)
        return bucket[0] + (time.monotonic() - bucket[1]) * rate < 1


class Budget:
    """At most `limit` requests per (device, agent) in each `window_s` window (None: no limit).
    Rate limits smooth bursts; a budget caps what an agent may spend (LLM calls cost money)."""

    def __init__(self, limit: int | None = None, window_s: float = 3600.0) -> None:
        self.limit = limit
        self.window_s = window_s
        self._spent = SpendWindow(window_s)

    def spend(self, device: str, agent: str) -> bool:
        if self.limit is None:
            return True
        if self._spent.spent(device, agent) >= self.limit:
            return False
        self._spent.add(device, agent, 1)
        return True


async def echo(request: Request) -> Any:
    """Reply with the request's own body."""
    return {"body": request.body}


async def ping(request: Request) -> Any:
    return {"text": "pong"}


class Router:
    def __init__(self, *, max_pending: int = 10_000, timeout: float = 30.0, limiter: RateLimiter | None = None,
                 budget: Budget | None = None) -> None:
        self.handlers: dict[str, Handler] = {"echo": echo, "ping": ping}
        self.max_pending = max_pending
        self.timeout = timeout
        self.limiter = limiter or RateLimiter()
        self.budget = budget or Budget()
        self.agent_budgets: dict[tuple[str, str], dict[str, Any]] = {}  # from manifests: Request.budgets
        self.pending: set[asyncio.Task] = set()
        self.counts: dict[str, int] = {"requests": 0, "replies_ok": 0, "replies_error": 0, "rate_limited": 0,
                                       "busy": 0, "timeouts": 0, "unknown_kind": 0, "over_budget": 0}

    def set_limits(self, device: str, agent: str, budgets: dict[str, Any]) -> None:
        """Apply an agent's budgets: those of its registered manifest, never what a board
        announces (board_messages.py); {} for the gateway's defaults."""
        self.agent_budgets[(device, agent)] = budgets
        rate = budgets.get("requests_per_s") or 0
        if rate > 0:
            self.limiter.rates[(device, agent)] = float(rate)
        else:
            self.limiter.rates.pop((device, agent), None)

    def add(self, kind: str, handler: Handler) -> None:
        """Register the handler for a request kind (replacing any earlier one)."""
        self.handlers[kind] = handler

    def admit(self, device: str, agent: str) -> str | None:
        """Take one request of the agent's rate limit and budget; None if it may run, else why
        not (the gateway asks at intake, so a refused request is never stored: refusals.py)."""
        if not self.limiter.allow(device, agent):
            self.counts["rate_limited"] += 1
            return RATE_LIMITED
        if not self.budget.spend(device, agent):
            self.counts["over_budget"] += 1
            return f"budget exhausted: {self.budget.limit} requests per {self.budget.window_s:g} s"
        return None

    def dispatch(self, request: Request, reply: Reply, admitted: bool = False) -> None:
        """Start handling a request; `reply(request, ok, body)` is called exactly once.
        `admitted`: its rate limit and budget were taken already (`admit`)."""
        self.counts["requests"] += 1
        request.budgets = self.agent_budgets.get((request.device, request.agent), {})
        handler = self.handlers.get(request.kind)
        if handler is None:
            self.counts["unknown_kind"] += 1
            reply(request, False, f"no handler for request kind {request.kind!r} on this gateway")
            return
        if not admitted:
            refused = self.admit(request.device, request.agent)
            if refused is not None:
                reply(request, False, refused)
                return
        if len(self.pending) >= self.max_pending:
            self.counts["busy"] += 1
            reply(request, False, "gateway busy: too many requests in flight")
            return
        task = asyncio.get_running_loop().create_task(self._run(handler, request, reply),
                                                     name=f"microfang[{request.device}/{request.agent}].request")
        self.pending.add(task)
        task.add_done_callback(self.pending.discard)

    async def _run(self, handler: Handler, request: Request, reply: Reply) -> None:
        try:
            async with asyncio.timeout(self.timeout):  # in this task: wait_for would start another
                body = await handler(request)
        except TimeoutError:
            self.counts["timeouts"] += 1
            reply(request, False, f"{request.kind} timed out after {self.timeout:g} s")
            return
        except Exception as e:  # a handler's failure becomes an error reply, never a crash
            self.counts["replies_error"] += 1
            reply(request, False, f"{request.kind} failed: {e}")
            return
        self.counts["replies_ok"] += 1
        reply(request, True, body)
