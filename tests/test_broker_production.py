"""The shipped broker configuration holds against device credentials: a real Mosquitto started
from docs/mosquitto/mosquitto.conf (its TLS listener, a throwaway CA, paths moved to the test's
folder), its passwd and acl written by `microfang broker` from the gateway's registry, the
gateway as its own process logged in as its broker user, boards logged in with the password
`microfang flash` gives them. Each attack is made with a real device's credential (b2's)."""

import asyncio
import json
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

import paho.mqtt.client as mqtt
import pytest
from boards_runtime import RunningBoard
from brokers import SHIPPED_CONF, Mosquitto, make_tls_files, production_config
from fleet import make_board, wait_until
from helpers import build_bundle
from test_fleet_durability import BURST, PERMS, REQUESTS, replies
from test_fleet_faults import connects, echoed

from microfang.broker import free_port
from microfang.brokerauth import GATEWAY_USER, device_password
from microfang.cli import main
from microfang.firmware.envelope import MAX_ENVELOPE
from microfang.gateway.store import Store

DEVICES = ("b1", "b2")
GATEWAY_PASSWORD = "gateway-s3cret"
SHIPPED_ACL = SHIPPED_CONF.with_name("acl")


class Production:
    """A broker from the shipped config with the registry's credentials, and what logs into it."""

    def __init__(self, folder, drop=()):
        self.folder = folder
        self.db = folder / "gw.db"
        store = Store(self.db)
        self.keys = {name: store.add_device(name, "test") for name in DEVICES}
        store.close()
        self.password_file = folder / "gateway.password"
        self.password_file.write_text(GATEWAY_PASSWORD + "\n", encoding="utf-8")
        self.password_file.chmod(0o600)
        etc = folder / "etc"
        (etc / "certs").mkdir(parents=True)
        assert main(["broker", "--out", str(etc), "--db", str(self.db), "--password-file", str(self.password_file)]) == 0
        self.ca, _, _ = make_tls_files(etc / "certs")
        self.broker = Mosquitto(etc)
        self.plain_port = free_port()
        self.broker.config = production_config(etc, self.broker.port, self.plain_port, drop)
        self.broker.start()
        self.port = self.broker.port

    def password(self, device):
        return device_password(self.keys[device])

    def client(self, user, password, client_id, on_message=None):
        """A paho client logged in over TLS (MQTT 3.1.1); returns it with the CONNACK's reason."""
        connacks = []
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id)
        client.username_pw_set(user, password)
        client.tls_set(ca_certs=str(self.ca))
        client.on_connect = lambda c, u, flags, reason, props: connacks.append(reason)
        if on_message is not None:
            client.on_message = on_message
        client.connect("127.0.0.1", self.port)
        client.loop_start()
        deadline = time.monotonic() + 10
        while not connacks and time.monotonic() < deadline:
            time.sleep(0.01)
        return client, connacks[0] if connacks else None

    def start_gateway(self, password_file=None):
        """The gateway process logged in as GATEWAY_USER, once it is up; its /healthz port."""
        http = free_port()
        proc = subprocess.Popen(
            [sys.executable, "-m", "microfang", "gateway", "--broker", f"mqtts://127.0.0.1:{self.port}", "--cafile",
             str(self.ca), "--user", GATEWAY_USER, "--password-file", str(password_file or self.password_file),
             "--db", str(self.db), "--http", str(http)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        return proc, http

    def board_config(self, device, **changes):
        """A board's config as `microfang flash` writes it (user, password), on the plain listener."""
        return {"device": device, "fleet": "test", "key": self.keys[device], "host": "127.0.0.1",
                "port": self.plain_port, "user": device, "password": self.password(device), "telemetry_ms": 500,
                **changes}

    def stop(self):
        self.broker.stop()


@pytest.fixture
def production(tmp_path):
    broker = Production(tmp_path)
    yield broker
    broker.stop()


def running_gateway(production):
    proc, http = production.start_gateway()
    line = proc.stdout.readline()
    assert line.startswith("gateway up"), (line, proc.stderr.read() if proc.poll() is not None else "")
    return proc, http


def stop(proc):
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=10)


def broker_connected(http):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{http}/healthz", timeout=5) as r:
            return json.load(r)["broker_connected"]
    except urllib.error.HTTPError as e:  # 503 while degraded: the same report
        return json.loads(e.read())["broker_connected"]


async def take_client_id(production, client_id, times=5):
    """b2's credential connects `times` times with `client_id` and stays a moment each time
    (what kicked the gateway off 5 of 5 times under the old config)."""
    accepted = 0
    for _ in range(times):
        client, reason = await asyncio.to_thread(production.client, "b2", production.password("b2"), client_id)
        accepted += reason is not None and not reason.is_failure
        await asyncio.sleep(0.3)
        client.disconnect()
        client.loop_stop()
    return accepted


def kicks_the_gateway(production, seconds=20):
    """While a board makes REQUESTS requests, b2's credential connects 5 times with the
    gateway's client id; /healthz is polled every 20 ms. Returns (replies the board got, polls
    that found the gateway disconnected, polls)."""
    gateway, http = running_gateway(production)

    async def scenario():
        board, _ = make_board("b1", production.keys["b1"], production.port, outbox_bytes=64 * 1024, tls=True,
                              cafile=str(production.ca), user="b1", password=production.password("b1"))
        board.spawn(build_bundle(BURST, **PERMS))
        run = asyncio.create_task(board.run(30_000))
        polls = []

        async def poll():
            while True:
                polls.append(await asyncio.to_thread(broker_connected, http))
                await asyncio.sleep(0.02)

        poller = asyncio.create_task(poll())
        await take_client_id(production, GATEWAY_USER)
        await wait_until(lambda: len(replies(board)) >= REQUESTS, seconds)
        poller.cancel()
        board.stop()
        await run
        return replies(board), polls

    try:
        got, polls = asyncio.run(scenario())
    finally:
        stop(gateway)
    return got, polls.count(False), len(polls)


def test_a_device_credential_with_the_gateways_client_id_does_not_disconnect_the_gateway(production):
    got, down, polls = kicks_the_gateway(production)
    print(f"{len(got)}/{REQUESTS} answered; gateway disconnected in {down} of {polls} polls")
    assert got == list(range(1, REQUESTS + 1)), got
    assert down == 0 and polls >= 10  # polled all through the attack (about 2 s; 24-58 polls seen)


def test_without_use_username_as_clientid_the_same_attack_kicks_the_gateway(tmp_path):
    """The defence the test above checks is that setting: without it the attack succeeds."""
    production = Production(tmp_path, drop=("use_username_as_clientid",))
    try:
        _, down, polls = kicks_the_gateway(production, seconds=1)
    finally:
        production.stop()
    print(f"without the setting: gateway disconnected in {down} of {polls} polls")
    assert down > 0, f"the gateway stayed connected in all {polls} polls"


@pytest.mark.parametrize("runtime", ["cpython", "micropython"])
def test_a_device_credential_cannot_take_another_devices_session(production, runtime, micropython, example_bundle):
    gateway, _ = running_gateway(production)

    async def scenario():
        board = await RunningBoard(runtime, production.board_config("b1"), production.folder,
                                   [example_bundle("echo")], micropython).start()
        try:
            assert await wait_until(lambda: len(echoed(board.lines())) >= 2, 30), board.lines()
            accepted = await take_client_id(production, "b1", times=3)
            before = len(echoed(board.lines()))
            answered = await wait_until(lambda: len(echoed(board.lines())) >= before + 2, 10)
        finally:
            lines = await board.stop()
        return accepted, answered, lines

    try:
        accepted, answered, lines = asyncio.run(scenario())
    finally:
        stop(gateway)
    assert accepted == 3  # b2 logs in, but as itself: the broker takes the user name as the client id
    assert answered and connects(lines) == 1, lines
    assert not any("disconnected" in ln for ln in lines), lines


def test_a_wrong_password_stops_the_gateway_with_one_line(production):
    wrong = production.folder / "wrong.password"
    wrong.write_text("not-the-password\n", encoding="utf-8")
    wrong.chmod(0o600)
    proc, _ = production.start_gateway(wrong)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 1 and out == ""
    # Mosquitto 2.0 answers a wrong password with "not authorized" (MQTT 3.1.1's 5, v5's 135).
    assert err.strip() == f"microfang: broker refused login: not authorized (user '{GATEWAY_USER}')"


@pytest.mark.parametrize("runtime", ["cpython", "micropython"])
def test_a_board_with_a_wrong_password_says_the_broker_refused_its_login(production, runtime, micropython):
    async def scenario():
        config = production.board_config("b1", password=production.password("b2"))
        board = await RunningBoard(runtime, config, production.folder, [], micropython).start()
        await wait_until(lambda: any("disconnected" in ln for ln in board.lines()), 10)
        return await board.stop()

    lines = asyncio.run(scenario())
    assert "[board] link disconnected: broker refused login: not authorized" in lines, lines
    assert connects(lines) == 0


def watch_all(production):
    """The gateway's credential subscribed to mf/#: (client, what it receives as (topic, payload, retain))."""
    seen = []
    client, reason = production.client(GATEWAY_USER, GATEWAY_PASSWORD, "watcher",
                                       lambda c, u, m: seen.append((m.topic, bytes(m.payload), m.retain)))
    assert reason is not None and not reason.is_failure, reason
    client.subscribe("mf/#", qos=1)
    return client, seen


def publish_and_mark(client, topic, payload, retain=False):
    """Publish at QoS 1 and wait for its PUBACK (the broker took or dropped it by then)."""
    client.publish(topic, payload, qos=1, retain=retain).wait_for_publish(10)


def test_a_device_cannot_publish_on_another_devices_topics_nor_its_presence(production):
    b1, _ = production.client("b1", production.password("b1"), "b1")
    publish_and_mark(b1, "mf/test/b1/status", b"online", retain=True)
    watcher, seen = watch_all(production)
    b2, _ = production.client("b2", production.password("b2"), "b2")
    for topic, payload, retain in (("mf/test/b1/status", b"offline", True), ("mf/test/b1/tele", b"x", False),
                                   ("mf/test/b1/up/echo", b"x", False), ("mf/test/b1/log/echo", b"x", False),
                                   ("mf/test/b1/down/echo", b"x", False), ("mf/test/b1/ctl", b"x", False)):
        publish_and_mark(b2, topic, payload, retain)
    publish_and_mark(b2, "mf/test/b2/tele", b"mine")  # its own: arrives after all of those
    assert wait_until_sync(lambda: ("mf/test/b2/tele", b"mine", False) in seen), seen
    assert [s for s in seen if s[0].startswith("mf/test/b1/")] == [("mf/test/b1/status", b"online", True)], seen
    for client in (b1, b2, watcher):
        client.disconnect()
        client.loop_stop()


def test_a_device_cannot_read_another_devices_down_and_ctl_topics(production):
    got = {"b1": [], "b2": []}
    readers = {}
    for name in got:
        readers[name], _ = production.client(name, production.password(name), name,
                                             lambda c, u, m, name=name: got[name].append(m.topic))
        readers[name].subscribe([("mf/test/b1/ctl", 1), ("mf/test/b1/down/#", 1)])
    time.sleep(0.3)  # the subscriptions are in place (a SUBACK each)
    gateway, _ = production.client(GATEWAY_USER, GATEWAY_PASSWORD, GATEWAY_USER)
    for topic in ("mf/test/b1/ctl", "mf/test/b1/down/echo"):
        publish_and_mark(gateway, topic, b"x")
    assert wait_until_sync(lambda: len(got["b1"]) == 2), got
    time.sleep(0.3)
    assert got["b2"] == [], got
    for client in (*readers.values(), gateway):
        client.disconnect()
        client.loop_stop()


def test_a_publish_over_message_size_limit_is_refused(production):
    watcher, seen = watch_all(production)
    b1, _ = production.client("b1", production.password("b1"), "b1")
    big = b"x" * (MAX_ENVELOPE + 1)
    publish_and_mark(b1, "mf/test/b1/tele", big)
    publish_and_mark(b1, "mf/test/b1/tele", b"small")
    assert wait_until_sync(lambda: any(p == b"small" for _, p, _ in seen)), seen
    assert [len(p) for _, p, _ in seen] == [5], "the over-limit publish was delivered"
    for client in (b1, watcher):
        client.disconnect()
        client.loop_stop()


def wait_until_sync(check, seconds=10.0):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.02)
    return False


