"""Agent manifests: TOML in the agent-OS sandbox schema, validated into a normalized dict.

Every problem is a ManifestError whose message names the file, the field and the problem,
e.g. ``agent.toml: sandbox.fuel.max_fuel: must be a positive integer, got -5``.
The normalized dict is what a bundle carries and what the board reads (docs/protocol.md).
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from microfang.firmware import abi, protocol
from microfang.firmware.bundle import BUDGETS, RESTART_POLICIES
from microfang.firmware.errors import ManifestError

SCHEMA_VERSION = 1
# What one agent may ask of a board at most (firmware/abi.py); boards/ profiles narrow it per board.
MAX_HEAP_BYTES = abi.MAX_AGENT_MEMORY
MAX_STACK_KB = abi.MAX_AGENT_STACK >> 10
MAX_FUEL = abi.MAX_FUEL
MIN_TIMER_MS = 10

_KNOWN_KEYS = {
    "": {"schema_version", "agent", "sandbox", "memory_log", "vector_memory", "budgets"},
    "agent": {"module", "version", "description", "timers", "restart"},
    "agent.restart": {"policy", "max_restarts", "backoff_ms"},
    "sandbox": {"agent_id", "fuel", "memory", "permissions"},
    "sandbox.fuel": {"max_fuel", "refuel_interval_ms", "refuel_amount"},
    "sandbox.memory": {"max_heap_kb", "max_heap_mb", "stack_size_kb", "grow_limit_pages"},
    "sandbox.permissions": {"allowed_host_functions", "denied_host_functions", "tool_access", "a2a_access",
                            "data_exfil_detection"},
    "memory_log": {"max_kb"},
    "vector_memory": {"shared"},
    "budgets": set(BUDGETS),
}


class _Fields:
    """Reads fields of one manifest, raising errors that name the file and the field."""

    def __init__(self, source: str, data: dict[str, Any]) -> None:
        self.source = source
        self.data = data

    def fail(self, field: str, problem: str) -> ManifestError:
        return ManifestError(f"{self.source}: {field}: {problem}")

    def table(self, path: str) -> dict[str, Any]:
        node: Any = self.data
        for part in [p for p in path.split(".") if p]:
            node = node.get(part, {}) if isinstance(node, dict) else None
            if not isinstance(node, dict):
                raise self.fail(path, "must be a table")
        unknown = sorted(set(node) - _KNOWN_KEYS[path])
        if unknown:
            raise self.fail(f"{path}.{unknown[0]}" if path else unknown[0], "unknown field")
        return node

    def integer(self, path: str, default: int | None = None, low: int = 0, high: int = 1 << 62) -> int:
        table, _, key = path.rpartition(".")
        value = self.table(table).get(key, default)
        if value is None:
            raise self.fail(path, "is required")
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(path, f"must be an integer, got {value!r}")
        if value < low:
            raise self.fail(path, f"must be at least {low}, got {value}")
        if value > high:
            raise self.fail(path, f"asks for too much: {value} is above the limit {high}")
        return value

    def string_list(self, path: str) -> list[str]:
        table, _, key = path.rpartition(".")
        value = self.table(table).get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self.fail(path, "must be a list of strings")
        return list(value)


def _heap_bytes(f: _Fields) -> int:
    mem = f.table("sandbox.memory")
    if "max_heap_kb" in mem and "max_heap_mb" in mem:
        raise f.fail("sandbox.memory.max_heap_mb", "give max_heap_kb or max_heap_mb, not both")
    if "max_heap_mb" in mem:
        mb = f.integer("sandbox.memory.max_heap_mb", low=1, high=MAX_HEAP_BYTES >> 20)
        return mb << 20
    kb = f.integer("sandbox.memory.max_heap_kb", default=64, low=1, high=MAX_HEAP_BYTES >> 10)
    return kb << 10


def _timers(f: _Fields) -> list[dict[str, int]]:
    raw = f.table("agent").get("timers", [])
    if not isinstance(raw, list):
        raise f.fail("agent.timers", "must be a list of {id, every_ms} tables")
    timers = []
    for n, timer in enumerate(raw):
        field = f"agent.timers[{n}]"
        if not isinstance(timer, dict) or set(timer) - {"id", "every_ms"}:
            raise f.fail(field, "must be a table with id and every_ms")
        every = timer.get("every_ms")
        if isinstance(every, bool) or not isinstance(every, int) or every < MIN_TIMER_MS:
            raise f.fail(f"{field}.every_ms", f"must be an integer of at least {MIN_TIMER_MS} ms, got {every!r}")
        timer_id = timer.get("id", n + 1)
        if isinstance(timer_id, bool) or not isinstance(timer_id, int) or not 0 < timer_id < 1 << 16:
            raise f.fail(f"{field}.id", f"must be an integer in 1..65535, got {timer_id!r}")
        timers.append({"id": timer_id, "every_ms": every})
    return timers


def _boolean(f: _Fields, table: str, key: str, default: bool) -> bool:
    value = f.table(table).get(key, default)
    if not isinstance(value, bool):
        raise f.fail(f"{table}.{key}", "must be true or false")
    return value


def _permissions(f: _Fields) -> dict[str, Any]:
    allowed = f.string_list("sandbox.permissions.allowed_host_functions")
    denied = f.string_list("sandbox.permissions.denied_host_functions")
    for field, names in (("allowed_host_functions", allowed), ("denied_host_functions", denied)):
        for name in names:
            if name not in abi.HOST_FUNCTIONS:
                known = ", ".join(sorted(abi.HOST_FUNCTIONS))
                raise f.fail(f"sandbox.permissions.{field}", f"unknown host function {name!r} (known: {known})")
    both = sorted(set(allowed) & set(denied))
    if both:
        raise f.fail("sandbox.permissions.denied_host_functions", f"{both[0]!r} is also allowed")
    exfil = _boolean(f, "sandbox.permissions", "data_exfil_detection", True)
    return {
        "allowed": allowed,
        "denied": denied,
        "tool_access": f.string_list("sandbox.permissions.tool_access"),  # MCP tools: "server.tool" or "server.*"
        "a2a_access": f.string_list("sandbox.permissions.a2a_access"),  # A2A peers by name (gateway config)
        "data_exfil_detection": exfil,
    }


def validate(data: dict[str, Any], source: str = "manifest") -> dict[str, Any]:
    """Validate a parsed manifest and return its normalized form."""
    f = _Fields(source, data)
    f.table("")
    schema = f.integer("schema_version", low=1)
    if schema != SCHEMA_VERSION:
        raise f.fail("schema_version", f"unsupported version {schema} (this microfang reads {SCHEMA_VERSION})")
    agent_id = f.table("sandbox").get("agent_id")
    if not protocol.name_ok(agent_id):
        raise f.fail("sandbox.agent_id", f"must be {protocol.NAME_RULE}, got {agent_id!r}")
    module = f.table("agent").get("module")
    if not isinstance(module, str) or not module:
        raise f.fail("agent.module", "is required: the path of the agent's .wasm, .wat or .c")
    max_fuel = f.integer("sandbox.fuel.max_fuel", default=10_000_000, low=1, high=MAX_FUEL)
    restart = f.table("agent.restart")
    policy = restart.get("policy", "on-failure")
    if policy not in RESTART_POLICIES:
        raise f.fail("agent.restart.policy", f"must be one of {', '.join(RESTART_POLICIES)}, got {policy!r}")
    heap = _heap_bytes(f)
    stack_kb = f.integer("sandbox.memory.stack_size_kb", default=8, low=1, high=MAX_STACK_KB)
    return {
        "schema_version": schema,
        "agent_id": agent_id,
        "module": module,
        "version": f.integer("agent.version", default=1, low=1, high=(1 << 31) - 1),
        "description": str(f.table("agent").get("description", "")),
        "timers": _timers(f),
        "restart": {
            "policy": policy,
            "max_restarts": f.integer("agent.restart.max_restarts", default=5, high=1000),
            "backoff_ms": f.integer("agent.restart.backoff_ms", default=500, low=1, high=3_600_000),
        },
        "fuel": {
            "max": max_fuel,
            "refuel_interval_ms": f.integer("sandbox.fuel.refuel_interval_ms", default=1000, low=MIN_TIMER_MS),
            "refuel_amount": f.integer("sandbox.fuel.refuel_amount", default=max_fuel, low=1, high=MAX_FUEL),
        },
        "memory": {
            "max_bytes": heap,
            "stack_bytes": stack_kb << 10,
            "grow_limit_pages": f.integer("sandbox.memory.grow_limit_pages", default=64, high=65536),
        },
        "permissions": _permissions(f),
        "memory_log": {"max_kb": f.integer("memory_log.max_kb", default=64, low=1, high=1 << 20)},
        # Gateway vector memory: an agent always has its own scope; `shared` adds its fleet's.
        "vector_memory": {"shared": _boolean(f, "vector_memory", "shared", False)},
        # Enforced by the gateway (the board announces them when it spawns the agent); 0: none.
        "budgets": {"requests_per_s": f.integer("budgets.requests_per_s", default=0, high=100_000),
                    "llm_tokens_per_hour": f.integer("budgets.llm_tokens_per_hour", default=0, high=1 << 40)},
    }


def load(path: str | Path) -> dict[str, Any]:
    """Read and validate a manifest file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ManifestError(f"{path}: cannot read: {e.strerror}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ManifestError(f"{path}: not valid TOML: {e}") from None
    return validate(data, str(path))
