"""The fleet over MCP, tested with the official SDK's own client: in memory, over stdio and over
streamable HTTP."""

import asyncio
import json
import os
import sys

import pytest
from mcp import Client, StdioServerParameters

from microfang.gateway.rollouts import Plan, Rollouts
from microfang.gateway.store import Store
from microfang.mcpserver import fleet_server


def fleet_db(tmp_path):
    db = tmp_path / "gw.db"
    store = Store(db)
    store.add_device("board1", "lab")
    store.add_device("board2", "lab")
    store.set_presence("board1", True)
    with store.transaction():  # a verified message from it: last_seen now
        store.save_window("board1", store.device("board1")["window"])
    store.add_telemetry("board1", {"uptime_ms": 1234, "agents": {"echo": {"state": "running", "events": 7}}})
    store.replicate("board1", "notes", [(1, b"first note"), (2, b"\xff\xfe")])
    store.audit("board1", "echo", "request", {"kind": "echo", "id": 1})
    store.close()
    return db


def result(call):
    return call.structured_content["result"] if "result" in (call.structured_content or {}) else call.structured_content


def test_fleet_tools_answer_through_the_sdk_client(tmp_path):
    db = fleet_db(tmp_path)

    async def scenario():
        async with Client(fleet_server(db, read_only=True)) as client:
            names = sorted(t.name for t in (await client.list_tools()).tools)
            devices = result(await client.call_tool("list_devices", {}))
            agents = result(await client.call_tool("list_agents", {"device": "board1"}))
            log = result(await client.call_tool("read_memory_log", {"device": "board1", "agent": "notes"}))
            audit = result(await client.call_tool("verify_audit", {}))
            missing = await client.call_tool("device_status", {"device": "ghost"})
            resource = await client.read_resource("fleet://devices")
            return names, devices, agents, log, audit, missing, resource

    names, devices, agents, log, audit, missing, resource = asyncio.run(scenario())
    assert names == ["device_status", "list_agents", "list_devices", "list_jobs", "list_rollouts", "read_memory_log",
                     "search_memory", "verify_audit"]
    assert [(d["device"], d["online"]) for d in devices] == [("board1", True), ("board2", False)]
    assert agents == [{"agent": "echo", "state": "running", "events": 7}]
    assert log == [{"seq": 1, "base64": "Zmlyc3Qgbm90ZQ==", "text": "first note"}, {"seq": 2, "base64": "//4="}]
    assert audit == {"records_checked": 1, "intact": True, "first_bad_record": None}
    assert missing.is_error and "no device 'ghost' in this fleet" in missing.content[0].text
    assert resource.contents[0].text == "board1 lab online\nboard2 lab offline"


def test_jobs_and_a_staged_rollout_with_its_progress_are_read_through_the_sdk_client(tmp_path):
    db = fleet_db(tmp_path)
    store = Store(db)
    rollout = Rollouts(store).add("lab", "echo", 2, Plan(canary=1, abort_at=50), [["board1"], ["board2"]], b"bundle")
    store.update_job(1, state="done", detail="version 2 running")
    store.close()

    async def scenario():
        async with Client(fleet_server(db, read_only=True)) as client:
            return (result(await client.call_tool("list_rollouts", {})),
                    result(await client.call_tool("list_jobs", {"limit": 5})))

    rollouts, jobs = asyncio.run(scenario())
    assert rollouts == [{"id": rollout, "fleet": "lab", "agent": "echo", "version": 2, "canary": 1, "ramp": 2.0,
                         "abort_at": 50.0, "state": "running", "wave": 0, "waves": 2,
                         "jobs": {"done": 1, "held": 1}, "detail": ""}]
    assert [(j["device"], j["state"], j["detail"], j["rollout"], j["wave"]) for j in jobs] == [
        ("board1", "done", "version 2 running", rollout, 0), ("board2", "held", "", rollout, 1)]


def test_tools_say_what_they_do_to_the_fleet_and_the_server_its_version(tmp_path):
    from importlib.metadata import version

    db = fleet_db(tmp_path)

    async def scenario():
        async with Client(fleet_server(db)) as client:
            tools = {t.name: t.annotations for t in (await client.list_tools()).tools}
            resources = {str(r.uri): r.mime_type for r in (await client.list_resources()).resources}
            templates = {t.uri_template: t.mime_type for t in (await client.list_resource_templates()).resource_templates}
            return client.server_info, tools, resources, templates

    info, tools, resources, templates = asyncio.run(scenario())
    assert info.version == version("microfang")
    assert all(tools[name].read_only_hint for name in ("list_devices", "device_status", "read_memory_log",
                                                       "verify_audit", "search_memory", "list_jobs", "list_rollouts"))
    assert not tools["send_event"].read_only_hint and not tools["send_event"].destructive_hint
    assert tools["spawn_agent"].destructive_hint and tools["reclaim_agent"].destructive_hint
    assert resources == {"fleet://devices": "text/plain"}
    assert templates == {"fleet://device/{device}": "application/json",
                         "fleet://agent/{device}/{agent}": "application/json"}


