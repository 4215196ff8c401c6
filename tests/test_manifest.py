"""Manifests: the agent-OS sandbox schema, and a one-line error for every invalid field."""

import pytest
from helpers import manifest

from microfang.firmware.errors import ManifestError
from microfang.tools import manifest as manifests


def check(**changes):
    return manifests.validate(manifest(**changes), "agent.toml")


def test_valid_manifest_is_normalized():
    m = check(**{"sandbox.memory.max_heap_kb": 8, "sandbox.memory.stack_size_kb": 2})
    assert m["agent_id"] == "a1"
    assert m["memory"] == {"max_bytes": 8192, "stack_bytes": 2048, "grow_limit_pages": 4}
    assert m["fuel"] == {"max": 100_000, "refuel_interval_ms": 50, "refuel_amount": 100_000}
    assert m["permissions"]["allowed"] == ["log"]


def test_max_heap_mb_is_accepted():
    data = manifest()
    data["sandbox"]["memory"] = {"max_heap_mb": 2}
    assert manifests.validate(data, "agent.toml")["memory"]["max_bytes"] == 2 << 20


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"schema_version": 2}, "agent.toml: schema_version: unsupported version 2"),
        ({"sandbox.agent_id": "Bad Id!"}, "agent.toml: sandbox.agent_id: must be 1-32 of a-z 0-9 _ -"),
        ({"sandbox.fuel.max_fuel": -5}, "agent.toml: sandbox.fuel.max_fuel: must be at least 1, got -5"),
        ({"sandbox.fuel.max_fuel": "lots"}, "agent.toml: sandbox.fuel.max_fuel: must be an integer, got 'lots'"),
        ({"sandbox.fuel.refuel_interval_ms": 1}, "agent.toml: sandbox.fuel.refuel_interval_ms: must be at least 10"),
        ({"sandbox.memory.max_heap_kb": 1 << 30}, "agent.toml: sandbox.memory.max_heap_kb: asks for too much"),
        ({"sandbox.memory.max_heap_mb": 1}, "agent.toml: sandbox.memory.max_heap_mb: give max_heap_kb or max_heap_mb"),
        ({"sandbox.memory.stack_size_kb": 0}, "agent.toml: sandbox.memory.stack_size_kb: must be at least 1"),
        ({"sandbox.memory.grow_limit_pages": True}, "agent.toml: sandbox.memory.grow_limit_pages: must be an integer"),
        ({"sandbox.permissions.allowed_host_functions": ["system"]},
         "agent.toml: sandbox.permissions.allowed_host_functions: unknown host function 'system'"),
        ({"sandbox.permissions.denied_host_functions": ["log"]},
         "agent.toml: sandbox.permissions.denied_host_functions: 'log' is also allowed"),
        ({"sandbox.permissions.tool_access": "all"}, "agent.toml: sandbox.permissions.tool_access: must be a list"),
        ({"sandbox.permissions.data_exfil_detection": "yes"},
         "agent.toml: sandbox.permissions.data_exfil_detection: must be true or false"),
        ({"sandbox.fuel.max_fuell": 5}, "agent.toml: sandbox.fuel.max_fuell: unknown field"),
        ({"agent.module": ""}, "agent.toml: agent.module: is required"),
        ({"agent.version": 0}, "agent.toml: agent.version: must be at least 1"),
        ({"agent.timers": [{"id": 1, "every_ms": 1}]}, "agent.toml: agent.timers[0].every_ms: must be an integer of at least 10"),
        ({"agent.restart": {"policy": "sometimes"}}, "agent.toml: agent.restart.policy: must be one of never, on-failure, always"),
        ({"sandbox.fuel": 7}, "agent.toml: sandbox.fuel: must be a table"),
    ],
)
def test_invalid_field_gets_a_one_line_error_naming_file_and_field(changes, message):
    with pytest.raises(ManifestError) as err:
        check(**changes)
    assert str(err.value).startswith(message)
    assert "\n" not in str(err.value)


def test_missing_file_and_bad_toml_are_named(tmp_path):
    with pytest.raises(ManifestError, match="nope.toml: cannot read"):
        manifests.load(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("schema_version = = 1\n")
    with pytest.raises(ManifestError, match="bad.toml: not valid TOML"):
        manifests.load(bad)
