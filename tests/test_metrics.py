"""The gateway's /metrics as Prometheus reads it: `promtool check metrics` (Debian's prometheus
package; tests/run installs it) finds nothing to complain about, every family has its HELP;
the fleet's series (boards, agents, jobs) from a real gateway, Mosquitto and board, read with
curl; LLM calls counted."""

import asyncio
import shutil
import subprocess
from pathlib import Path

import pytest
from brokers import free_port
from fleet import make_board, wait_until
from openai_server import OpenAIServer

from microfang.gateway import Gateway
from microfang.gateway.metrics import Exposition, FleetTelemetry, prometheus
from microfang.llm import OpenAIProvider, llm_handler
from microfang.llm.providers import ProviderError
from microfang.request import Request

METRICS = {"messages": 12, "requests": 5, "replies": 5, "telemetry": 3, "log_records": 0, "publishes": 1,
           "presence": 2, "denied": 0, "dropped_forged": 1, "dropped_replay": 0}
ROUTER = {"requests": 5, "replies_ok": 4, "replies_error": 1, "rate_limited": 0, "busy": 0, "timeouts": 0,
          "unknown_kind": 0, "over_budget": 0}
HEALTH = {"devices": 2, "online": 1, "broker_connected": True, "pending_requests": 0}
EXAMPLES = Path(__file__).resolve().parent.parent / "tools" / "sdk" / "examples"


def promtool_check(text):
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is missing (Debian: apt install prometheus; tests/run installs it)", pytrace=False)
    return subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True, check=False)


def test_promtool_finds_nothing_to_complain_about():
    done = promtool_check(prometheus(METRICS, ROUTER, HEALTH))
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_family_has_help_and_a_type():
    lines = prometheus(METRICS, ROUTER, HEALTH).splitlines()
    families = {line.split()[2] for line in lines if line.startswith("# TYPE")}
    helped = {line.split()[2] for line in lines if line.startswith("# HELP")}
    assert families == helped and "microfang_build_info" in families
    assert 'microfang_dropped_total{reason="forged"} 1' in lines


def test_an_agent_state_a_board_made_up_is_escaped_in_its_label():
    """A board's telemetry names its agents' states itself: quotes, backslashes and newlines
    must not break the page (shapes.py only bounds the length)."""
    fleet = FleetTelemetry()
    fleet.note("b1", {"free_heap": 1000, "agents": {"a1": {"state": 'run"\\\n} 1\nx', "traps": 2}}})
    out = Exposition()
    fleet.families(out, {"b1": {"fleet": "f", "online": True}})
    done = promtool_check(out.text())
    assert done.returncode == 0, done.stdout + done.stderr + out.text()
    assert 'microfang_agent_state{device="b1",agent="a1",state="run\\"\\\\\\n} 1\\nx"} 1' in out.text().splitlines()


def test_telemetry_fields_of_the_wrong_type_export_nothing():
    fleet = FleetTelemetry()
    fleet.note("b1", {"free_heap": True, "uptime_ms": "long", "agents": {"a1": {"fuel_used": None, "traps": 3}}})
    out = Exposition()
    fleet.families(out, {"b1": {"fleet": "f", "online": True}})
    samples = [line for line in out.lines if not line.startswith("#")]
    assert samples == ['microfang_device_online{device="b1",fleet="f"} 1',
                       'microfang_agent_state{device="b1",agent="a1",state="unknown"} 1',
                       'microfang_agent_traps_total{device="b1",agent="a1"} 3']


def test_a_board_removed_from_the_registry_leaves_the_page():
    fleet = FleetTelemetry()
    fleet.note("gone", {"free_heap": 1000, "agents": {"a1": {"state": "running", "traps": 1}}})
    out = Exposition()
    fleet.families(out, {})
    assert [line for line in out.lines if not line.startswith("#")] == []


