"""A2A both ways with the official a2a-sdk on 127.0.0.1: the fleet served as an A2A agent whose
skill is a board agent, and a board agent calling an external A2A agent (its own process)."""

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import httpx
import pytest
from agents import request_chain
from brokers import free_port
from fleet import agent_replies, make_board, wait_until

from microfang.config import GatewaySettings
from microfang.firmware import bundle, cbor
from microfang.firmware.errors import MicrofangError
from microfang.gateway import Gateway, Router
from microfang.gateway.services import Services

EXAMPLES = Path(__file__).resolve().parent.parent / "tools" / "sdk" / "examples"
TOKEN = "a2a-test-token"


def served(tmp_path: Path, port: int, expose: list[str]) -> GatewaySettings:
    """Gateway settings serving `expose` over A2A on `port`, behind the test token."""
    return GatewaySettings(db=tmp_path / "gw.db", a2a={"port": port, "expose": expose,
                                                       "token_file": str(token_file(tmp_path))})


def token_file(folder: Path) -> Path:
    path = folder / "a2a.token"
    path.write_text(TOKEN + "\n", encoding="utf-8")
    path.chmod(0o600)
    return path


@pytest.fixture
def planner():
    port = free_port()
    proc = subprocess.Popen([sys.executable, str(Path(__file__).parent / "a2a_peer.py"), str(port)])
    for _ in range(100):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/.well-known/agent-card.json", timeout=1)
            break
        except OSError:
            time.sleep(0.1)
    yield f"http://127.0.0.1:{port}"
    proc.terminate()
    proc.wait(10)


def test_an_a2a_client_makes_a_board_agent_answer(mosquitto, tmp_path):
    from a2a.client import ClientConfig, create_client
    from a2a.helpers import get_stream_response_text, new_text_message
    from a2a.types import GetTaskRequest, Role, SendMessageRequest, TaskState

    from microfang.tools.build import build

    reporter, _ = build(EXAMPLES / "reporter" / "agent.toml", tmp_path / "reporter.mfa")
    port = free_port()
    settings = served(tmp_path, port, ["kitchen/reporter"])

    async def scenario():
        async with Gateway(broker=f"mqtt://127.0.0.1:{mosquitto.port}", db=tmp_path / "gw.db", router=Router(),
                           quiet=True) as gw:
            board, _ = make_board("kitchen", gw.add_device("kitchen", fleet="home"), mosquitto.port,
                                  fleet="home", sensors=lambda agent, channel: 2345)
            gw.store.register_manifest("kitchen", bundle.decode(reporter.read_bytes())[0])
            board.spawn(reporter.read_bytes())
            run = asyncio.create_task(board.run(20_000))
            await wait_until(lambda: gw.devices["kitchen"].get("online"))
            async with Services(gw, settings) as services:
                http = httpx.AsyncClient(headers={"Authorization": f"Bearer {TOKEN}"})
                client = await create_client(f"http://127.0.0.1:{port}", ClientConfig(httpx_client=http))
                answers, task_id = [], None
                async for response in client.send_message(SendMessageRequest(
                        message=new_text_message("how warm is it?", role=Role.ROLE_USER))):
                    answers.append(get_stream_response_text(response))
                    if response.HasField("task"):
                        task_id = response.task.id
                task = await client.get_task(GetTaskRequest(id=task_id))
                await client.close()
                await http.aclose()
                summary = services.summary
            board.stop()
            await run
            return answers, task, summary

    answers, task, summary = asyncio.run(scenario())
    assert summary == [f"A2A on http://127.0.0.1:{port}/ (1 skills)"]
    assert answers == ["temperature 23.45 C; answer 1 to: how warm is it?"]
    assert task.status.state == TaskState.TASK_STATE_COMPLETED


