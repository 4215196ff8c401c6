"""The CLI as a newcomer uses it: build then run each example; bad input gets one line."""

import json
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).parent.parent / "tools" / "sdk" / "examples"


def microfang(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "microfang", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=120, check=False)


@pytest.fixture
def example(tmp_path):
    def copy(name):
        shutil.copytree(EXAMPLES / name, tmp_path / name)
        return tmp_path / name
    return copy


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("hello", ["hello from a wasm agent", "tick 1", "tick 2"]),
        ("threshold", ["ALERT temperature high: 3", "publish alert (5 bytes)"]),
        ("ask", ["asking the gateway's LLM", "request llm #1", "LLM error: no gateway attached"]),
    ],
)
def test_build_then_run_each_example(example, name, expected):
    folder = example(name)
    built = microfang("build", folder / "agent.toml")
    assert built.returncode == 0, built.stderr
    assert f"built {folder / name}.mfa" in built.stdout
    ran = microfang("run", folder / f"{name}.mfa", "--seconds", "2")
    assert ran.returncode == 0, ran.stderr
    for line in expected:
        assert line in ran.stdout
    assert "running" in ran.stdout and "fault" not in ran.stdout


def test_inspect_shows_a_bundle(example):
    folder = example("hello")
    microfang("build", folder / "agent.toml")
    shown = microfang("inspect", folder / "hello.mfa")
    assert shown.returncode == 0, shown.stderr
    assert "agent      hello v1" in shown.stdout
    assert "metering.usegas" in shown.stdout


def test_bad_manifest_is_one_line_without_traceback(tmp_path):
    bad = tmp_path / "agent.toml"
    bad.write_text('schema_version = 1\n[agent]\nmodule = "x.wat"\n[sandbox]\nagent_id = "x"\n'
                   "[sandbox.fuel]\nmax_fuel = -1\n")
    out = microfang("build", bad)
    assert out.returncode == 1
    assert out.stderr.strip() == f"microfang: {bad}: sandbox.fuel.max_fuel: must be at least 1, got -1"


def test_malformed_wasm_is_one_line_without_traceback(tmp_path):
    (tmp_path / "agent.wasm").write_bytes(b"\x00asm\x01\x00\x00\x00\x01\x05garbage")
    (tmp_path / "agent.toml").write_text('schema_version = 1\n[agent]\nmodule = "agent.wasm"\n'
                                         '[sandbox]\nagent_id = "x"\n')
    out = microfang("build", tmp_path / "agent.toml")
    assert out.returncode == 1
    assert out.stderr.startswith(f"microfang: {tmp_path / 'agent.toml'}: agent.wasm: invalid wasm:")
    assert "Traceback" not in out.stderr and out.stderr.count("\n") == 1
    inspected = microfang("inspect", tmp_path / "agent.wasm")
    assert inspected.returncode == 1 and "Traceback" not in inspected.stderr


