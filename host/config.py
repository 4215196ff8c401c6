"""The gateway's TOML configuration (`microfang gateway --config gateway.toml`); command-line
options and MICROFANG_* environment variables override it.

    [broker]
    url = "mqtts://broker.example:8883"
    user = "microfang-gateway"
    password_env = "MICROFANG_BROKER_PASSWORD"
    cafile = "/etc/microfang/ca.crt"

    [gateway]
    db = "/var/lib/microfang/gateway.db"
    http = 8077

    [limits]
    rate = 50           # requests per second per agent
    budget = 5000       # requests per hour per agent

    [llm]
    provider = "openai" # none | local | openai
    url = "http://127.0.0.1:11434/v1"
    model = "smollm2:135m"
    key_env = "OPENAI_API_KEY"
    tokens = 20000      # token budget per agent

    [memory]
    embedder = "auto"   # auto | minilm | smollm2 | openai | none
    db = "/var/lib/microfang/memory.db"

    [mcp_servers.files]             # tools agents may call (tool.call "files.read_file")
    command = ["python", "-m", "my_mcp_server"]
    # url = "http://127.0.0.1:9000/mcp"  (streamable HTTP instead of a command)

    [a2a]
    port = 8078                     # serve the fleet as A2A agents (0: off)
    [a2a.peers.planner]             # remote A2A agents agents may call (a2a.send "planner")
    url = "http://127.0.0.1:9999"
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

from microfang.firmware.errors import MicrofangError

_SECTIONS = {
    "broker": {"url": str, "user": str, "password_env": str, "cafile": str},
    "gateway": {"db": str, "http": int},
    "limits": {"rate": (int, float), "budget": int},
    "llm": {"provider": str, "url": str, "model": str, "key_env": str, "tokens": int},
    "memory": {"embedder": str, "db": str, "url": str, "model": str},
    "a2a": {"port": int, "expose": list, "peers": dict},  # [a2a.peers.NAME] checked in gateway/services.py
}
# Tables of named entries: [mcp_servers.NAME] (checked in gateway/services.py).
_NAMED = ("mcp_servers",)


def load(path: Path) -> dict[str, dict[str, Any]]:
    """Read and check a gateway config; every problem names the file and the field."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise MicrofangError(f"{path}: cannot read: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise MicrofangError(f"{path}: not valid TOML: {e}") from None
    for section, table in data.items():
        if section in _NAMED and isinstance(table, dict):
            continue
        if section not in _SECTIONS or not isinstance(table, dict):
            raise MicrofangError(f"{path}: {section}: unknown section (have: {', '.join([*_SECTIONS, *_NAMED])})")
        for key, value in table.items():
            want = _SECTIONS[section].get(key)
            if want is None:
                raise MicrofangError(f"{path}: {section}.{key}: unknown field")
            if isinstance(value, bool) or not isinstance(value, want):
                raise MicrofangError(f"{path}: {section}.{key}: wrong type {type(value).__name__}")
    if data.get("llm", {}).get("provider", "none") not in ("none", "local", "openai"):
        raise MicrofangError(f"{path}: llm.provider: must be none, local or openai")
    return data


def secret(env_name: str | None) -> str | None:
    return os.environ.get(env_name) if env_name else None
