"""tool.call through the gateway to a real MCP server process, with the guard at the gateway:
permissions from the registered manifest, exfiltration blocked, output filtered, all audited."""

import asyncio
import sys
from pathlib import Path

from agents import request_chain
from fleet import make_board, wait_until

from microfang.bridges.guard import find_secrets, filter_output
from microfang.firmware import bundle, cbor
from microfang.gateway import Gateway, Router
from microfang.gateway.services import Services

SERVER = Path(__file__).parent / "mcp_tools_server.py"


def run_chain(mosquitto, tmp_path, steps, register=True, **manifest_changes):
    """One board with a request_chain agent against a gateway bridged to the parts server;
    returns the agent's replies and the gateway's audit actions."""
    chain = request_chain(steps, **manifest_changes)
    settings = {"db": tmp_path / "gw.db", "mcp_servers": {"parts": {"command": [sys.executable, str(SERVER)]}}}

    async def scenario():
        async with Gateway(broker=f"mqtt://127.0.0.1:{mosquitto.port}", db=tmp_path / "gw.db", router=Router(),
                           quiet=True) as gw:
            async with Services(gw, settings) as services:
                board, _ = make_board("b1", gw.add_device("b1", fleet="test"), mosquitto.port)
                if register:
                    gw.store.register_manifest("b1", bundle.decode(chain)[0])
                board.spawn(chain)
                run = asyncio.create_task(board.run(20_000))
                log = board.supervisor.log("chain")
                await wait_until(lambda: log.last_seq >= len(steps), 20)
                board.stop()
                await run
                audit = [r[0] for r in gw.store.db.execute("SELECT action FROM audit ORDER BY n")]
                return [cbor.loads(p) for _, p in log.records()], audit, services.summary

    return asyncio.run(scenario())


def call(name, **args):
    return ("tool.call", cbor.dumps({"name": name, "args": args}))


def test_an_agent_calls_a_tool_on_an_external_mcp_server(mosquitto, tmp_path):
    replies, audit, summary = run_chain(mosquitto, tmp_path, [call("parts.lookup", part="fuse")],
                                        **{"sandbox.permissions.tool_access": ["parts.lookup"]})
    assert summary == ["3 MCP tools from parts"]
    assert replies == [{"id": 1, "ok": True, "result": "5 A glass fuse, drawer 12", "is_error": False}]
    assert "tool.call" in audit


def test_a_tool_outside_tool_access_is_refused_at_the_gateway(mosquitto, tmp_path):
    replies, audit, _ = run_chain(mosquitto, tmp_path, [call("parts.send_report", text="hi")],
                                  **{"sandbox.permissions.tool_access": ["parts.lookup"]})
    assert replies[0]["ok"] is False and replies[0]["error"] == "tool.call failed: parts.send_report is not in the agent's tool_access"
    assert "tool.call refused" in audit


def test_an_agent_without_a_registered_manifest_gets_no_tools(mosquitto, tmp_path):
    replies, _, _ = run_chain(mosquitto, tmp_path, [call("parts.lookup", part="fuse")], register=False,
                              **{"sandbox.permissions.tool_access": ["parts.*"]})
    assert "no registered manifest" in replies[0]["error"]


def test_secrets_in_tool_arguments_are_blocked_and_audited(mosquitto, tmp_path):
    pem = "-----BEGIN PRIVATE KEY-----\nMIIE..."
    replies, audit, _ = run_chain(mosquitto, tmp_path, [call("parts.send_report", text=pem)],
                                  **{"sandbox.permissions.tool_access": ["parts.*"]})
    assert replies[0]["error"] == "tool.call failed: blocked: the arguments carry private key (data_exfil_detection)"
    assert audit.count("tool.call refused") == 1


def test_tool_results_are_filtered_before_they_reach_a_board(mosquitto, tmp_path):
    replies, _, _ = run_chain(mosquitto, tmp_path, [call("parts.leak")], **{"sandbox.permissions.tool_access": ["parts.*"]})
    assert replies[0]["result"] == "config: [redacted] and more"


def test_secret_patterns_and_fleet_keys_are_recognised():
    key = bytes(range(32))
    assert find_secrets({"note": "AKIAABCDEFGHIJKLMNOP"}) == ["AWS access key"]
    assert find_secrets({"k": key.hex()}, known=[key]) == ["a fleet key"]
    assert find_secrets({"text": "temperature 21.5 C, all fine"}) == []
    assert filter_output("ok\x00\x1b[31m" + "x" * 1000).startswith("ok  [31m") and len(filter_output("x" * 1000)) == 320


