"""tool.call through the gateway to a real MCP server process, with the guard at the gateway:
permissions from the registered manifest, exfiltration blocked, output filtered, all audited."""

import asyncio
import sys
from pathlib import Path

import pytest
from agents import request_chain
from fleet import agent_replies

from microfang.bridges.guard import filter_output, find_secrets
from microfang.firmware import bundle, cbor

SERVER = Path(__file__).parent / "mcp_tools_server.py"
HOSTILE = Path(__file__).parent / "mcp_hostile_server.py"


PARTS = {"mcp_servers": {"parts": {"command": [sys.executable, str(SERVER)]}}}


def hostile(**spec):
    return {"mcp_servers": {"bad": {"command": [sys.executable, str(HOSTILE)], **spec}}}


def run_chain(mosquitto, tmp_path, steps, register=True, settings=PARTS, then=None, **manifest_changes):
    """A request_chain agent against a gateway bridged to the parts server (or `settings`'):
    its replies, the gateway's audit actions and its services' summary (or what `then` returned)."""
    chain = request_chain(steps, **manifest_changes)

    async def summary(gw, services):
        return services.summary

    return agent_replies(mosquitto.port, tmp_path, chain, len(steps), settings=settings, then=then or summary,
                         registered=bundle.decode(chain)[0] if register else None)


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

    async def denied_count(gw, services):
        return gw.metrics["denied"]

    replies, audit, denied = agent_replies(mosquitto.port, tmp_path, chain, 1, registered=installed,
                                           then=denied_count)
    assert replies == [{"id": 1, "ok": False, "error": "request is not allowed by the agent's registered manifest"}]
    assert "request denied" in audit and denied == 1


def test_llm_answers_are_filtered_before_they_reach_a_board():
    from microfang.request import redact

    assert redact("use token=ghp_abcdefghijklmnopqrstuvwxyz0123456789 now") == "use [redacted] now"


def test_bridged_tools_become_procedural_memory_agents_can_search(mosquitto, tmp_path):
    steps = [("mem.search", cbor.dumps({"query": "where is a spare part kept", "scope": "tools", "k": 1})),
             ("mem.put", cbor.dumps({"text": "fake tool", "scope": "tools"}))]
    async def index_again(gw, services):
        return await services.memory.index_tools({"parts.lookup": "Where a spare part is kept."})

    replies, _, again = agent_replies(mosquitto.port, tmp_path, request_chain(steps), 2,
                                      settings={"memory": "minilm", **PARTS}, then=index_again)
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
    replies, _, _ = agent_replies(mosquitto.port, tmp_path, announced, 120, agent="burst", registered=installed,
                                  seconds=10, outbox_bytes=64 * 1024)
    store = Store(tmp_path / "gw.db")
    assert store.agent_budgets()[("b1", "burst")] == {"requests_per_s": 1, "llm_tokens_per_hour": 0}
    store.close()
    assert sum(1 for r in replies if not r["ok"]) >= 100  # rate limited at the registered 1 request/s


def test_a_tool_that_does_not_answer_in_time_fails_that_call_and_the_next_one_is_answered(mosquitto, tmp_path):
    replies, audit, _ = run_chain(mosquitto, tmp_path, [call("bad.slow", seconds=30), call("bad.pid")],
                                  settings=hostile(timeout_s=1), **{"sandbox.permissions.tool_access": ["bad.*"]})
    assert replies[0] == {"id": 1, "ok": False, "error": "tool.call failed: tool bad.slow did not answer in 1 s"}
    assert replies[1]["ok"] is True and int(replies[1]["result"]) > 0
    assert audit.count("tool.call") == 2


def test_a_crashed_mcp_server_is_started_again_for_the_next_call(mosquitto, tmp_path):
    async def restarts(gw, services):
        return gw.router.handlers["tool.call"].__self__.sessions["bad"][0].restarts

    replies, _, restarted = run_chain(mosquitto, tmp_path, [call("bad.pid"), call("bad.crash"), call("bad.pid")],
                                      settings=hostile(), then=restarts,
                                      **{"sandbox.permissions.tool_access": ["bad.*"]})
    assert replies[1] == {"id": 2, "ok": False, "error": "tool.call failed: tool bad.crash: MCPError: Connection closed"}
    assert replies[2]["ok"] is True and replies[2]["result"] != replies[0]["result"]  # another server process
    assert restarted == 1


def test_a_megabyte_of_tool_output_reaches_the_board_cut_and_without_control_characters(mosquitto, tmp_path):
    replies, _, _ = run_chain(mosquitto, tmp_path, [call("bad.flood")], settings=hostile(),
                              **{"sandbox.permissions.tool_access": ["bad.flood"]})
    assert replies[0]["ok"] is True and replies[0]["result"] == filter_output("\x1b[2J" + "x" * 1_000_000)
    assert "\x1b" not in replies[0]["result"] and len(replies[0]["result"]) < 400


def test_concurrent_calls_go_to_the_least_busy_of_a_servers_sessions(mosquitto, tmp_path):
    """Two sessions are two server processes; four calls at once are split two and two."""
    from microfang.request import Request

    async def pids(gw, services):
        handle = gw.router.handlers["tool.call"]
        asks = [Request("b1", "chain", "tool.call", n, {"name": "bad.pid", "args": {"seconds": 0.5}}) for n in range(4)]
        answers = await asyncio.gather(*(handle(r) for r in asks))
        return sorted(a["result"] for a in answers)

    _, _, answered = run_chain(mosquitto, tmp_path, [call("bad.pid")], settings=hostile(sessions=2), then=pids,
                               **{"sandbox.permissions.tool_access": ["bad.*"]})
    assert len(set(answered)) == 2 and answered[0] == answered[1] and answered[2] == answered[3]


def test_mcp_server_settings_out_of_range_are_one_line_errors():
    from microfang.bridges.mcp_client import server_spec
    from microfang.firmware.errors import MicrofangError

    for spec, message in [({"command": ["x"], "sessions": 0}, "mcp_servers.bad.sessions: must be a whole number from 1 to 16"),
                          ({"command": ["x"], "sessions": "2"}, "mcp_servers.bad.sessions: must be a whole number from 1 to 16"),
                          ({"command": ["x"], "timeout_s": -1}, "mcp_servers.bad.timeout_s: must be a number of seconds from 0 to 3600"),
                          ({"command": "python server.py"}, "mcp_servers.bad.command: must be a list of strings")]:
        with pytest.raises(MicrofangError) as e:
            server_spec("bad", spec)
        assert str(e.value) == message, spec