def test_the_shipped_acl_is_what_microfang_broker_writes_for_the_default_gateway_user(production):
    assert (production.folder / "etc" / "acl").read_text(encoding="utf-8") == SHIPPED_ACL.read_text(encoding="utf-8")


def test_the_password_file_is_readable_by_its_owner_only(production):
    assert (production.folder / "etc" / "passwd").stat().st_mode & 0o777 == 0o600


def test_a_device_named_like_a_gateway_user_is_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("MICROFANG_BROKER_PASSWORD", GATEWAY_PASSWORD)
    store = Store(tmp_path / "gw.db")
    store.add_device("gw-a", "test")
    store.close()
    code = main(["broker", "--out", str(tmp_path / "etc"), "--db", str(tmp_path / "gw.db"), "--gateway-user", "gw-a"])
    assert code == 1 and not (tmp_path / "etc" / "passwd").exists()
    assert capsys.readouterr().err.strip() == (
        "microfang: device 'gw-a' has the name of a gateway user: its credential would be the gateway's "
        "(rename the device or the gateway user)")


def test_broker_without_a_gateway_password_names_where_to_give_one(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("MICROFANG_BROKER_PASSWORD", raising=False)
    Store(tmp_path / "gw.db").close()
    assert main(["broker", "--out", str(tmp_path / "etc"), "--db", str(tmp_path / "gw.db")]) == 1
    assert "no broker password for the gateway: give --password-file FILE" in capsys.readouterr().err
