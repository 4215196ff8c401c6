import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import pytest
from brokers import Mosquitto
from signing_keys import K1


@pytest.fixture(autouse=True)
def operator_key(monkeypatch):
    """Every test runs as the operator of its fleet: deploys and flashes sign with K1
    (signing_keys.OPERATOR), the key tests' boards are provisioned with (fleet.make_board).
    A test about keyring files passes its own file, which wins over the environment."""
    monkeypatch.setenv("MICROFANG_SIGNING_KEY", K1.hex())
    monkeypatch.delenv("MICROFANG_SIGNING_KEYS", raising=False)


@pytest.fixture
def mosquitto(tmp_path):
    """A real Mosquitto broker on 127.0.0.1, on a free port, for one test."""
    broker = Mosquitto(tmp_path).start()
    yield broker
    broker.stop()


@pytest.fixture(scope="session")
def pg_dsn():
    """A PostgreSQL database with pgvector: MICROFANG_PG_DSN if set, else a private cluster on
    127.0.0.1 for this session (tests/postgres.py). No PostgreSQL is a failure, not a skip:
    tests/run installs it."""
    from postgres import PostgresCluster, PostgresMissing

    if os.environ.get("MICROFANG_PG_DSN"):
        yield os.environ["MICROFANG_PG_DSN"]
        return
    try:
        cluster = PostgresCluster().start()
    except PostgresMissing as e:
        pytest.fail(str(e), pytrace=False)
    yield cluster.dsn
    cluster.stop()


@pytest.fixture
def pg_store(pg_dsn):
    """A fresh database in the session's PostgreSQL for one test: its postgresql:// URL."""
    import uuid

    import psycopg

    name = f"gw_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_dsn, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    yield pg_dsn.rsplit("/", 1)[0] + "/" + name


@pytest.fixture(scope="session")
def micropython():
    """microfang's unix-port MicroPython (wasm3 + frozen firmware), built or taken from the cache."""
    from microfang.tools import portbuild

    return portbuild.build_unix(lambda line: None)


@pytest.fixture(scope="session")
def example_bundle(tmp_path_factory):
    """example_bundle(name): the bytes of tools/sdk/examples/<name> built (each once a session)."""
    from microfang.tools.build import build

    examples = Path(__file__).resolve().parent.parent / "tools" / "sdk" / "examples"
    folder = tmp_path_factory.mktemp("examples")
    built: dict[str, bytes] = {}

    def get(name: str) -> bytes:
        if name not in built:
            built[name] = build(examples / name / "agent.toml", folder / f"{name}.mfa")[0].read_bytes()
        return built[name]

    return get
