"""Test helpers: inline WAT agents and manifests, compiled with the real toolchain."""

from __future__ import annotations

import copy
from typing import Any

from microfang.firmware import bundle
from microfang.tools import manifest as manifests
from microfang.tools.build import build_wasm
from microfang.tools.wasm.wasmtools import parse_wat

BASE_MANIFEST: dict[str, Any] = {
    "schema_version": 1,
    "agent": {"module": "agent.wat", "version": 1},
    "sandbox": {
        "agent_id": "a1",
        "fuel": {"max_fuel": 100_000, "refuel_interval_ms": 50, "refuel_amount": 100_000},
        "memory": {"max_heap_kb": 64, "stack_size_kb": 8, "grow_limit_pages": 4},
        "permissions": {"allowed_host_functions": ["log"]},
    },
}

# The ABI boilerplate every WAT agent shares: a memory, mf_alloc returning a fixed buffer.
ABI = """
  (memory (export "memory") 1)
  (func (export "mf_alloc") (param i32) (result i32) (i32.const 1024))
"""


def manifest(**changes: Any) -> dict[str, Any]:
    """A valid raw manifest with dotted-path changes, e.g. manifest(**{"sandbox.agent_id": "b"})."""
    data = copy.deepcopy(BASE_MANIFEST)
    for path, value in changes.items():
        node = data
        *parents, key = path.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[key] = value
    return data


def agent_wat(body: str, imports: str = '(import "mf" "log" (func $log (param i32 i32)))', abi: str = ABI) -> str:
    return f"(module {imports} {abi} {body})"


def build_bundle(wat: str, **changes: Any) -> bytes:
    """Build a bundle from WAT with the real build pipeline (validate, ABI, cap, meter)."""
    normalized = manifests.validate(manifest(**changes), "test.toml")
    return bundle.encode(normalized, build_wasm(parse_wat(wat), normalized))


def raw_bundle(wasm: bytes, **changes: Any) -> bytes:
    """A bundle that skips the build's checks: what a hostile or broken host could send."""
    normalized = manifests.validate(manifest(**changes), "test.toml")
    return bundle.encode(normalized, wasm)


HELLO_WAT = agent_wat("""
  (data (i32.const 0) "hi")
  (func (export "mf_on_event") (param i32 i32 i32) (result i32)
    (call $log (i32.const 0) (i32.const 2)) (i32.const 0))""")
