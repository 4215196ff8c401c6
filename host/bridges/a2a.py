"""A2A (official a2a-sdk, protocol 1.0), the calling side: board agents call external A2A agents.
(The fleet served as an A2A agent runs in a process of its own: microfang.a2aserve.)

    [a2a.peers.planner]
    url = "http://127.0.0.1:9999"

Agents send `a2a.send` {peer, text}; the gateway checks the registered manifest's
`a2a_access` and the text for secrets, sends it with the SDK client and answers {text} filtered.
"""

from __future__ import annotations

import asyncio
from typing import Any

from microfang.bridges.guard import BridgeDenied, check_access, check_outbound, filter_output
from microfang.firmware.errors import MicrofangError
from microfang.request import GatewayAPI, Request

SEND_TIMEOUT_S = 30.0


class A2ABridge:
    """Agents' calls to the `[a2a.peers]` (a2a.send); the fleet is served by microfang.a2aserve."""

    def __init__(self, config: dict[str, Any], gateway: GatewayAPI) -> None:
        self.gw = gateway
        self.peers: dict[str, str] = {}
        for name, spec in (config.get("peers") or {}).items():
            if not isinstance(spec, dict) or not isinstance(spec.get("url"), str):
                raise MicrofangError(f"a2a.peers.{name}: needs url = \"http://...\"")
            self.peers[name] = spec["url"]
        self.summary: list[str] = []
        self._clients: dict[str, Any] = {}

    async def __aenter__(self) -> A2ABridge:
        if self.peers:
            self.summary.append(f"A2A peers {', '.join(sorted(self.peers))}")
        return self

    async def __aexit__(self, *exc: object) -> None:
        for client in self._clients.values():
            await client.close()

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
