"""The checks every bridged call passes at the gateway, whatever the board says.

1. Permission: the agent's *registered* manifest (installed by flash/deploy/migrate) must list
   the tool (`tool_access`: "server.tool" or "server.*") or the A2A peer (`a2a_access`).
2. Exfiltration: with `data_exfil_detection` (on unless the manifest turns it off), outbound
   arguments that carry key material or credentials are blocked: PEM private keys, cloud and
   API tokens, JWTs, password/secret assignments, and the fleet's own keys in hex or base64.
3. Output filter: results going back to a board lose control characters and any secret of the
   same patterns (redacted), and are cut to what an agent can take.
Every decision is audited by the caller with the reason.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from typing import Any

from microfang.firmware.errors import MicrofangError
from microfang.request import REPLY_BYTES, SECRET_PATTERNS, fit_text, redact


class BridgeDenied(MicrofangError):
    """A bridged call was refused (permission, exfiltration); the message is the reason."""


def _flatten(value: Any) -> str:
    if isinstance(value, bytes):
        return value.hex() + " " + base64.b64encode(value).decode()
    try:
        return json.dumps(value, default=lambda v: v.hex() if isinstance(v, bytes) else str(v))
    except (TypeError, ValueError):
        return str(value)


def find_secrets(value: Any, known: Sequence[bytes] = ()) -> list[str]:
    """Names of the secret patterns found in `value` (any JSON-like data); `known` are raw keys
    that must never leave (the device's and fleet's), matched in hex and base64."""
    text = _flatten(value)
    found = [name for name, pattern in SECRET_PATTERNS if pattern.search(text)]
    lowered = text.lower()
    for key in known:
        if key and (key.hex() in lowered or base64.b64encode(key).decode() in text):
            found.append("a fleet key")
    return found


def check_access(manifest: dict[str, Any] | None, field: str, name: str) -> dict[str, Any]:
    """The registered manifest, if it lets the agent use `name`; else BridgeDenied."""
    if manifest is None:
        raise BridgeDenied("the agent has no registered manifest (install it with microfang flash or deploy)")
    allowed = manifest.get("permissions", {}).get(field, [])
    server = name.split(".", 1)[0]
    if name not in allowed and f"{server}.*" not in allowed:
        raise BridgeDenied(f"{name} is not in the agent's {field}")
    return manifest


def check_outbound(manifest: dict[str, Any], args: Any, known: list[bytes]) -> None:
    if not manifest.get("permissions", {}).get("data_exfil_detection", True):
        return
    found = find_secrets(args, known)
    if found:
        raise BridgeDenied(f"blocked: the arguments carry {', '.join(sorted(set(found)))} (data_exfil_detection)")


def filter_output(text: str, limit: int = REPLY_BYTES - 64) -> str:
    """What may reach a board: printable text, secrets redacted, at most `limit` bytes."""
    return fit_text(redact(text), limit)[0]