def test_the_gateway_refuses_requests_the_registered_manifest_does_not_allow(mosquitto, tmp_path):
    """A board runs a bundle whose manifest allows `request`, but the host installed one that
    does not (a tampered board): the gateway refuses and audits, whatever the board says."""
    from helpers import HELLO_WAT, build_bundle

    installed = bundle.decode(build_bundle(HELLO_WAT, **{"sandbox.agent_id": "chain"}))[0]
    chain = request_chain([("echo", cbor.dumps("hi"))])

    async def scenario():
        async with Gateway(broker=f"mqtt://127.0.0.1:{mosquitto.port}", db=tmp_path / "gw.db", router=Router(),
                           quiet=True) as gw:
            board, _ = make_board("b1", gw.add_device("b1", fleet="test"), mosquitto.port)
            gw.store.register_manifest("b1", installed)
            board.spawn(chain)
            run = asyncio.create_task(board.run(10_000))
            log = board.supervisor.log("chain")
            await wait_until(lambda: log.last_seq >= 1)
            board.stop()
            await run
            audit = [r[0] for r in gw.store.db.execute("SELECT action FROM audit ORDER BY n")]
            return [cbor.loads(p) for _, p in log.records()], audit, gw.metrics["denied"]

    replies, audit, denied = asyncio.run(scenario())
    assert replies == [{"id": 1, "ok": False, "error": "request is not allowed by the agent's registered manifest"}]
    assert "request denied" in audit and denied == 1


def test_llm_answers_are_filtered_before_they_reach_a_board():
    from microfang.bridges.guard import redact

    assert redact("use token=ghp_abcdefghijklmnopqrstuvwxyz0123456789 now") == "use [redacted] now"


def test_bridged_tools_become_procedural_memory_agents_can_search(mosquitto, tmp_path):
    steps = [("mem.search", cbor.dumps({"query": "where is a spare part kept", "scope": "tools", "k": 1})),
             ("mem.put", cbor.dumps({"text": "fake tool", "scope": "tools"}))]
    settings = {"db": tmp_path / "gw.db", "memory": "minilm",
                "mcp_servers": {"parts": {"command": [sys.executable, str(SERVER)]}}}
    chain = request_chain(steps)

    async def scenario():
        async with Gateway(broker=f"mqtt://127.0.0.1:{mosquitto.port}", db=tmp_path / "gw.db", router=Router(),
                           quiet=True) as gw:
            async with Services(gw, settings):
                board, _ = make_board("b1", gw.add_device("b1", fleet="test"), mosquitto.port)
                board.spawn(chain)
                run = asyncio.create_task(board.run(15_000))
                log = board.supervisor.log("chain")
                await wait_until(lambda: log.last_seq >= 2, 15)
                board.stop()
                await run
                again = await gw.memory.index_tools({"parts.lookup": "Where a spare part is kept."})
                return [cbor.loads(p) for _, p in log.records()], again

    replies, again = asyncio.run(scenario())
    assert replies[0]["results"][0]["text"] == "parts.lookup: Where a spare part is kept."
    assert replies[1]["error"] == "mem.put failed: the tools scope is read-only: the gateway fills it from its MCP " \
                                  "servers"
    assert again == 0  # indexed once, not again on the next start


def test_the_registered_manifests_budgets_apply_not_the_ones_a_board_announces(mosquitto, tmp_path):
    from helpers import build_bundle
    from test_fleet_durability import BURST, PERMS

    from microfang.gateway.store import Store

    announced = build_bundle(BURST, **PERMS)  # no budgets: what a tampered board would claim
    installed = bundle.decode(build_bundle(BURST, **PERMS, **{"budgets.requests_per_s": 1}))[0]

    async def scenario():
        async with Gateway(broker=f"mqtt://127.0.0.1:{mosquitto.port}", db=tmp_path / "gw.db", router=Router(),
                           quiet=True) as gw:
            board, _ = make_board("b1", gw.add_device("b1", fleet="test"), mosquitto.port, outbox_bytes=64 * 1024)
            gw.store.register_manifest("b1", installed)
            board.spawn(announced)
            run = asyncio.create_task(board.run(10_000))
            log = board.supervisor.log("burst")
            await wait_until(lambda: log.last_seq >= 120, 10)
            board.stop()
            await run
            return [cbor.loads(p) for _, p in log.records()]

    replies = asyncio.run(scenario())
    store = Store(tmp_path / "gw.db")
    assert store.agent_budgets()[("b1", "burst")] == {"requests_per_s": 1, "llm_tokens_per_hour": 0}
    store.close()
    assert sum(1 for r in replies if not r["ok"]) >= 100  # rate limited at the registered 1 request/s
