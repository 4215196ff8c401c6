"""A2A (official a2a-sdk, protocol 1.0) both ways.

Serve: the fleet is one A2A agent whose skills are the exposed board agents ("device/agent").
SendMessage (A2A 1.0) routes the text to that agent as a message event ({text}) and returns what it
publishes next as the task's artifact; GetTask reports the task. The skill is chosen by the
message's metadata {"skill": "device/agent"}, or is the only one exposed.

    [a2a]
    port = 8078
    expose = ["kitchen/reporter"]
    [a2a.peers.planner]
    url = "http://127.0.0.1:9999"

Call: agents send `a2a.send` {peer, text}; the gateway checks the registered manifest's
`a2a_access` and the text for secrets, sends it with the SDK client and answers {text} filtered.
"""

from __future__ import annotations

import asyncio
import threading
from contextlib import AsyncExitStack
from typing import Any

from microfang import httpguard
from microfang.bridges.guard import BridgeDenied, check_access, check_outbound, filter_output
from microfang.config import secret_from
from microfang.firmware.errors import MicrofangError
from microfang.request import GatewayAPI, Request, publish_text

ASK_TIMEOUT_S = 10.0
SEND_TIMEOUT_S = 30.0
CARD_PATH = "/.well-known/agent-card.json"


class FleetExecutor:
    """The A2A AgentExecutor: a message goes to a board agent, its next publish comes back."""

    def __init__(self, gateway: GatewayAPI, exposed: list[str], gateway_loop: asyncio.AbstractEventLoop) -> None:
        self.gw = gateway
        self.exposed = exposed
        self.loop = gateway_loop  # the A2A server runs in a thread of its own: gateway work goes back here

    async def _on_gateway(self, coro: Any) -> Any:
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, self.loop))

    async def _audit(self, device: str, agent: str, kind: str, detail: dict[str, Any]) -> None:
        self.gw.audit(device, agent, kind, detail)

    async def execute(self, context: Any, event_queue: Any) -> None:
        from a2a.helpers import new_task_from_user_message, new_text_message, new_text_part
        from a2a.server.tasks import TaskUpdater

        task = context.current_task or new_task_from_user_message(context.message)
        await event_queue.enqueue_event(task)
        updater = TaskUpdater(event_queue, task.id, task.context_id)
        metadata = dict(context.message.metadata) if context.message.metadata else {}
        skill = metadata.get("skill") or (self.exposed[0] if len(self.exposed) == 1 else None)
        if skill not in self.exposed:
            what = f"unknown skill {skill!r}" if skill else "no skill chosen"
            await updater.failed(new_text_message(f"{what}: put one of {', '.join(self.exposed)} in the message "
                                                  f"metadata as \"skill\""))
            return
        device, agent = skill.split("/", 1)
        await updater.start_work()
        try:
            answer = await self._on_gateway(self.gw.ask(device, agent, {"text": context.get_user_input()[:256],
                                                                         "from": "a2a"}, ASK_TIMEOUT_S))
        except (TimeoutError, KeyError) as e:
            await updater.failed(new_text_message(f"{skill} did not answer ({type(e).__name__})"))
            return
        text = filter_output(publish_text(answer), 2048)
        await self._on_gateway(self._audit(device, agent, "a2a.message", {"skill": skill, "answer_bytes": len(text)}))
        await updater.add_artifact([new_text_part(text)], name="answer")
        await updater.complete()

    async def cancel(self, context: Any, event_queue: Any) -> None:
        raise MicrofangError("a board agent's answer cannot be cancelled")