def test_llm_calls_errors_and_tokens_are_counted():
    counts = {}
    with OpenAIServer() as server:
        handler = llm_handler(OpenAIProvider(server.url, "m"), counts=counts)
        asyncio.run(handler(Request("d1", "a1", "llm", 1, {"prompt": "hello board"}, None)))
        with pytest.raises(ProviderError):
            asyncio.run(handler(Request("d1", "a1", "llm", 2, {"prompt": ""}, None)))
    assert counts == {"llm_calls": 1, "llm_errors": 1, "llm_tokens": 5}


@pytest.fixture(scope="module")
def echo_bundle(tmp_path_factory):
    from microfang.tools.build import build

    out, _ = build(EXAMPLES / "echo" / "agent.toml", tmp_path_factory.mktemp("echo") / "echo.mfa")
    return out.read_bytes()


def test_curl_metrics_of_a_running_gateway_passes_promtool(mosquitto, tmp_path, echo_bundle):
    """The acceptance line: `curl /metrics | promtool check metrics` exits 0, against a gateway
    with a board running an agent and a job in its store; the board's and agent's series are there."""

    async def scenario():
        port = free_port()
        async with Gateway(broker=f"mqtt://127.0.0.1:{mosquitto.port}", db=tmp_path / "gw.db", http_port=port,
                           quiet=True) as gw:
            key = gw.add_device("board1", fleet="test")
            gw.add_device("board2", fleet="test")  # registered, never heard: offline, no telemetry
            gw.store.add_job("suspend", "board2", "echo")
            board, _ = make_board("board1", key, mosquitto.port)
            board.spawn(echo_bundle)
            run = asyncio.create_task(board.run(3000))
            seen = await wait_until(lambda: "echo" in gw.board_messages.telemetry.agents.get("board1", {}))
            piped = await asyncio.to_thread(
                subprocess.run, f"set -o pipefail; curl -sf http://127.0.0.1:{port}/metrics | promtool check metrics",
                shell=True, executable="/bin/bash", capture_output=True, text=True, check=False)
            page = await asyncio.to_thread(subprocess.run, ["curl", "-sf", f"http://127.0.0.1:{port}/metrics"],
                                           capture_output=True, text=True, check=True)
            await run
            return seen, piped, page.stdout.splitlines()

    seen, piped, lines = asyncio.run(scenario())
    assert seen
    assert piped.returncode == 0, piped.stdout + piped.stderr
    assert 'microfang_device_online{device="board1",fleet="test"} 1' in lines
    assert 'microfang_device_online{device="board2",fleet="test"} 0' in lines
    assert 'microfang_agent_state{device="board1",agent="echo",state="running"} 1' in lines
    assert any(line.startswith('microfang_device_free_heap_bytes{device="board1"} ') for line in lines)
    assert any(line.startswith('microfang_agent_fuel_used_total{device="board1",agent="echo"} ') for line in lines)
    assert any(line.startswith('microfang_jobs{kind="suspend",state=') for line in lines)
    assert any(line.startswith('microfang_build_info{version="') for line in lines)


def test_a_gateway_with_an_llm_exports_its_calls_and_tokens(mosquitto, tmp_path):
    from microfang.config import GatewaySettings
    from microfang.gateway.metrics import exposition
    from microfang.gateway.services import open_gateway

    async def scenario(url):
        settings = GatewaySettings(broker=f"mqtt://127.0.0.1:{mosquitto.port}", db=tmp_path / "gw.db", http=0,
                                   memory="none", llm="openai", llm_url=url, llm_model="m")
        async with open_gateway(settings, quiet=True) as (gw, _):
            await gw.router.handlers["llm"](Request("d1", "a1", "llm", 1, {"prompt": "hello board"}, None))
            return exposition(gw)

    with OpenAIServer() as server:
        page = asyncio.run(scenario(server.url))
    done = promtool_check(page)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = page.splitlines()
    assert {"microfang_llm_calls_total 1", "microfang_llm_errors_total 0", "microfang_llm_tokens_total 5"} <= set(lines)
