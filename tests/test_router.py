"""The request router on its own: rate limits, budgets, unknown kinds, failing handlers."""

import asyncio

from microfang.gateway import Budget, RateLimiter, Router
from microfang.request import Request


def run(router, requests):
    async def scenario():
        replies = []
        for r in requests:
            router.dispatch(r, lambda request, ok, body: replies.append((request.id, ok, body)))
        for _ in range(100):
            if len(replies) == len(requests):
                break
            await asyncio.sleep(0.01)
        return replies

    return sorted(asyncio.run(scenario()), key=lambda r: r[0])


def test_requests_past_the_burst_are_rate_limited():
    router = Router(limiter=RateLimiter(rate=0.001, burst=3))
    replies = run(router, [Request("d", "a", "echo", n, n) for n in range(5)])
    assert [ok for _, ok, _ in replies] == [True, True, True, False, False]
    assert replies[-1][2] == "rate limited: too many requests from this agent"
    assert router.counts["rate_limited"] == 2


def test_an_agent_over_its_budget_gets_an_error_and_others_do_not():
    router = Router(budget=Budget(limit=2, window_s=3600))
    replies = run(router, [Request("d", "a", "echo", 1, 1), Request("d", "a", "echo", 2, 2),
                           Request("d", "a", "echo", 3, 3), Request("d", "b", "echo", 4, 4)])
    assert [ok for _, ok, _ in replies] == [True, True, False, True]
    assert replies[2][2] == "budget exhausted: 2 requests per 3600 s"


def test_unknown_kind_and_failing_handler_become_error_replies():
    router = Router()

    async def broken(request):
        raise ValueError("provider down")

    router.add("llm", broken)
    replies = run(router, [Request("d", "a", "tool.call", 1, None), Request("d", "a", "llm", 2, None)])
    assert replies == [(1, False, "no handler for request kind 'tool.call' on this gateway"),
                       (2, False, "llm failed: provider down")]


def test_a_handler_that_hangs_times_out():
    router = Router(timeout=0.05)

    async def hang(request):
        await asyncio.sleep(10)

    router.add("hang", hang)
    assert run(router, [Request("d", "a", "hang", 1, None)]) == [(1, False, "hang timed out after 0.05 s")]


def test_handlers_see_the_budgets_the_agents_manifest_announced():
    router = Router()
    router.set_limits("d", "a", {"llm_tokens_per_hour": 5})

    async def budgets(request):
        return request.budgets

    router.add("budgets", budgets)
    replies = run(router, [Request("d", "a", "budgets", 1, None), Request("d", "b", "budgets", 2, None)])
    assert replies == [(1, True, {"llm_tokens_per_hour": 5}), (2, True, {})]
