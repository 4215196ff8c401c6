"""The local responder: answers agents' requests when no gateway is attached (`microfang run`).

It serves the request kinds that need nothing outside this process (`echo`, `ping`) and
answers every other kind (`llm`, `tool.call`, `mem.search`, ...) with an error reply naming
the missing gateway, so agents exercise their reply handling for real. The gateway replaces
it with real providers.
"""

from __future__ import annotations

from collections.abc import Callable

from microfang.firmware import abi, cbor


class LocalResponder:
    """Queues replies for the supervisor: `post(agent_id, kind, payload)` is Supervisor.post."""

    def __init__(self, post: Callable[[str, int, bytes], bool]) -> None:
        self._post = post
        self.requests: list[tuple[str, str, int]] = []

    def answer(self, agent_id: str, kind: str, body: bytes, request_id: int) -> int:
        self.requests.append((agent_id, kind, request_id))
        if kind == "echo":
            try:
                reply = {"id": request_id, "ok": True, "body": cbor.loads(body)}
            except cbor.CBORError as e:
                reply = {"id": request_id, "ok": False, "error": f"request body is not CBOR: {e}"}
        elif kind == "ping":
            reply = {"id": request_id, "ok": True, "text": "pong"}
        else:
            reply = {"id": request_id, "ok": False,
                     "error": f"no gateway attached: '{kind}' requests need `microfang gateway`"}
        return 0 if self._post(agent_id, abi.EV_REPLY, cbor.dumps(reply)) else abi.E_FULL
