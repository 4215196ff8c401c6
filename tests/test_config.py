"""Gateway settings, merged in one place (microfang.config.gateway_settings): a flag beats the
TOML file, the file beats the environment, the environment beats the default."""

from pathlib import Path

import pytest

from microfang.config import GatewaySettings, gateway_settings, parse_broker
from microfang.firmware.errors import MicrofangError


def config(tmp_path, text):
    path = tmp_path / "gateway.toml"
    path.write_text(text)
    return path


def test_with_nothing_given_the_command_defaults_apply():
    s = gateway_settings(None, {}, env={})
    assert (s.broker, s.db, s.http, s.rate, s.llm, s.memory) == ("mqtt://127.0.0.1:1883", Path("gateway.db"), 8077,
                                                                   50.0, "none", "auto")


def test_a_flag_beats_the_file_and_the_file_beats_the_environment(tmp_path):
    path = config(tmp_path, '[llm]\nurl = "http://file:1/v1"\nmodel = "from-file"\n[limits]\nrate = 5\n')
    env = {"MICROFANG_LLM_URL": "http://env:1/v1", "MICROFANG_LLM_MODEL": "from-env"}
    s = gateway_settings(path, {"llm_model": "from-flag", "rate": None}, env=env)
    assert (s.llm_url, s.llm_model, s.rate) == ("http://file:1/v1", "from-flag", 5.0)
    assert gateway_settings(None, {}, env=env).llm_url == "http://env:1/v1"


def test_the_gateway_store_is_a_postgresql_url_from_the_file_or_else_the_sqlite_db(tmp_path):
    path = config(tmp_path, '[gateway]\nstore = "postgresql://gw@db:5432/microfang"\nname = "gw-a"\n')
    s = gateway_settings(path, {}, env={})
    assert (s.where, s.name) == ("postgresql://gw@db:5432/microfang", "gw-a")
    assert gateway_settings(None, {"db": "x.db"}, env={}).where == "x.db"


def test_secrets_come_from_the_environment_variables_the_file_names(tmp_path):
    path = config(tmp_path, '[broker]\npassword_env = "GW_PASS"\n[llm]\nkey_env = "GW_KEY"\n')
    s = gateway_settings(path, {}, env={"GW_PASS": "hunter22", "GW_KEY": "sk-1", "MICROFANG_LLM_KEY": "sk-2"})
    assert (s.password, s.llm_key) == ("hunter22", "sk-1")
    assert gateway_settings(None, {}, env={"MICROFANG_LLM_KEY": "sk-2"}).llm_key == "sk-2"


def test_the_broker_password_comes_from_the_file_the_config_names_unless_a_flag_gives_one(tmp_path):
    secret = tmp_path / "broker.password"
    secret.write_text("s3cret\n")
    secret.chmod(0o600)
    path = config(tmp_path, f'[broker]\nuser = "gw-a"\npassword_file = "{secret}"\n')
    s = gateway_settings(path, {}, env={})
    assert (s.user, s.password) == ("gw-a", "s3cret")
    assert gateway_settings(path, {"password": "from-flag"}, env={}).password == "from-flag"


def test_a_broker_password_file_others_can_read_is_refused(tmp_path):
    secret = tmp_path / "broker.password"
    secret.write_text("s3cret\n")
    secret.chmod(0o644)
    with pytest.raises(MicrofangError, match=r"\[broker\] password_file: .* is readable by others \(mode 644\)"):
        gateway_settings(config(tmp_path, f'[broker]\npassword_file = "{secret}"\n'), {}, env={})


def test_named_tables_pass_through_and_paths_become_paths(tmp_path):
    path = config(tmp_path, '[gateway]\ndb = "/var/gw.db"\n[mcp_servers.parts]\ncommand = ["x"]\n[a2a]\nport = 8078\n')
    s = gateway_settings(path, {}, env={})
    assert s.db == Path("/var/gw.db") and s.memory_store == "/var/gw-memory.db"
    assert s.mcp_servers == {"parts": {"command": ["x"]}} and s.a2a == {"port": 8078}


def test_a_bad_field_in_the_file_is_one_error_naming_it(tmp_path):
    with pytest.raises(MicrofangError, match=r"gateway.toml: limits.rate: wrong type str$"):
        gateway_settings(config(tmp_path, '[limits]\nrate = "fast"\n'), {}, env={})


def test_a_bare_gateway_turns_nothing_on():
    s = GatewaySettings()
    assert (s.llm, s.memory, s.mcp_servers, s.a2a) == ("none", "none", {}, {})


@pytest.mark.parametrize("url, expected", [("mqtt://gw.lan", ("gw.lan", 1883, False)),
                                           ("mqtts://gw.lan", ("gw.lan", 8883, True)),
                                           ("gw.lan:1884", ("gw.lan", 1884, False))])
def test_broker_urls_give_host_port_and_tls(url, expected):
    assert parse_broker(url) == expected


def test_the_composition_root_builds_the_gateway_with_the_plugins_the_settings_turn_on(mosquitto, tmp_path):
    import asyncio

    from microfang.gateway.services import open_gateway

    async def scenario(settings):
        async with open_gateway(settings, quiet=True) as (gw, summary):
            return sorted(gw.router.handlers), summary, gw.health()

    bare = GatewaySettings(broker=f"mqtt://127.0.0.1:{mosquitto.port}", db=tmp_path / "gw.db", http=0)
    kinds, summary, health = asyncio.run(scenario(bare))
    assert (kinds, summary) == (["echo", "ping"], []) and "memory" not in health
    with_memory = GatewaySettings(broker=bare.broker, db=bare.db, http=0, memory="minilm")
    kinds, summary, health = asyncio.run(scenario(with_memory))
    assert kinds == ["echo", "mem.put", "mem.search", "ping"]
    assert summary == [f"memory minilm ({tmp_path / 'gw-memory.db'})"]
    assert health["memory"] == {"embedder": "minilm", "episodic_indexed": 0}


@pytest.mark.parametrize("value", ["0", "-5", "nan", "inf"])
def test_an_offline_after_that_is_not_a_positive_number_is_refused_naming_it(tmp_path, value):
    with pytest.raises(MicrofangError, match="offline-after: .* is not a positive number of seconds"):
        gateway_settings(config(tmp_path, f"[gateway]\noffline_after = {value}\n"), {}, env={})


def test_an_offline_after_flag_that_is_not_a_positive_number_is_refused():
    with pytest.raises(MicrofangError, match="offline-after: -1.0 is not a positive number of seconds"):
        gateway_settings(None, {"offline_after": -1.0}, env={})


def test_offline_after_comes_from_the_flag_else_the_file(tmp_path):
    path = config(tmp_path, "[gateway]\noffline_after = 90\n")
    assert gateway_settings(path, {}, env={}).offline_after == 90.0
    assert gateway_settings(path, {"offline_after": 5}, env={}).offline_after == 5.0
    assert gateway_settings(None, {}, env={}).offline_after == 60.0
