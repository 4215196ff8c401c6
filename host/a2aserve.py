"""The fleet served as one A2A agent (a2a-sdk, protocol 1.0), in a process of its own.

`microfang gateway` with an `[a2a] port` starts it as a child process (`A2AServer`, entered by
gateway/services.py) and stops it when it stops; it also ends by itself when the gateway is gone
(its stdin closes). It shares neither the gateway's event loop nor its memory nor its MQTT
session: a client flooding it (64 MiB bodies, slow connections) costs the gateway CPU time at
most. It reaches the boards like any other client of the running gateway (`microfang mcp`,
`deploy`): each SendMessage becomes a "message" job in the gateway's store (gateway/commands.py),
the gateway sends the agent a message event {text, from: "a2a"} and the agent's next publish is
the job's answer, which becomes the task's artifact. The store also gives the card its skills.

    [a2a]
    port = 8078                        # 0: off
    host = "127.0.0.1"                 # the default; another address serves beyond this host
    token_env = "MICROFANG_A2A_TOKEN"  # or token_file: never on a command line
    expose = ["kitchen/reporter"]
    max_body = 1048576

The child is `python -m microfang.a2aserve`, its settings (token included) one JSON line on its
stdin; it answers "ready A2A on URL (N skills)" or "error <one line>" on stdout.

In front of the SDK: microfang.httpguard (401 without the bearer token, 421 foreign Host, 403
foreign Origin, 415 non-JSON, 413 over max_body on the announced length, before the body is read).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from typing import Any

from microfang import httpguard
from microfang.bridges.guard import filter_output
from microfang.config import secret_from
from microfang.firmware.errors import MicrofangError
from microfang.gateway.commands import MESSAGE
from microfang.gateway.jobs import JobsFailed, wait_jobs
from microfang.ops import Where, open_store

ASK_TIMEOUT_S = 10.0
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 10.0
NICE = 10  # the A2A process's CPU priority below the gateway's
CARD_PATH = "/.well-known/agent-card.json"


class FleetExecutor:
    """The A2A AgentExecutor: a message goes to a board agent, its next publish comes back."""

    def __init__(self, where: Where, exposed: list[str]) -> None:
        self.where = where
        self.exposed = exposed

    def skill_of(self, metadata: dict[str, Any]) -> str:
        """The skill a message asks for (its metadata's "skill", or the only one exposed), or
        MicrofangError saying which exist."""
        skill = metadata.get("skill") or (self.exposed[0] if len(self.exposed) == 1 else None)
        if skill not in self.exposed:
            what = f"unknown skill {skill!r}" if skill else "no skill chosen"
            raise MicrofangError(f"{what}: put one of {', '.join(self.exposed)} in the message metadata as "
                                 "\"skill\"")
        return str(skill)

    async def ask(self, device: str, agent: str, text: str) -> str:
        """Queue a message job for the running gateway; the agent's answer, or MicrofangError."""
        store = open_store(self.where)
        try:
            data = json.dumps({"text": text[:256], "timeout": ASK_TIMEOUT_S, "from": "a2a"}).encode()
            job = store.add_job(MESSAGE, device, agent, data)
            [row] = await wait_jobs(store, [job], ASK_TIMEOUT_S + 5)
        except JobsFailed as e:
            [row] = e.jobs
            if row["state"] == "failed":
                raise MicrofangError(f"{device}/{agent}: {row['detail']}") from None
            raise MicrofangError(f"{device}/{agent} did not answer (is the gateway running?)") from None
        finally:
            store.close()
        return str(row["detail"])

    async def execute(self, context: Any, event_queue: Any) -> None:
        from a2a.helpers import new_task_from_user_message, new_text_message, new_text_part
        from a2a.server.tasks import TaskUpdater

        task = context.current_task or new_task_from_user_message(context.message)
        await event_queue.enqueue_event(task)
        updater = TaskUpdater(event_queue, task.id, task.context_id)
        try:
            skill = self.skill_of(dict(context.message.metadata) if context.message.metadata else {})
            await updater.start_work()
            device, agent = skill.split("/", 1)
            answer = await self.ask(device, agent, context.get_user_input())
        except MicrofangError as e:
            await updater.failed(new_text_message(str(e)))
            return
        await updater.add_artifact([new_text_part(filter_output(answer, 2048))], name="answer")
        await updater.complete()

    async def cancel(self, context: Any, event_queue: Any) -> None:
        raise MicrofangError("a board agent's answer cannot be cancelled")


def agent_card(url: str, exposed: list[str], manifests: dict[str, dict[str, Any] | None]) -> Any:
    """The fleet's Agent Card: one skill per exposed agent, the bearer scheme declared."""
    from a2a.types import (
        AgentCapabilities,
        AgentCard,
        AgentInterface,
        AgentSkill,
        HTTPAuthSecurityScheme,
        SecurityRequirement,
        SecurityScheme,
        StringList,
    )

    skills = []
    for skill in exposed:
        device, agent = skill.split("/", 1)
        manifest = manifests.get(skill) or {}
        skills.append(AgentSkill(id=skill, name=skill, description=manifest.get("description") or
                                 f"agent {agent} on board {device}", tags=["microfang", device],
                                 input_modes=["text/plain"], output_modes=["text/plain"]))
    return AgentCard(
        name="microfang fleet", version="1",
        description="Agents on microcontroller boards; each skill is one board agent (device/agent).",
        supported_interfaces=[AgentInterface(url=url, protocol_binding="JSONRPC", protocol_version="1.0")],
        capabilities=AgentCapabilities(streaming=False), default_input_modes=["text/plain"],
        default_output_modes=["text/plain"], skills=skills,
        security_schemes={"bearer": SecurityScheme(http_auth_security_scheme=HTTPAuthSecurityScheme(
            scheme="Bearer", description="the token of [a2a] token_env or token_file"))},
        security_requirements=[SecurityRequirement(schemes={"bearer": StringList(list=[])})])


def _manifests(where: Where, exposed: list[str]) -> dict[str, dict[str, Any] | None]:
    store = open_store(where)
    try:
        return {skill: store.manifest(*skill.split("/", 1)) for skill in exposed}
    finally:
        store.close()


async def serve(config: dict[str, Any]) -> None:
    """Serve until stdin closes (the gateway stopped) or SIGTERM; prints the ready line."""
    from a2a.server.request_handlers import DefaultRequestHandler
    from a2a.server.routes import create_agent_card_routes, create_jsonrpc_routes
    from a2a.server.tasks import InMemoryTaskStore
    from starlette.applications import Starlette

    host, port, exposed = str(config["host"]), int(config["port"]), [str(s) for s in config["expose"]]
    # Bound here, not by uvicorn: a port in use is then our one-line error, not uvicorn's exit.
    sock = httpguard.bind(host, port, "[a2a]")
    url = f"http://{host}:{port}/"
    card = agent_card(url, exposed, _manifests(config["where"], exposed))
    executor: Any = FleetExecutor(config["where"], exposed)  # an AgentExecutor by shape
    handler = DefaultRequestHandler(agent_executor=executor, task_store=InMemoryTaskStore(), agent_card=card)
    app = Starlette(routes=[*create_agent_card_routes(card), *create_jsonrpc_routes(handler, rpc_url="/")])
    guarded = httpguard.HttpGuard(app, str(config["token"]), port, hosts=("127.0.0.1", "localhost", host),
                                  public=[CARD_PATH], max_body=int(config["max_body"]))
    server = httpguard.server(guarded)
    loop = asyncio.get_running_loop()

    def gateway_gone() -> None:
        if not os.read(0, 4096):  # EOF: the gateway that started us has ended
            loop.remove_reader(0)
            server.should_exit = True

    loop.add_reader(0, gateway_gone)
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started and not serving.done():
        await asyncio.sleep(0.02)
    if server.started:
        print(f"ready A2A on {url} ({len(exposed)} skills)", flush=True)
    await serving


class A2AServer:
    """The A2A server process for the gateway on the store `where`, from its `[a2a]` table:
    checked here (a one-line error), started on entry, stopped on exit."""

    def __init__(self, config: dict[str, Any], where: Where) -> None:
        self.port = int(config.get("port", 0))
        self.host = str(config.get("host", "127.0.0.1"))
        self.max_body = int(config.get("max_body", httpguard.MAX_BODY))
        if self.max_body < 1024:
            raise MicrofangError(f"a2a.max_body: {self.max_body} bytes is too small for any request (at least 1024)")
        self.token = secret_from(config, "a2a", "token")
        if not self.token:
            raise MicrofangError("[a2a]: set token_env or token_file: the fleet is not served unauthenticated "
                                 "(clients send Authorization: Bearer TOKEN)")
        self.exposed = [str(s) for s in config.get("expose", [])]
        for skill in self.exposed:
            if skill.count("/") != 1:
                raise MicrofangError(f"a2a.expose: {skill!r} is not device/agent")
        self.where = where
        self.summary = ""
        self._proc: asyncio.subprocess.Process | None = None

    async def __aenter__(self) -> A2AServer:
        self._proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "microfang.a2aserve",
                                                          stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._proc.stdin.write(json.dumps({"where": str(self.where), "host": self.host, "port": self.port,
                                           "expose": self.exposed, "max_body": self.max_body,
                                           "token": self.token}).encode() + b"\n")
        try:
            await self._proc.stdin.drain()
            line = (await asyncio.wait_for(self._proc.stdout.readline(), START_TIMEOUT_S)).decode().strip()
        except (TimeoutError, ConnectionError):
            line = ""
        if not line.startswith("ready "):
            await self.__aexit__()
            raise MicrofangError(line[len("error "):] if line.startswith("error ") else
                                 f"A2A: the server process did not start on {self.host}:{self.port}")
        self.summary = line[len("ready "):]
        return self

    async def __aexit__(self, *exc: object) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.returncode is not None:
            return
        assert proc.stdin is not None
        proc.stdin.close()  # the server's signal to end
        try:
            await asyncio.wait_for(proc.wait(), STOP_TIMEOUT_S)
        except TimeoutError:
            proc.kill()
            await proc.wait()

    def health(self) -> dict[str, Any]:
        """For /healthz: where it serves, whether its process runs and its id."""
        running = self._proc is not None and self._proc.returncode is None
        return {"url": f"http://{self.host}:{self.port}/", "running": running,
                "pid": None if self._proc is None else self._proc.pid}


def main() -> int:
    # Below the gateway in CPU priority: a flood of refused requests (413 on each of a stream of
    # 64 MiB POSTs) then takes the CPU time the boards' traffic leaves over.
    os.nice(NICE)
    try:
        config = json.loads(sys.stdin.buffer.readline())
        asyncio.run(serve(config))
    except MicrofangError as e:
        print(f"error {e}", flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