def test_the_fleets_agent_card_lists_exposed_agents_as_skills(mosquitto, tmp_path):
    port = free_port()
    settings = served(tmp_path, port, ["kitchen/reporter", "attic/reporter"])

    async def scenario():
        async with Gateway(broker=f"mqtt://127.0.0.1:{mosquitto.port}", db=tmp_path / "gw.db", router=Router(),
                           quiet=True) as gw:
            async with Services(gw, settings):
                raw = await asyncio.to_thread(lambda: urllib.request.urlopen(
                    f"http://127.0.0.1:{port}/.well-known/agent-card.json").read())
        return json.loads(raw)

    card = asyncio.run(scenario())
    assert card["name"] == "microfang fleet"
    assert [s["id"] for s in card["skills"]] == ["kitchen/reporter", "attic/reporter"]
    assert card["securitySchemes"]["bearer"]["httpAuthSecurityScheme"]["scheme"] == "Bearer"  # the card is public


SEND = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "SendMessage", "params": {"message": {
    "messageId": "m1", "role": "ROLE_USER", "parts": [{"text": "how warm?"}]}}}).encode()


def post(port, body, headers):
    """POST and read the answer; a body announced as over the limit is never sent (the 64 MiB attack
    is refused on its headers)."""
    if len(body) > 1 << 20:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
            lines = ["POST / HTTP/1.1", f"Host: 127.0.0.1:{port}", f"Content-Length: {len(body)}",
                     *(f"{k}: {v}" for k, v in headers.items())]
            conn.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
            answer = conn.recv(4096).decode()
        return int(answer.split()[1]), answer
    request = urllib.request.Request(f"http://127.0.0.1:{port}/", data=body, method="POST",
                                     headers={"A2A-Version": "1.0", **headers})
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


BEARER = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}


@pytest.mark.parametrize(("headers", "body", "status"), [
    ({"Content-Type": "application/json"}, SEND, 401),                                  # no credentials
    ({"Authorization": "Bearer wrong", "Content-Type": "application/json"}, SEND, 401),
    ({**BEARER, "Origin": "https://evil.example"}, SEND, 403),                          # a web page elsewhere
    ({**BEARER, "Host": "attacker.example:80"}, SEND, 421),                             # DNS rebinding
    ({**BEARER, "Content-Type": "text/plain"}, SEND, 415),                              # no CORS preflight needed
    ({**BEARER, "Content-Type": "application/x-www-form-urlencoded"}, SEND, 415),
    (BEARER, b" " * (64 << 20), 413),                                                   # over the body limit
])
def test_the_a2a_server_refuses_what_a_local_service_must_not_take(mosquitto, tmp_path, headers, body, status):
    port = free_port()
    settings = served(tmp_path, port, ["kitchen/reporter"])

    async def scenario():
        async with Gateway(broker=f"mqtt://127.0.0.1:{mosquitto.port}", db=tmp_path / "gw.db", router=Router(),
                           quiet=True) as gw:
            async with Services(gw, settings):
                return await asyncio.to_thread(post, port, body, headers)

    got, text = asyncio.run(scenario())
    assert got == status, text


def test_an_a2a_port_without_a_token_is_refused(mosquitto, tmp_path):
    settings = GatewaySettings(db=tmp_path / "gw.db", a2a={"port": free_port(), "expose": ["kitchen/reporter"]})

    async def scenario():
        async with Gateway(broker=f"mqtt://127.0.0.1:{mosquitto.port}", db=tmp_path / "gw.db", router=Router(),
                           quiet=True) as gw:
            async with Services(gw, settings):
                pass

    with pytest.raises(MicrofangError, match=r"\[a2a\]: set token_env or token_file"):
        asyncio.run(scenario())