def test_truncated_bundle_is_one_line_without_traceback(example):
    folder = example("hello")
    microfang("build", folder / "agent.toml")
    data = (folder / "hello.mfa").read_bytes()
    (folder / "cut.mfa").write_bytes(data[: len(data) // 2])
    out = microfang("run", folder / "cut.mfa", "--seconds", "0.1")
    assert out.returncode == 1
    assert out.stderr.strip() == f"microfang: {folder / 'cut.mfa'}: not a bundle: truncated CBOR"


@pytest.mark.parametrize("command", ["inspect", "deploy"])
@pytest.mark.parametrize("name", ["agent.toml", "hello.c"])
def test_a_manifest_or_source_given_as_a_bundle_says_build_it(example, command, name):
    path = example("hello") / name
    if command == "deploy":
        assert microfang("keys", "add", "d1", "--fleet", "f", "--db", path.parent / "g.db").returncode == 0
    args = [command, path] + (["--fleet", "f", "--db", path.parent / "g.db"] if command == "deploy" else [])
    out = microfang(*args)
    assert out.returncode == 1
    assert out.stderr.strip() == f"microfang: {path}: not a bundle: build one with `microfang build`"


def test_a_garbage_module_error_carries_no_tool_log_lines(tmp_path):
    # wasm-tools warns about DWARF in a log line before its error: that line is not ours to show.
    (tmp_path / "bad.wasm").write_bytes(b"\0asm\1\0\0\0" + bytes([0x00, 0x05, 0x04]) + b"xyz")
    (tmp_path / "agent.toml").write_text('schema_version = 1\n[agent]\nmodule = "bad.wasm"\nversion = 1\n'
                                         '[sandbox]\nagent_id = "bad"\n', encoding="utf-8")
    out = microfang("build", tmp_path / "agent.toml")
    assert out.returncode == 1
    line = out.stderr.strip()
    assert line.startswith("microfang: ") and "invalid wasm" in line and "WARN" not in line and "[20" not in line, line
    assert len(line.splitlines()) == 1


def gateway_once(tmp_path, broker_port, *args):
    """Start `microfang gateway` and return how it ended (these cases end at once)."""
    return subprocess.run([sys.executable, "-m", "microfang", "gateway", "--broker", f"mqtt://127.0.0.1:{broker_port}",
                           "--db", str(tmp_path / "g.db"), *map(str, args)], capture_output=True, text=True,
                          timeout=60, check=False)


def test_gateway_http_port_in_use_is_one_line(tmp_path, mosquitto):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        out = gateway_once(tmp_path, mosquitto.port, "--http", port)
    assert out.returncode == 1
    assert out.stderr.strip() == f"microfang: http port {port}: cannot listen on 127.0.0.1:{port} (Address already in use)"


@pytest.mark.parametrize(("config", "problem"), [
    ("[mcp_server.parts]\ncommand = ['x']\n",
     "mcp_server: unknown section (have: broker, gateway, limits, llm, memory, a2a, mcp_servers)"),
    ("[a2a]\nport = 'abc'\n", "a2a.port: wrong type str"),
])
def test_gateway_config_mistakes_are_one_line(tmp_path, mosquitto, config, problem):
    (tmp_path / "gateway.toml").write_text(config, encoding="utf-8")
    out = gateway_once(tmp_path, mosquitto.port, "--config", tmp_path / "gateway.toml", "--http", 0)
    assert out.returncode == 1
    assert out.stderr.strip() == f"microfang: {tmp_path / 'gateway.toml'}: {problem}"


def test_gateway_a2a_port_in_use_is_one_line(tmp_path, mosquitto):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        (tmp_path / "token").write_text("t0k3n\n", encoding="utf-8")
        (tmp_path / "token").chmod(0o600)
        (tmp_path / "gateway.toml").write_text(f"[a2a]\nport = {port}\nexpose = [\"kitchen/reporter\"]\n"
                                                f"token_file = \"{tmp_path / 'token'}\"\n", encoding="utf-8")
        out = gateway_once(tmp_path, mosquitto.port, "--config", tmp_path / "gateway.toml", "--http", 0,
                           "--memory", "none")
    assert out.returncode == 1
    assert out.stderr.strip() == f"microfang: [a2a] port {port}: cannot listen on 127.0.0.1:{port} (Address already in use)"


@pytest.mark.parametrize(("command", "flag"), [("gateway", "--password"), ("mcp", "--token"),
                                               ("flash", "--wifi-password")])
def test_secrets_are_never_taken_on_the_command_line(command, flag):
    out = microfang(command, flag, "s3cret")  # `ps` would show it to every user of the machine
    assert out.returncode == 2
    assert "s3cret" not in out.stderr  # nor is it repeated in the error
    assert f"unrecognized arguments: {flag} ***" in out.stderr or "the following arguments are required" in out.stderr
    assert f"{flag}-file FILE" in microfang(command, "--help").stdout


def test_status_jobs_keys_and_audit_speak_json_for_scripts(tmp_path):
    db = tmp_path / "g.db"
    key = microfang("keys", "add", "kitchen", "--fleet", "home", "--db", db).stdout.strip()
    listing = json.loads(microfang("keys", "list", "--json", "--db", db).stdout)
    assert listing == [{"device": "kitchen", "fleet": "home", "online": False, "last_seen": None}]
    assert key not in json.dumps(listing)  # the registry's listing carries no secret
    assert [row["device"] for row in json.loads(microfang("status", "--json", "--db", db).stdout)] == ["kitchen"]
    assert json.loads(microfang("jobs", "--json", "--db", db).stdout) == []
    assert json.loads(microfang("audit", "verify", "--json", "--db", db).stdout) == {"intact": True, "records": 0}


@pytest.mark.parametrize(("content", "mode", "problem"), [
    (b"s3cret\n", 0o644, "is readable by others (mode 644): chmod 600"),
    (b"\xff\xfe\x00", 0o600, "is not UTF-8 text"),
    (b"", 0o600, "is empty"),
    (b"x" * 5000, 0o600, "is over 4096 bytes"),
])
def test_a_secret_file_must_be_private_small_text(tmp_path, content, mode, problem):
    assert microfang("keys", "add", "d1", "--db", tmp_path / "g.db").returncode == 0
    (tmp_path / "token").write_bytes(content)
    (tmp_path / "token").chmod(mode)
    out = microfang("mcp", "--db", tmp_path / "g.db", "--http", "8999", "--token-file", tmp_path / "token")
    assert out.returncode == 1
    assert out.stderr.startswith(f"microfang: --token-file: {tmp_path / 'token'} ") and problem in out.stderr, out.stderr


def test_a_device_file_is_not_read_as_a_secret_or_a_bundle(tmp_path):
    assert microfang("keys", "add", "d1", "--db", tmp_path / "g.db").returncode == 0
    out = microfang("mcp", "--db", tmp_path / "g.db", "--http", "8999", "--token-file", "/dev/zero")
    assert out.returncode == 1 and "/dev/zero is not a regular file" in out.stderr, out.stderr
    (tmp_path / "fleet.toml").write_text('[boards.a]\nagents = ["zero.mfa"]\n', encoding="utf-8")
    (tmp_path / "zero.mfa").symlink_to("/dev/zero")
    out = microfang("sim", tmp_path / "fleet.toml", "-t", "1", "--db", tmp_path / "s.db")
    assert out.returncode == 1 and "zero.mfa: not a bundle file" in out.stderr, out.stderr


@pytest.mark.parametrize("seconds", ["nan", "inf", "-1"])
def test_sim_and_run_want_a_finite_time(tmp_path, seconds):
    for command in (["sim", "--db", tmp_path / "s.db"], ["run", EXAMPLES / "hello" / "agent.toml"]):
        out = microfang(*command, "-t", seconds)
        assert out.returncode == 1 and "--seconds must be" in out.stderr, out.stderr


@pytest.mark.parametrize(("name", "problem"), [
    ("a/b", "must be 1-32 of a-z 0-9 _ - starting with a letter or digit"),
    ("+", "must be 1-32 of a-z 0-9 _ - starting with a letter or digit"),
    ("#", "must be 1-32 of a-z 0-9 _ - starting with a letter or digit"),
    ("..", "must be 1-32 of a-z 0-9 _ - starting with a letter or digit"),
    ("two words", "must be 1-32 of a-z 0-9 _ - starting with a letter or digit"),
    ("esc\x1b[2J", "must be 1-32 of a-z 0-9 _ - starting with a letter or digit"),
    ("microfang-gateway", "names starting with microfang- are the gateways' own broker users and client ids"),
])
def test_a_device_name_that_could_not_be_a_topic_level_or_is_a_gateways_is_refused(tmp_path, name, problem):
    out = microfang("keys", "add", name, "--db", tmp_path / "g.db")
    assert out.returncode == 1 and problem in out.stderr and len(out.stderr.splitlines()) == 1, out.stderr
    assert json.loads(microfang("keys", "list", "--json", "--db", tmp_path / "g.db").stdout) == []
