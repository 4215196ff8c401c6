"""Agents' requests, from accepted to answered. A request is kept in the store until the broker
has acknowledged its reply, so a gateway killed in between answers it again after a restart;
the router (router.py) runs its handler; every reply is audited next to its request."""

from __future__ import annotations

from collections.abc import Callable, Container
from typing import Any

from microfang.firmware import cbor, envelope, protocol
from microfang.gateway.router import Router
from microfang.gateway.store import Store
from microfang.request import Request

Send = Callable[[str, str, str, Any], int]  # (device, agent, kind, body) -> MQTT message id


class Requests:
    def __init__(self, store: Store, router: Router, send: Send, metrics: dict[str, int]) -> None:
        self.store = store
        self.router = router
        self.send = send
        self.metrics = metrics
        self._in_flight: dict[int, tuple[str, str, int]] = {}  # MQTT message id of a reply -> its request

    def accept(self, device: str, agent: str, body: dict[str, Any]) -> None:
        """An agent's request {id, kind, body}: stored, audited and started."""
        request = Request(device, agent, str(body.get("kind", "")), int(body.get("id", 0)), None)
        self.metrics["requests"] += 1
        raw = bytes(body.get("body") or b"\xf6")
        self.store.audit(device, agent, "request", {"kind": request.kind, "id": request.id})
        self.store.add_request(device, agent, request.id, request.kind, raw)
        self._start(request, raw)

    def refuse(self, device: str, agent: str, body: dict[str, Any], reason: str) -> None:
        """Answer a request with an error without handling it."""
        self.reply(Request(device, agent, str(body.get("kind", "")), int(body.get("id", 0)), None), False, reason)

    def resume(self, devices: Container[str]) -> None:
        """Answer the requests a previous run accepted but had not delivered a reply for."""
        for device, agent, request_id, kind, body in self.store.pending_requests():
            if device in devices:
                self._start(Request(device, agent, kind, request_id, None), body)

    def delivered(self, mid: int) -> None:
        """The broker has the reply (PUBACK): its request is done and will not be answered again."""
        request = self._in_flight.pop(mid, None)
        if request is not None:
            self.store.finish_request(*request)

    def _start(self, request: Request, raw: bytes) -> None:
        try:
            # The agent's body is CBOR it encoded itself (the ABI's payload format).
            request.body = cbor.loads(raw, max_bytes=envelope.MAX_ENVELOPE)
        except cbor.CBORError as e:
            self.reply(request, False, f"request body is not CBOR: {e}")
            return
        self.router.dispatch(request, self.reply)

    def reply(self, request: Request, ok: bool, body: Any) -> None:
        reply: dict[str, Any] = {"id": request.id, "ok": ok}
        if not ok:
            reply["error"] = str(body)
        elif isinstance(body, dict):
            reply.update(body)
        else:
            reply["body"] = body
        self.metrics["replies"] += 1
        detail = {"id": request.id, "kind": request.kind, "ok": ok}
        if isinstance(body, dict) and "tokens" in body:
            detail["tokens"] = body["tokens"]
        if not ok:
            detail["error"] = str(body)[:200]
        self.store.audit(request.device, request.agent, "reply", detail)
        mid = self.send(request.device, request.agent, protocol.K_REPLY, reply)
        self._in_flight[mid] = (request.device, request.agent, request.id)