def test_a_board_agent_calls_an_external_a2a_agent(mosquitto, tmp_path, planner):
    steps = [("a2a.send", cbor.dumps({"peer": "planner", "text": "water the garden"})),
             ("a2a.send", cbor.dumps({"peer": "planner", "text": "my api_key=abcdef123456 please"})),
             ("a2a.send", cbor.dumps({"peer": "weather", "text": "rain?"}))]
    chain = request_chain(steps, **{"sandbox.permissions.a2a_access": ["planner"]})
    settings = {"a2a": {"peers": {"planner": {"url": planner}, "weather": {"url": planner}}}}
    replies, audit, _ = agent_replies(mosquitto.port, tmp_path, chain, 3, registered=bundle.decode(chain)[0],
                                      settings=settings)
    assert replies[0]["ok"] and replies[0]["text"] == "plan for 'water the garden': 1) check 2) act 3) report"
    assert replies[1]["error"] == "a2a.send failed: blocked: the arguments carry credential assignment " \
                                  "(data_exfil_detection)"
    assert replies[2]["error"] == "a2a.send failed: weather is not in the agent's a2a_access"
    assert audit.count("a2a.send") == 1 and audit.count("a2a.send refused") == 2


def test_a_message_for_an_unknown_skill_fails_saying_which_skills_exist(mosquitto, tmp_path):
    port = free_port()
    settings = served(tmp_path, port, ["kitchen/reporter"])
    body = json.loads(SEND)
    body["params"]["message"]["metadata"] = {"skill": "attic/thermostat"}

    async def scenario():
        async with Gateway(broker=f"mqtt://127.0.0.1:{mosquitto.port}", db=tmp_path / "gw.db", router=Router(),
                           quiet=True) as gw:
            async with Services(gw, settings):
                return await asyncio.to_thread(post, port, json.dumps(body).encode(), BEARER)

    status, answer = asyncio.run(scenario())
    task = json.loads(answer)["result"]["task"]
    assert status == 200 and task["status"]["state"] == "TASK_STATE_FAILED"
    assert task["status"]["message"]["parts"][0]["text"] == \
        "unknown skill 'attic/thermostat': put one of kitchen/reporter in the message metadata as \"skill\""


def test_the_a2a_server_is_a_process_of_its_own_that_ends_with_the_gateway(mosquitto, tmp_path):
    """A2A off the gateway's event loop and memory: a 64 MiB flood cannot slow the boards'
    traffic (bench/bench_a2a.py measures it); no A2A process is left behind."""
    settings = served(tmp_path, free_port(), ["kitchen/reporter"])

    async def scenario():
        async with Gateway(broker=f"mqtt://127.0.0.1:{mosquitto.port}", db=tmp_path / "gw.db", router=Router(),
                           quiet=True) as gw:
            async with Services(gw, settings):
                health = gw.health()["a2a"]
        return health

    health = asyncio.run(scenario())
    assert health["running"] and health["pid"] != os.getpid()
    with pytest.raises(ProcessLookupError):
        os.kill(health["pid"], 0)


def test_the_a2a_server_ends_when_its_gateway_is_killed(mosquitto, tmp_path):
    http, port = free_port(), free_port()
    config = tmp_path / "gateway.toml"
    config.write_text(f'[gateway]\ndb = "{tmp_path / "gw.db"}"\nhttp = {http}\n[a2a]\nport = {port}\n'
                      f'expose = ["kitchen/reporter"]\ntoken_file = "{token_file(tmp_path)}"\n', encoding="utf-8")
    gateway = subprocess.Popen([sys.executable, "-m", "microfang", "gateway", "--config", str(config), "--broker",
                                f"mqtt://127.0.0.1:{mosquitto.port}", "--memory", "none"],
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert f"A2A on http://127.0.0.1:{port}/ (1 skills)" in gateway.stdout.readline()
        health = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{http}/healthz", timeout=10).read())
    finally:
        gateway.kill()
        gateway.wait(10)
    pid = health["a2a"]["pid"]

    def gone():
        try:
            return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"  # ended, not reaped yet
        except FileNotFoundError:
            return True

    deadline = time.monotonic() + 10
    while not gone() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert gone()
