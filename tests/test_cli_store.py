"""One way to name the gateway's store for every command: `--store URL|FILE` (alias `--db`),
or the config file's `[gateway] store` (or `db`), or MICROFANG_STORE; `status`, `audit verify`,
`audit list`, `keys add`, `keys list` and `jobs` work the same on a PostgreSQL store as on a
SQLite file, and a store they cannot use is one line naming it (never its password)."""

import json
import os
import subprocess
import sys

import psycopg
import pytest

from microfang.gateway.store import Store


def microfang(*args, env=None):
    done = subprocess.run([sys.executable, "-m", "microfang", *args], capture_output=True, text=True, timeout=60,
                          env={**os.environ, **(env or {})})
    return done


def ok(*args, env=None):
    done = microfang(*args, env=env)
    assert done.returncode == 0, done.stderr
    return done.stdout


def one_line_error(done):
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    return lines[0]


@pytest.fixture(params=["sqlite", "postgresql"])
def where(request, tmp_path):
    """A store of each engine: a SQLite file, or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return str(tmp_path / "gw.db")
    return request.getfixturevalue("pg_store")


def test_keys_add_then_list_on_either_store(where):
    key = ok("keys", "add", "kitchen", "--fleet", "home", "--store", where).strip()
    assert len(bytes.fromhex(key)) == 32
    rows = json.loads(ok("keys", "list", "--store", where, "--json"))
    assert [(r["device"], r["fleet"], r["online"]) for r in rows] == [("kitchen", "home", False)]
    store = Store(where)
    assert store.devices()["kitchen"]["key"].hex() == key  # an HMAC key for envelopes, and no fleet signing key
    assert store.sign_key("home", create=False) is None
    store.close()


def test_status_on_either_store(where):
    store = Store(where)
    store.add_device("kitchen", "home")
    store.add_telemetry("kitchen", {"agents": {"a1": {"state": "running", "fuel_used": 7, "events": 3, "traps": 0}}})
    store.close()
    rows = json.loads(ok("status", "--store", where, "--json"))
    assert [(r["device"], r["agents"], r["states"], r["fuel_used"]) for r in rows] == [("kitchen", 1, ["running"], 7)]


def test_audit_verify_and_list_on_either_store(where):
    store = Store(where)
    for n in range(5):
        store.audit("kitchen" if n % 2 else "attic", "a1", "request", {"id": n})
    store.close()
    assert json.loads(ok("audit", "verify", "--store", where, "--json")) == {"intact": True, "records": 5}
    rows = json.loads(ok("audit", "list", "--store", where, "--json", "-n", "2"))
    assert [json.loads(r["detail"])["id"] for r in rows] == [3, 4]  # the latest two, oldest first
    rows = json.loads(ok("audit", "list", "--store", where, "--json", "--device", "kitchen"))
    assert [json.loads(r["detail"])["id"] for r in rows] == [1, 3]
    assert "kitchen/a1 request" in ok("audit", "list", "--store", where)


def test_a_changed_audit_record_in_postgresql_is_named_in_one_line(pg_store):
    store = Store(pg_store)
    for n in range(3):
        store.audit("kitchen", "a1", "request", {"id": n})
    store.close()
    with psycopg.connect(pg_store, autocommit=True) as db:
        db.execute("UPDATE audit SET detail = '{\"id\":9}' WHERE n = 2")
    line = one_line_error(microfang("audit", "verify", "--store", pg_store))
    assert "audit log broken at record 2 (after 1 good records)" in line, line


def test_the_config_files_store_is_used_by_every_command(pg_store, tmp_path):
    config = tmp_path / "gateway.toml"
    config.write_text(f'[gateway]\nstore = "{pg_store}"\n')
    ok("keys", "add", "kitchen", "--config", str(config))
    assert [r["device"] for r in json.loads(ok("keys", "list", "--config", str(config), "--json"))] == ["kitchen"]
    assert [r["device"] for r in json.loads(ok("status", "--config", str(config), "--json"))] == ["kitchen"]
    assert json.loads(ok("jobs", "--config", str(config), "--json")) == []
    # the flag wins over the file
    other = tmp_path / "other.db"
    ok("keys", "add", "attic", "--config", str(config), "--store", str(other))
    assert [r["device"] for r in json.loads(ok("keys", "list", "--db", str(other), "--json"))] == ["attic"]


def test_the_config_files_sqlite_db_and_the_environment_name_the_store(pg_store, tmp_path):
    config = tmp_path / "gateway.toml"
    config.write_text(f'[gateway]\ndb = "{tmp_path / "file.db"}"\n')
    ok("keys", "add", "kitchen", "--config", str(config))
    assert Store(tmp_path / "file.db").devices().keys() == {"kitchen"}
    ok("keys", "add", "attic", env={"MICROFANG_STORE": pg_store})
    assert Store(pg_store).devices().keys() == {"attic"}


def test_an_unreachable_postgresql_store_is_one_line_without_its_password(tmp_path):
    from microfang.broker import free_port

    url = f"postgresql://gw:s3cret@127.0.0.1:{free_port()}/microfang"
    for command in (["status"], ["audit", "verify"], ["audit", "list"], ["keys", "list"], ["jobs"]):
        line = one_line_error(microfang(*command, "--store", url))
        assert "cannot connect" in line and "postgresql://127.0.0.1" in line, line
        assert "s3cret" not in line


def test_a_missing_sqlite_file_names_the_option(tmp_path):
    line = one_line_error(microfang("status", "--store", str(tmp_path / "none.db")))
    assert line == f"microfang: {tmp_path / 'none.db'}: no gateway database (start `microfang gateway --db " \
                   f"{tmp_path / 'none.db'}` first)"