def test_send_event_to_an_agent_the_board_does_not_have_fails_at_once(tmp_path):
    import time

    db = fleet_db(tmp_path)

    async def scenario():
        async with Client(fleet_server(db)) as client:
            started = time.monotonic()
            call = await client.call_tool("send_event", {"device": "board1", "agent": "nobody", "text": "hi",
                                                         "timeout_s": 30})
            return call, time.monotonic() - started

    call, took = asyncio.run(scenario())
    assert call.is_error and "no agent 'nobody' installed on 'board1'" in call.content[0].text
    assert took < 10  # no gateway runs here: waiting for the job would take the whole 30 s


def test_microfang_mcp_serves_over_stdio(tmp_path):
    db = fleet_db(tmp_path)

    async def scenario():
        params = StdioServerParameters(command=sys.executable, args=["-m", "microfang", "mcp", "--db", str(db)])
        async with Client(params) as client:
            status = await client.call_tool("device_status", {"device": "board1"})
            return status

    status = asyncio.run(asyncio.wait_for(scenario(), 60))
    assert not status.is_error
    assert json.loads(status.content[0].text)["uptime_ms"] == 1234


def test_microfang_mcp_serves_streamable_http_behind_a_token(tmp_path):
    import subprocess
    import time
    import urllib.error
    import urllib.request

    from brokers import free_port
    from mcp.client.streamable_http import create_mcp_http_client, streamable_http_client

    db = fleet_db(tmp_path)
    port = free_port()
    (tmp_path / "token").write_text("s3cret\n", encoding="utf-8")
    (tmp_path / "token").chmod(0o600)
    proc = subprocess.Popen([sys.executable, "-m", "microfang", "mcp", "--db", str(db), "--http", str(port),
                             "--token-file", str(tmp_path / "token")], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        url = f"http://127.0.0.1:{port}/mcp"
        deadline = time.monotonic() + 20
        while True:
            try:
                urllib.request.urlopen(url, timeout=1)
            except urllib.error.HTTPError as e:
                status = e.code
                break
            except OSError:
                assert time.monotonic() < deadline, proc.stderr.read() if proc.poll() is not None else "no server"
                time.sleep(0.1)
        assert status == 401  # no token, no fleet

        async def scenario():
            http = create_mcp_http_client(headers={"Authorization": "Bearer s3cret"})
            async with Client(streamable_http_client(url, http_client=http)) as client:
                return result(await client.call_tool("list_devices", {}))

        devices = asyncio.run(asyncio.wait_for(scenario(), 30))
        assert [d["device"] for d in devices] == ["board1", "board2"]
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_mcp_over_http_refuses_to_start_without_a_token(tmp_path):
    import subprocess

    db = fleet_db(tmp_path)
    out = subprocess.run([sys.executable, "-m", "microfang", "mcp", "--db", str(db), "--http", "8999"],
                         capture_output=True, text=True, timeout=60, env={"PATH": "/usr/bin:/bin"})
    assert out.returncode == 1
    assert out.stderr.strip() == "microfang: --http needs a token (--token-file or MICROFANG_MCP_TOKEN): " \
                                 "the fleet is not served unauthenticated"


def mcp_client(transport, db, tmp_path):
    """The SDK's client on `microfang mcp` for `db`: in memory, over stdio (a `microfang mcp`
    process) or streamable HTTP (a `microfang mcp --http` process behind a token)."""
    import contextlib
    import subprocess
    import urllib.error
    import urllib.request

    from brokers import free_port
    from mcp.client.streamable_http import create_mcp_http_client, streamable_http_client

    @contextlib.asynccontextmanager
    async def opened():
        if transport == "memory":
            async with Client(fleet_server(db)) as client:
                yield client
        elif transport == "stdio":
            async with Client(StdioServerParameters(command=sys.executable,
                                                    args=["-m", "microfang", "mcp", "--db", str(db)])) as client:
                yield client
        else:
            port = free_port()
            proc = subprocess.Popen([sys.executable, "-m", "microfang", "mcp", "--db", str(db), "--http", str(port)],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                    env={**os.environ, "MICROFANG_MCP_TOKEN": "t0ken"})
            url = f"http://127.0.0.1:{port}/mcp"
            try:
                for _ in range(200):
                    try:
                        urllib.request.urlopen(url, timeout=1)
                    except urllib.error.HTTPError:
                        break
                    except OSError:
                        await asyncio.sleep(0.1)
                http = create_mcp_http_client(headers={"Authorization": "Bearer t0ken"})
                async with Client(streamable_http_client(url, http_client=http)) as client:
                    yield client
            finally:
                proc.terminate()
                proc.wait(timeout=10)

    return opened()


@pytest.mark.parametrize("transport", ["memory", "stdio", "http"])
def test_an_mcp_client_lists_the_simulated_fleet_and_makes_an_agent_answer(mosquitto, tmp_path, transport):
    """The acceptance path: `microfang mcp` beside a running gateway on the same database, the
    SDK's own client on each transport; the agent answers through the gateway."""
    from pathlib import Path

    from fleet import make_board, wait_until

    from microfang.config import GatewaySettings
    from microfang.firmware import bundle
    from microfang.gateway import Gateway, Router
    from microfang.gateway.services import Services
    from microfang.tools.build import build

    examples = Path(__file__).resolve().parent.parent / "tools" / "sdk" / "examples"
    reporter, _ = build(examples / "reporter" / "agent.toml", tmp_path / "reporter.mfa")
    db = tmp_path / "gw.db"

    async def scenario():
        async with Gateway(broker=f"mqtt://127.0.0.1:{mosquitto.port}", db=db, router=Router(), quiet=True) as gw:
            async with Services(gw, GatewaySettings(db=db, memory="minilm")) as services:
                board, _ = make_board("kitchen", gw.add_device("kitchen", fleet="home"), mosquitto.port, fleet="home",
                                      sensors=lambda agent, channel: 1999, telemetry_ms=100)
                gw.store.register_manifest("kitchen", bundle.decode(reporter.read_bytes())[0])
                board.spawn(reporter.read_bytes())
                run = asyncio.create_task(board.run(30_000))
                await wait_until(lambda: gw.store.latest_telemetry("kitchen") is not None)
                await services.memory.put("agent:kitchen/reporter", "semantic", "the thermometer was calibrated in May")
                async with mcp_client(transport, db, tmp_path) as client:
                    devices = result(await client.call_tool("list_devices", {}))
                    answer = await client.call_tool("send_event", {"device": "kitchen", "agent": "reporter",
                                                                   "text": "how warm?"})
                    suspended = await client.call_tool("suspend_agent", {"device": "kitchen", "agent": "reporter"})
                    await wait_until(lambda: board.supervisor.agents["reporter"].state == "suspended")
                    state_then = board.supervisor.agents["reporter"].state
                    await client.call_tool("resume_agent", {"device": "kitchen", "agent": "reporter"})
                    await wait_until(lambda: board.supervisor.agents["reporter"].state == "running")
                    found = result(await client.call_tool("search_memory", {
                        "device": "kitchen", "agent": "reporter", "query": "when was the sensor calibrated"}))
                    ghost = await client.call_tool("send_event", {"device": "ghost", "agent": "x", "text": "hi"})
                    agent_resource = await client.read_resource("fleet://agent/kitchen/reporter")
                board.stop()
                await run
                return devices, answer, suspended, state_then, found, ghost, agent_resource

    devices, answer, suspended, state_then, found, ghost, agent_resource = asyncio.run(scenario())
    assert [d["device"] for d in devices] == ["kitchen"]
    assert not answer.is_error and answer.content[0].text == "temperature 19.99 C; answer 1 to: how warm?"
    assert suspended.content[0].text == "suspend sent to reporter on kitchen" and state_then == "suspended"
    assert found[0]["text"] == "the thermometer was calibrated in May"
    assert ghost.is_error and "no device 'ghost' in this fleet" in ghost.content[0].text
    assert json.loads(agent_resource.contents[0].text)["state"] in ("running", "suspended")


def test_read_only_mode_has_no_control_tools(tmp_path):
    db = fleet_db(tmp_path)

    async def scenario():
        params = StdioServerParameters(command=sys.executable,
                                       args=["-m", "microfang", "mcp", "--db", str(db), "--read-only"])
        async with Client(params) as client:
            return sorted(t.name for t in (await client.list_tools()).tools)

    names = asyncio.run(asyncio.wait_for(scenario(), 60))
    assert "send_event" not in names and "suspend_agent" not in names and "list_devices" in names
