"""What a board may send in each message body, checked before the gateway uses any field: one
table, as firmware/bundle.py checks a manifest. A board can be buggy or hostile; nothing it
sends may crash the gateway, overflow a database column or make the gateway write more than
the board's share (an integer given where bytes belong would become that many zero bytes).

    problem("up", "request", {"id": 2**63, "kind": "echo"})
    -> "request.id must be an integer in 0..4294967295"
"""

from __future__ import annotations

from typing import Any

from microfang.firmware import envelope, protocol

U32 = 0xFFFFFFFF
TEXT_MAX = 64  # a request kind, a publish topic

# field -> (type, low, high): an integer in range, a str or bytes of that length; a dict: a map
# whose values all have that shape; `optional` fields may be missing. Each body is a map.
Shape = dict[str, tuple[type, int, int]]
_REQUEST: Shape = {"id": (int, 0, U32), "kind": (str, 1, TEXT_MAX), "body": (bytes, 0, envelope.MAX_ENVELOPE)}
_PUBLISH: Shape = {"topic": (str, 0, TEXT_MAX), "data": (bytes, 0, envelope.MAX_ENVELOPE)}
_AGENT: Shape = {"version": (int, 0, U32), "budgets": (dict, 0, 32)}
_TELE: Shape = {"agents": (dict, 0, 64), "free_heap": (int, 0, 1 << 40), "link": (dict, 0, 32)}
_LINES: Shape = {"line": (str, 0, protocol.LINE_MAX), "ms": (int, 0, U32), "dropped": (int, 0, U32)}
SHAPES: dict[str, tuple[Shape, tuple[str, ...]]] = {  # kind -> (shape, optional fields)
    protocol.K_REQUEST: (_REQUEST, ("body",)),
    protocol.K_PUBLISH: (_PUBLISH, ("data",)),
    protocol.K_AGENT: (_AGENT, ("budgets",)),
    protocol.K_TELE: (_TELE, ("agents", "free_heap", "link")),
    protocol.K_LINES: (_LINES, ("dropped",)),
}
_TELE_AGENT: Shape = {"state": (str, 0, TEXT_MAX), "fuel_used": (int, 0, 1 << 62), "events": (int, 0, 1 << 62),
                      "traps": (int, 0, 1 << 62)}


def _field(where: str, value: Any, want: tuple[type, int, int]) -> str | None:
    kind, low, high = want
    if kind is int:
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
            return f"{where} must be an integer in {low}..{high}"
        return None
    if not isinstance(value, str | bytes | dict) or not isinstance(value, kind):
        return f"{where} must be {'a map' if kind is dict else kind.__name__}, not {type(value).__name__}"
    if not low <= len(value) <= high:
        return f"{where} must hold {low}..{high} {'entries' if kind is dict else 'bytes'}, not {len(value)}"
    return None


def _map(where: str, body: Any, shape: Shape, optional: tuple[str, ...]) -> str | None:
    if not isinstance(body, dict):
        return f"{where} must be a map, not {type(body).__name__}"
    for name, want in shape.items():
        if name not in body:
            if name in optional:
                continue
            return f"{where}.{name} is missing"
        bad = _field(f"{where}.{name}", body[name], want)
        if bad:
            return bad
    return None


def _log_records(body: Any) -> str | None:
    if not isinstance(body, list):
        return f"log must be a list of [seq, payload], not {type(body).__name__}"
    for i, record in enumerate(body):
        if not isinstance(record, list) or len(record) != 2:
            return f"log[{i}] must be [seq, payload]"
        bad = _field(f"log[{i}].seq", record[0], (int, 1, U32)) or \
            _field(f"log[{i}].payload", record[1], (bytes, 0, envelope.MAX_ENVELOPE))
        if bad:
            return bad
    return None


def _telemetry(body: Any) -> str | None:
    bad = _map("tele", body, *SHAPES[protocol.K_TELE])
    if bad:
        return bad
    for name, agent in body.get("agents", {}).items():
        if not protocol.name_ok(name):
            return f"tele.agents: agent name {name!r} must be {protocol.NAME_RULE}"
        bad = _map(f"tele.agents.{name}", agent, _TELE_AGENT, tuple(_TELE_AGENT))
        if bad:
            return bad
    for name, count in body.get("link", {}).items():
        bad = _field(f"tele.link.{name}", count, (int, 0, 1 << 62)) if isinstance(name, str) else "tele.link: names"
        if bad:
            return bad
    return None


def problem(kind: str, body: Any) -> str | None:
    """What is wrong with the body of a board's message of `kind` (None: nothing the gateway
    reads from it is out of shape). Kinds without an entry are checked by their handler
    (transfers.py checks the deploy answers)."""
    if kind == protocol.K_LOG:
        return _log_records(body)
    if kind == protocol.K_TELE:
        return _telemetry(body)
    if kind in SHAPES:
        return _map(kind, body, *SHAPES[kind])
    return None
