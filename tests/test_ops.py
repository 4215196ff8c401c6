"""Fleet operations on a gateway database: `microfang status`, `audit verify`, `keys add`."""

import sqlite3
import subprocess
import sys

from microfang.gateway.store import Store


def microfang(*args):
    return subprocess.run([sys.executable, "-m", "microfang", *map(str, args)], capture_output=True, text=True,
                          timeout=60, check=False)


def test_keys_add_registers_a_device_and_status_lists_it(tmp_path):
    db = tmp_path / "gw.db"
    added = microfang("keys", "add", "board7", "--fleet", "lab", "--db", db)
    assert added.returncode == 0, added.stderr
    assert len(bytes.fromhex(added.stdout.strip())) == 32
    again = microfang("keys", "add", "board7", "--fleet", "lab", "--db", db)
    assert again.stdout == added.stdout  # a device keeps its key
    shown = microfang("status", "--db", db)
    assert shown.returncode == 0, shown.stderr
    assert "board7" in shown.stdout and "lab" in shown.stdout and "offline" in shown.stdout


def test_audit_verify_accepts_an_intact_chain_and_names_a_tampered_record(tmp_path):
    db = tmp_path / "gw.db"
    store = Store(db)
    for n in range(5):
        store.audit("dev1", "a1", "request", {"kind": "echo", "id": n})
    store.close()
    ok = microfang("audit", "verify", "--db", db)
    assert ok.returncode == 0 and "audit log intact: 5 records" in ok.stdout
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE audit SET detail = '{\"kind\":\"llm\",\"id\":2}' WHERE n = 3")
    bad = microfang("audit", "verify", "--db", db)
    assert bad.returncode == 1
    assert bad.stderr.strip() == f"microfang: {db}: audit log broken at record 3 (after 2 good records): " \
                                 "a record was changed, removed or inserted"


def test_status_without_a_database_is_one_line(tmp_path):
    out = microfang("status", "--db", tmp_path / "none.db")
    assert out.returncode == 1
    assert out.stderr.strip() == f"microfang: {tmp_path / 'none.db'}: no gateway database " \
                                 f"(start `microfang gateway --db {tmp_path / 'none.db'}` first)"


def test_gateway_without_a_broker_is_one_line(tmp_path):
    from brokers import free_port

    out = microfang("gateway", "--broker", f"mqtt://127.0.0.1:{free_port()}", "--db", tmp_path / "gw.db", "--http", "0")
    assert out.returncode == 1
    assert out.stderr.strip().startswith("microfang: cannot reach the MQTT broker at 127.0.0.1:")


def test_gateway_config_with_a_bad_field_is_one_line(tmp_path):
    config = tmp_path / "gateway.toml"
    config.write_text('[broker]\nurl = "mqtt://127.0.0.1:1"\n[llm]\nprovider = "magic"\n')
    out = microfang("gateway", "--config", config)
    assert out.returncode == 1
    assert out.stderr.strip() == f"microfang: {config}: llm.provider: must be none, local or openai"
    config.write_text("[broker]\nport = 1883\n")
    out = microfang("gateway", "--config", config)
    assert out.stderr.strip() == f"microfang: {config}: broker.port: unknown field"


def test_gateway_config_points_at_the_broker(tmp_path):
    from brokers import free_port

    config = tmp_path / "gateway.toml"
    port = free_port()
    config.write_text(f'[broker]\nurl = "mqtt://127.0.0.1:{port}"\n[gateway]\ndb = "{tmp_path / "gw.db"}"\nhttp = 0\n')
    out = microfang("gateway", "--config", config)
    assert out.returncode == 1
    assert out.stderr.strip() == f"microfang: cannot reach the MQTT broker at 127.0.0.1:{port}"


def test_a_file_that_is_not_a_gateway_database_is_one_line(tmp_path):
    notdb = tmp_path / "notes.txt"
    notdb.write_text("hello\n" * 100)
    for command in (["status"], ["audit", "verify"]):
        out = microfang(*command, "--db", notdb)
        assert out.returncode == 1
        assert out.stderr.strip() == f"microfang: {notdb}: not a gateway database (file is not a database)"


def test_keys_add_refuses_a_name_that_cannot_be_a_topic_level(tmp_path):
    db = tmp_path / "gw.db"
    out = microfang("keys", "add", "kitchen/+", "--db", db)
    assert out.returncode == 1
    assert out.stderr.strip() == "microfang: device name 'kitchen/+': must be 1-32 of a-z 0-9 _ - starting with " \
                                 "a letter or digit"
    out = microfang("keys", "add", "kitchen", "--fleet", "Home Fleet", "--db", db)
    assert out.stderr.strip() == "microfang: fleet name 'Home Fleet': must be 1-32 of a-z 0-9 _ - starting with " \
                                 "a letter or digit"
