"""What the gateway does with each kind of message a board sends, once core.py has verified it
(device, HMAC, replay window) and shapes.py has checked its body: one handler per (channel,
kind) in `BoardMessages.handlers`, each called inside the message's store transaction, so what
it writes commits (or rolls back) with the message; what it makes the gateway do after that
(publish, start a request, tell a listener) waits for the commit (`Store.after_commit`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial
from typing import Any, Protocol

from microfang.firmware import protocol
from microfang.gateway.agentlines import AgentLines
from microfang.gateway.jobrunner import JobRunner
from microfang.gateway.metrics import FleetTelemetry
from microfang.gateway.outputs import Outputs
from microfang.gateway.refusals import Refusals
from microfang.gateway.registry import Registry
from microfang.gateway.requests import Requests
from microfang.gateway.router import Router
from microfang.gateway.store import Store

Handler = Callable[[str, str, Any], None]  # (device, agent, body)
LogListener = Callable[[str, str, list[tuple[int, bytes]]], None]  # (device, agent, [(seq, payload)])


class Host(Protocol):
    """What handling board messages takes of the gateway (core.Gateway)."""

    store: Store | None
    agent_lines: AgentLines | None
    outputs: Outputs | None
    registry: Registry | None
    requests: Requests | None
    router: Router
    jobrunner: JobRunner
    refusals: Refusals | None
    metrics: dict[str, int]

    def send(self, device: str, agent: str, kind: str, body: Any, control: bool = False,
             on_delivered: Callable[[], None] | None = None) -> bytes: ...

    def answered(self, device: str, agent: str, body: Any) -> None: ...

    def manifest_of(self, device: str, agent: str) -> dict[str, Any] | None: ...

    def log(self, line: str) -> None: ...


class BoardMessages:
    def __init__(self, gateway: Host) -> None:
        self.gw = gateway
        self.log_listeners: list[LogListener] = []
        self.telemetry = FleetTelemetry()  # each board's latest numbers, for /metrics
        # (channel, message kind) -> handler(device, agent, body), called inside the message's transaction.
        self.handlers: dict[tuple[str, str], Handler] = {
            (protocol.TELE, protocol.K_TELE): self._on_telemetry,
            (protocol.LOG, protocol.K_LOG): self._on_log_records,
            (protocol.UP, protocol.K_REQUEST): self._on_agent_request,
            (protocol.UP, protocol.K_PUBLISH): self._on_agent_publish,
            (protocol.UP, protocol.K_AGENT): self._on_agent_spawned,
            (protocol.UP, protocol.K_UNDELIVERED): self._on_undelivered,
            (protocol.UP, protocol.K_LINES): self._on_agent_line,
        }
        for kind in protocol.BOARD_ANSWERS:
            self.handlers[(protocol.UP, kind)] = partial(self._on_board_answer, kind)

    @property
    def _store(self) -> Store:
        assert self.gw.store is not None  # handlers run only once the gateway has started
        return self.gw.store

    @property
    def _refusals(self) -> Refusals:
        assert self.gw.refusals is not None
        return self.gw.refusals

    def _on_telemetry(self, device: str, agent: str, body: Any) -> None:
        self._store.add_telemetry(device, body)
        self.gw.metrics["telemetry"] += 1
        self.telemetry.note(device, body)
        if self.gw.outputs is not None:
            self._store.after_commit(partial(self.gw.outputs.telemetry, device, body))
        self.gw.jobrunner.on_telemetry(device, body)

    def _on_log_records(self, device: str, agent: str, body: Any) -> None:
        records = [(seq, payload) for seq, payload in body]  # shapes.py: [u32, bytes] pairs
        held = self._store.replicate(device, agent, records)
        self.gw.metrics["log_records"] += len(records)
        self.gw.send(device, agent, protocol.C_LOG_ACK, held, control=True)
        for listener in self.log_listeners:
            self._store.after_commit(partial(listener, device, agent, records))

    def _denied(self, device: str, agent: str, kind: str) -> str | None:
        """Why a request or publish the registered manifest does not allow is refused (None: it
        is allowed): the board's sandbox should have stopped it (a tampered board, or a bundle
        that is not the one the host installed), whatever the board says."""
        assert self.gw.registry is not None
        if self.gw.registry.permitted(device, agent, kind):
            return None
        self.gw.metrics["denied"] += 1
        return f"{kind} is not allowed by the agent's registered manifest"

    def _on_agent_line(self, device: str, agent: str, body: Any) -> None:
        assert self.gw.agent_lines is not None
        self.gw.agent_lines.add(device, agent, body, time.time())
        self.gw.metrics["lines"] += 1
        if self.gw.outputs is not None:
            self._store.after_commit(partial(self.gw.outputs.agent_line, device, agent, body))

    def _on_agent_request(self, device: str, agent: str, body: Any) -> None:
        """A request is refused before anything of it is stored (not allowed, over its rate
        limit or budget): counted, audited in aggregate and, within a bound, answered with an
        error (refusals.py)."""
        assert self.gw.requests is not None
        self.gw.metrics["requests"] += 1  # received: accepted or refused
        denied = self._denied(device, agent, protocol.K_REQUEST)
        refused = denied or self.gw.router.admit(device, agent)
        if refused is None:
            self.gw.requests.accept(device, agent, body)
        elif self._refusals.count(device, agent, "request denied" if denied else "request refused", refused):
            self.gw.requests.refuse(device, agent, body, refused)

    def _on_agent_publish(self, device: str, agent: str, body: Any) -> None:
        denied = self._denied(device, agent, protocol.K_PUBLISH)
        if denied is not None:
            self._refusals.count(device, agent, "publish denied", denied)
            return
        self.gw.metrics["publishes"] += 1
        self._store.audit(device, agent, "publish", {"topic": body.get("topic")})
        self._store.after_commit(partial(self.gw.answered, device, agent, body))
        if self.gw.outputs is not None:
            self._store.after_commit(partial(self.gw.outputs.agent_published, device, agent, body))

    def _on_agent_spawned(self, device: str, agent: str, body: Any) -> None:
        budgets = body.get("budgets", {})
        detail: dict[str, Any] = {"version": body.get("version"), "budgets": budgets}
        registered = self.gw.manifest_of(device, agent)
        # The installed manifest's budgets apply, never what the board says about itself: an
        # agent without a registered manifest gets the gateway's defaults, whatever it announces.
        if registered is None:
            if budgets:
                detail["registered"] = None
        elif registered.get("budgets", {}) != budgets or registered["version"] != body.get("version"):
            detail["registered"] = {"version": registered["version"], "budgets": registered.get("budgets")}
        budgets = {} if registered is None else registered.get("budgets", {})
        self._store.set_agent(device, agent, body["version"], budgets)
        # At once, not after the commit: the agent's requests in the same batch are held to them
        # (they are the registered manifest's, the gateway's own, whatever becomes of this batch).
        self.gw.router.set_limits(device, agent, budgets)
        self._store.audit(device, agent, "spawned", detail)

    def _on_undelivered(self, device: str, agent: str, body: Any) -> None:
        """The board took a down/ message but could not queue it for its agent (full and not
        running, or absent): counted, audited and logged, so what was sent is accounted for."""
        body = body if isinstance(body, dict) else {}
        self.gw.metrics["undelivered"] += 1
        detail = {"kind": body.get("kind"), "id": body.get("id"), "reason": body.get("reason")}
        self._store.audit(device, agent, "undelivered", detail)
        self.gw.log(f"undelivered to {device}/{agent}: {detail['kind']} {detail['id']}: {detail['reason']}")

    def _on_board_answer(self, kind: str, device: str, agent: str, body: Any) -> None:
        self.gw.jobrunner.on_board(device, agent, kind, body)
