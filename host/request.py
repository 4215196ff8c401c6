"""What a gateway plug-in sees: the request it answers, and the gateway it may ask things of.

Plug-ins (microfang.llm, microfang.memory, microfang.bridges) import this module and
microfang.config, and nothing else of the host: the gateway core hands them a `GatewayAPI`
(manifests, secrets, fleets, audit, ask), the router hands their handlers each `Request`.

    async def handler(request: Request) -> Any:    # a Handler; the router sends the reply
        return {"text": fit_text(redact(answer))[0]}

What reaches a board is shaped here too: at most `REPLY_BYTES` of text (protocol.py), control
characters blanked and secrets redacted.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from microfang.firmware import cbor, protocol

REPLY_BYTES = protocol.REPLY_BYTES


class Request:
    """One agent request: who asked, what kind, the request id to answer, the CBOR body, and the
    budgets of the agent's manifest ([budgets]; empty when none were announced)."""

    def __init__(self, device: str, agent: str, kind: str, request_id: int, body: Any,
                 budgets: dict[str, Any] | None = None) -> None:
        self.device = device
        self.agent = agent
        self.kind = kind
        self.id = request_id
        self.body = body
        self.budgets = budgets or {}


Handler = Callable[[Request], Awaitable[Any]]
Reply = Callable[[Request, bool, Any], None]


class GatewayAPI(Protocol):
    """What the gateway offers its plug-ins (microfang.gateway.core.Gateway implements it)."""

    def manifest_of(self, device: str, agent: str) -> dict[str, Any] | None:
        """The agent's manifest as the host installed it, or None: permissions come from here."""

    def secrets_of(self, device: str) -> list[bytes]:
        """Keys that must never leave through a bridge: the device's and its fleet's."""

    def fleet_of(self, device: str) -> str | None:
        """The fleet a device is registered in."""

    def audit(self, device: str, agent: str, action: str, detail: Any) -> None:
        """Append a record to the audit log."""

    async def ask(self, device: str, agent: str, body: Any, timeout: float = 10.0) -> Any:
        """Send an agent a message event and return what it publishes next; TimeoutError,
        KeyError (unknown device)."""


def publish_text(body: Any) -> str:
    """An agent's publish {topic, data} as text: CBOR text as is, other CBOR as JSON."""
    data = body.get("data") if isinstance(body, dict) else body
    if isinstance(data, (bytes, bytearray)):
        try:
            data = cbor.loads(bytes(data), max_bytes=len(data))
        except cbor.CBORError:
            return bytes(data).decode("utf-8", "replace")
    return data if isinstance(data, str) else json.dumps(data, default=lambda v: v.hex() if isinstance(v, bytes) else str(v))


# Secrets that must not leave the fleet nor reach a board: name -> pattern.
SECRET_PATTERNS = [
    ("private key", re.compile(r"-----BEGIN (?:[A-Z]+ )?PRIVATE KEY-----")),
    ("AWS access key", re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b")),
    ("API token", re.compile(r"\b(?:sk-[A-Za-z0-9_-]{20,}|ghp_[A-Za-z0-9]{30,}|xox[abp]-[A-Za-z0-9-]{10,})")),
    ("JWT", re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}")),
    ("credential assignment", re.compile(r"(?i)\b(?:password|passwd|secret|api[_-]?key|token)\s*[:=]\s*\S{6,}")),
]


def redact(text: str) -> str:
    """`text` with control characters blanked and secrets of SECRET_PATTERNS redacted."""
    text = "".join(c if c.isprintable() or c in "\n\t" else " " for c in text)
    for _, pattern in SECRET_PATTERNS:
        text = pattern.sub("[redacted]", text)
    return text


def fit_text(text: str, limit: int = REPLY_BYTES) -> tuple[str, bool]:
    """`text` cut to at most `limit` bytes of UTF-8 (never inside a character), and whether it was cut."""
    raw = text.encode("utf-8")
    if len(raw) <= limit:
        return text, False
    return raw[:limit].decode("utf-8", "ignore"), True


class SpendWindow:
    """What each (device, agent) has spent (requests, tokens) in its current window of
    `window_s` seconds; a window starts with the first spending after the last one ended."""

    def __init__(self, window_s: float = 3600.0) -> None:
        self.window_s = window_s
        self._spent: dict[tuple[str, str], list[float]] = {}  # key -> [window start, spent]

    def spent(self, device: str, agent: str) -> float:
        now = time.monotonic()
        entry = self._spent.setdefault((device, agent), [now, 0.0])
        if now - entry[0] >= self.window_s:
            entry[0], entry[1] = now, 0.0
        return entry[1]

    def add(self, device: str, agent: str, amount: float) -> None:
        self.spent(device, agent)
        self._spent[(device, agent)][1] += amount
