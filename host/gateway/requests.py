"""Agents' requests, from accepted to answered. A request is kept in the store until the broker
has acknowledged its reply, so a gateway killed in between answers it again after a restart
(with the reply it kept, the same envelope, if it had sealed one: the board's replay window
drops a second copy, where a second answer would run the handler twice and reach the agent);
the router (router.py) runs its handler once the request is committed; every reply is audited
next to its request, written with the gateway's next batch (`defer`), and published once that
has committed. A request refused at intake is kept the same way until the broker has its error
reply (a row of kind REFUSED, its body the reason): the board's copy the broker delivers again
after a crash is a replay then, dropped, so only the kept reply can still answer it."""

from __future__ import annotations

import time
from collections.abc import Callable, Container
from functools import partial
from typing import Any

from microfang.firmware import envelope, protocol
from microfang.gateway import fastcbor
from microfang.gateway.answers import Answers
from microfang.gateway.peers import Pending
from microfang.gateway.router import Router
from microfang.gateway.store import Store
from microfang.request import Request

Send = Callable[..., bytes]  # (device, agent, kind, body, on_delivered=...) -> the sealed envelope
Resend = Callable[..., None]  # (device, agent, sealed, on_delivered=...) -> None
RESEND_WINDOW = 512  # a kept reply is sent again only this close to the device's latest sequence number
# (a board's replay window holds 1024: an older one would be dropped as a replay, never answered)
Defer = Callable[[Callable[[], None]], None]  # run a write in the gateway's next batch
LLM_KIND = "llm"  # the request kind whose answers are kept (answers.py); services.py routes it
REFUSED = ""  # the kind of a refused request's row: no request has it (shapes.py: 1..64 characters)


class Requests:
    def __init__(self, store: Store, router: Router, send: Send, resend: Resend, metrics: dict[str, int],
                 defer: Defer, owner: str) -> None:
        self.store = store
        self.answers = Answers(store)  # the llm answers kept for the dashboard
        self.router = router
        self.send = send
        self.resend = resend
        self.metrics = metrics
        self.defer = defer
        self.owner = owner  # this gateway's name (peers.py)

    def accept(self, device: str, agent: str, body: dict[str, Any]) -> None:
        """An agent's request {id, kind, body} (shapes.py checked it): stored, audited, and
        started once that is committed."""
        request = Request(device, agent, body["kind"], body["id"], None)
        raw = body.get("body", b"\xf6")
        self.store.audit(device, agent, "request", {"kind": request.kind, "id": request.id})
        self.store.add_request(device, agent, request.id, request.kind, raw, self.owner)
        self.store.after_commit(partial(self._start, request, raw))

    def refuse(self, device: str, agent: str, body: dict[str, Any], reason: str) -> None:
        """Answer a request refused at intake with an error, sent once the message's transaction
        commits and kept until the broker has it; no audit record of its own (refusals.py
        counts it)."""
        self.metrics["replies"] += 1
        self._refusal(device, agent, body["id"], reason)

    def _refusal(self, device: str, agent: str, request_id: int, reason: str) -> None:
        self.store.add_request(device, agent, request_id, REFUSED, reason.encode(), self.owner)
        sealed = self.send(device, agent, protocol.K_REPLY, {"id": request_id, "ok": False, "error": reason},
                           on_delivered=partial(self.store.finish_request, device, agent, request_id))
        self.store.keep_reply(device, agent, request_id, sealed)

    def resume(self, pending: list[Pending], devices: Container[str]) -> None:
        """Answer requests accepted or refused earlier (by this gateway before a restart, or by
        one that died) that had no reply delivered yet."""
        for device, agent, request_id, kind, body, sealed in pending:
            if device not in devices:
                continue
            if sealed is not None and self._recent(device, sealed):
                self.metrics["replies_resent"] += 1
                self.resend(device, agent, sealed,
                            on_delivered=partial(self.store.finish_request, device, agent, request_id))
            elif kind == REFUSED:  # never run: its error reply again, sealed anew
                self._refusal(device, agent, request_id, body.decode(errors="replace"))
            else:
                self._start(Request(device, agent, kind, request_id, None), body)

    def _recent(self, device: str, sealed: bytes) -> bool:
        try:
            seq = fastcbor.loads(sealed, max_bytes=envelope.MAX_ENVELOPE)["seq"]
        except (fastcbor.CBORError, KeyError, TypeError):
            return False
        return isinstance(seq, int) and self.store.down_seq(device) - seq < RESEND_WINDOW

    def _start(self, request: Request, raw: bytes) -> None:
        try:
            # The agent's body is CBOR it encoded itself (the ABI's payload format).
            request.body = fastcbor.loads(raw, max_bytes=envelope.MAX_ENVELOPE)
        except fastcbor.CBORError as e:
            self.reply(request, False, f"request body is not CBOR: {e}")
            return
        self.router.dispatch(request, self.reply, admitted=True)

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
        self.defer(partial(self._write, request, reply, detail))

    def _write(self, request: Request, reply: dict[str, Any], detail: dict[str, Any]) -> None:
        # The device's row first (its sequence), then the audit chain: the order a message takes.
        # Once the broker has the reply the request is done (the gateway writes that in a batch too).
        sealed = self.send(request.device, request.agent, protocol.K_REPLY, reply,
                           on_delivered=partial(self.store.finish_request, request.device, request.agent, request.id))
        self.store.keep_reply(request.device, request.agent, request.id, sealed)
        self.store.audit(request.device, request.agent, "reply", detail)
        if request.kind == LLM_KIND:
            self.answers.add(request.device, request.agent, request.body, reply["ok"],
                             reply if reply["ok"] else reply["error"], time.time())