class A2ABridge:
    def __init__(self, config: dict[str, Any], gateway: GatewayAPI) -> None:
        self.gw = gateway
        self.port = int(config.get("port", 0))
        self.max_body = int(config.get("max_body", httpguard.MAX_BODY))
        if self.max_body < 1024:
            raise MicrofangError(f"a2a.max_body: {self.max_body} bytes is too small for any request (at least 1024)")
        self.token = secret_from(config, "a2a", "token") if self.port else None
        if self.port and not self.token:
            raise MicrofangError("[a2a]: set token_env or token_file: the fleet is not served unauthenticated "
                                 "(clients send Authorization: Bearer TOKEN)")
        self.exposed = [str(s) for s in config.get("expose", [])]
        self.peers: dict[str, str] = {}
        for name, spec in (config.get("peers") or {}).items():
            if not isinstance(spec, dict) or not isinstance(spec.get("url"), str):
                raise MicrofangError(f"a2a.peers.{name}: needs url = \"http://...\"")
            self.peers[name] = spec["url"]
        for skill in self.exposed:
            if skill.count("/") != 1:
                raise MicrofangError(f"a2a.expose: {skill!r} is not device/agent")
        self.summary: list[str] = []
        self._clients: dict[str, Any] = {}
        self._stack = AsyncExitStack()
        self._server: Any = None
        self._thread: threading.Thread | None = None

    def agent_card(self) -> Any:
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
        for skill in self.exposed:
            device, agent = skill.split("/", 1)
            manifest = self.gw.manifest_of(device, agent) or {}
            skills.append(AgentSkill(id=skill, name=skill, description=manifest.get("description") or
                                     f"agent {agent} on board {device}", tags=["microfang", device],
                                     input_modes=["text/plain"], output_modes=["text/plain"]))
        return AgentCard(
            name="microfang fleet", version="1",
            description="Agents on microcontroller boards; each skill is one board agent (device/agent).",
            supported_interfaces=[AgentInterface(url=f"http://127.0.0.1:{self.port}/", protocol_binding="JSONRPC",
                                                 protocol_version="1.0")],
            capabilities=AgentCapabilities(streaming=False), default_input_modes=["text/plain"],
            default_output_modes=["text/plain"], skills=skills,
            security_schemes={"bearer": SecurityScheme(http_auth_security_scheme=HTTPAuthSecurityScheme(
                scheme="Bearer", description="the token of [a2a] token_env or token_file"))},
            security_requirements=[SecurityRequirement(schemes={"bearer": StringList(list=[])})])

    async def __aenter__(self) -> A2ABridge:
        if self.port:
            await self._serve()
            self.summary.append(f"A2A on http://127.0.0.1:{self.port}/ ({len(self.exposed)} skills)")
        if self.peers:
            self.summary.append(f"A2A peers {', '.join(sorted(self.peers))}")
        return self

    async def _serve(self) -> None:
        from a2a.server.request_handlers import DefaultRequestHandler
        from a2a.server.routes import create_agent_card_routes, create_jsonrpc_routes
        from a2a.server.tasks import InMemoryTaskStore
        from starlette.applications import Starlette

        # Bound here, not by uvicorn: a port in use is then our one-line error, not uvicorn's exit.
        sock = httpguard.bind("127.0.0.1", self.port, "[a2a]")
        card = self.agent_card()
        # an AgentExecutor by shape: the SDK loads only to serve
        executor: Any = FleetExecutor(self.gw, self.exposed, asyncio.get_running_loop())
        handler = DefaultRequestHandler(agent_executor=executor, task_store=InMemoryTaskStore(), agent_card=card)
        app = Starlette(routes=[*create_agent_card_routes(card), *create_jsonrpc_routes(handler, rpc_url="/")])
        guarded = httpguard.HttpGuard(app, self.token or "", self.port, public=[CARD_PATH], max_body=self.max_body)
        self._server = httpguard.server(guarded)
        # Its own thread and event loop: a slow or hostile A2A client never holds up the gateway's
        # MQTT traffic; gateway work (ask, audit) is sent back to the gateway's loop.
        self._thread = threading.Thread(target=lambda: asyncio.run(self._server.serve(sockets=[sock])),
                                        name="microfang-a2a", daemon=True)
        self._thread.start()
        for _ in range(200):
            if self._server.started or not self._thread.is_alive():
                break
            await asyncio.sleep(0.02)
        if not self._server.started:
            raise MicrofangError(f"A2A: cannot serve on 127.0.0.1:{self.port}")

        async def stop() -> None:
            self._server.should_exit = True
            if self._thread is not None:
                await asyncio.to_thread(self._thread.join, 10)

        self._stack.push_async_callback(stop)

    async def __aexit__(self, *exc: object) -> None:
        for client in self._clients.values():
            await client.close()
        await self._stack.aclose()

    async def _client(self, peer: str) -> Any:
        from a2a.client import create_client

        if peer not in self._clients:
            self._clients[peer] = await create_client(self.peers[peer])
        return self._clients[peer]

    async def send(self, peer: str, text: str) -> str:
        """Send `text` to a peer agent; return its answer text (artifacts, else messages)."""
        from a2a.helpers import get_stream_response_text, new_text_message
        from a2a.types import Role, SendMessageRequest

        client = await self._client(peer)
        request = SendMessageRequest(message=new_text_message(text, role=Role.ROLE_USER))
        parts = []
        async for response in client.send_message(request):
            parts.append(get_stream_response_text(response))
        return "\n".join(p for p in parts if p)

    async def handle(self, request: Request) -> dict[str, Any]:
        body = request.body if isinstance(request.body, dict) else {}
        peer, text = body.get("peer"), body.get("text")
        try:
            if not isinstance(peer, str) or not isinstance(text, str):
                raise BridgeDenied("a2a.send needs peer (text) and text")
            manifest = check_access(self.gw.manifest_of(request.device, request.agent), "a2a_access", peer)
            check_outbound(manifest, {"text": text}, self.gw.secrets_of(request.device))
            if peer not in self.peers:
                raise BridgeDenied(f"no A2A peer {peer} (have: {', '.join(sorted(self.peers)) or 'none'})")
        except BridgeDenied as e:
            self.gw.audit(request.device, request.agent, "a2a.send refused", {"peer": peer, "reason": str(e)})
            raise
        try:
            answer = await asyncio.wait_for(self.send(peer, text), SEND_TIMEOUT_S)
        except Exception as e:  # the peer is down or broke the protocol: the agent gets a one-line error
            self.gw.audit(request.device, request.agent, "a2a.send", {"peer": peer, "ok": False})
            raise MicrofangError(f"A2A peer {peer}: {type(e).__name__}: {e}") from None
        self.gw.audit(request.device, request.agent, "a2a.send", {"peer": peer, "ok": True,
                                                                       "bytes": len(answer.encode())})
        return {"text": filter_output(answer)}
