"""Bad input at the gateway: each is dropped, counted in metrics, logged in one line, and the
gateway keeps serving. Real Mosquitto; the bad messages are published with paho."""

import asyncio
import socket

import paho.mqtt.client as mqtt
import pytest

from microfang.firmware import cbor, envelope
from microfang.gateway import Gateway

KEY = b"k" * 32


def publisher(port):
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="attacker")
    client.connect("127.0.0.1", port)
    client.socket().setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    client.loop_start()
    return client


def request(seq, agent="a1", key=KEY, dev="dev1", body=b"\x64ping", request_id=None):
    return envelope.seal(key, dev, seq, agent, "request",
                         {"id": seq if request_id is None else request_id, "kind": "echo", "body": body})


def message(seq, kind, body, agent="a1"):
    return envelope.seal(KEY, "dev1", seq, agent, kind, body)


async def run_gateway(port, tmp_path, messages):
    """Start a gateway with device dev1, publish (topic, payload) pairs, then a good request;
    return the gateway metrics once the good request has been answered."""
    async with Gateway(broker=f"mqtt://127.0.0.1:{port}", db=tmp_path / "gw.db", quiet=True) as gw:
        gw.add_device("dev1", fleet="f", key=KEY)
        client = publisher(port)
        for topic, payload in messages:
            client.publish(topic, payload, qos=1).wait_for_publish(5)
        client.publish("mf/f/dev1/up/a1", request(3001), qos=1).wait_for_publish(5)
        deadline = asyncio.get_running_loop().time() + 10
        while gw.metrics["replies"] < 1 and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.02)
        client.loop_stop()
        client.disconnect()
        assert gw.store.verify_audit()[1] is None  # the chain holds whatever was refused
        return dict(gw.metrics)


@pytest.mark.parametrize(
    ("name", "topic", "payload", "reason"),
    [
        ("malformed CBOR", "mf/f/dev1/up/a1", b"\xff\x00\x01garbage", "malformed"),
        ("truncated CBOR", "mf/f/dev1/up/a1", request(5)[:20], "malformed"),
        ("oversized CBOR", "mf/f/dev1/up/a1", cbor.dumps({"v": 1, "pad": b"x" * 20000}), "oversized"),
        ("unknown device", "mf/f/ghost/up/a1", request(5, dev="ghost"), "unknown-device"),
        ("device in the wrong fleet", "mf/other/dev1/up/a1", request(5), "unknown-device"),
        ("bad HMAC", "mf/f/dev1/up/a1", request(5, key=b"x" * 32), "forged"),
        ("another device's name in the envelope", "mf/f/dev1/up/a1", request(5, dev="dev2"), "unknown-device"),
        ("message for another agent", "mf/f/dev1/up/a2", request(5, agent="a1"), "unknown-agent"),
        ("agent name outside the scheme", "mf/f/dev1/up/Bad!Agent", request(5, agent="Bad!Agent"), "malformed"),
    ],
)
def test_bad_message_is_dropped_counted_and_the_gateway_keeps_serving(mosquitto, tmp_path, name, topic, payload,
                                                                        reason, capsys):
    metrics = asyncio.run(run_gateway(mosquitto.port, tmp_path, [(topic, payload)]))
    assert metrics[f"dropped_{reason}"] == 1, (name, metrics)
    assert metrics["replies"] == 1  # the good request after it was answered


@pytest.mark.parametrize(
    ("name", "channel", "payload"),
    [
        ("request body an integer (would become that many zero bytes)", "up/a1", request(5, body=100_000_000)),
        ("request id 2^63 (overflows the database)", "up/a1", request(5, request_id=1 << 63)),
        ("request id as text", "up/a1", request(5, request_id="7")),
        ("negative request id", "up/a1", request(5, request_id=-1)),
        ("request kind missing", "up/a1", message(5, "request", {"id": 5, "body": b"\xf6"})),
        ("request not a map", "up/a1", message(5, "request", [1, 2])),
        ("sequence 2^32", "up/a1", request(1 << 32)),
        ("telemetry as a list", "tele", message(5, "tele", [1, 2, 3])),
        ("telemetry agents as a list", "tele", message(5, "tele", {"agents": [1]})),
        ("telemetry agent fuel as text", "tele", message(5, "tele", {"agents": {"a1": {"fuel_used": "lots"}}})),
        ("telemetry link count as text", "tele", message(5, "tele", {"agents": {}, "link": {"dropped_no_memory": "x"}})),
        ("telemetry free heap negative", "tele", message(5, "tele", {"agents": {}, "free_heap": -1})),
        ("log records not pairs", "log/a1", message(5, "log", [[1]])),
        ("log payload an integer", "log/a1", message(5, "log", [[1, 100_000_000]])),
        ("log seq 2^32", "log/a1", message(5, "log", [[1 << 32, b"x"]])),
        ("agent version as text", "up/a1", message(5, "agent", {"version": "1", "budgets": {}})),
        ("publish data an integer", "up/a1", message(5, "publish", {"topic": "t", "data": 10**9})),
    ],
)
def test_out_of_shape_field_is_dropped_as_malformed_and_the_gateway_keeps_serving(mosquitto, tmp_path, name,
                                                                                   channel, payload):
    metrics = asyncio.run(run_gateway(mosquitto.port, tmp_path, [(f"mf/f/dev1/{channel}", payload)]))
    assert metrics["dropped_malformed"] == 1, (name, metrics)
    assert metrics["dropped_error"] == 0, (name, metrics)
    assert metrics["replies"] == 1  # the good request after it (seq 3001): the board is not shut out
    assert (tmp_path / "gw.db").stat().st_size < 1_000_000


def test_replayed_sequence_is_dropped(mosquitto, tmp_path):
    # An exact replay of 7 and a message from far behind the replay window are dropped; 6,
    # late but never seen (reordering), is accepted.
    first = request(7)
    metrics = asyncio.run(run_gateway(mosquitto.port, tmp_path, [("mf/f/dev1/up/a1", first),
                                                                  ("mf/f/dev1/up/a1", first),
                                                                  ("mf/f/dev1/up/a1", request(6)),
                                                                  ("mf/f/dev1/up/a1", request(3000)),
                                                                  ("mf/f/dev1/up/a1", request(8))]))
    assert metrics["dropped_replay"] == 2
    assert metrics["requests"] == 4  # 7, 6, 3000 and the final good one


def test_drop_is_logged_in_one_line(mosquitto, tmp_path, capsys):
    async def scenario():
        async with Gateway(broker=f"mqtt://127.0.0.1:{mosquitto.port}", db=tmp_path / "gw.db") as gw:
            gw.add_device("dev1", fleet="f", key=KEY)
            gw.handle("mf/f/dev1/up/a1", request(3, key=b"y" * 32))

    asyncio.run(scenario())
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["[gateway] dropped forged: mf/f/dev1/up/a1: bad HMAC from device 'dev1'"]


def test_status_survives_telemetry_of_any_shape_in_an_older_database(tmp_path):
    # A database written before telemetry was checked may hold a board's list "telemetry".
    from microfang import ops
    from microfang.gateway.store import Store

    store = Store(tmp_path / "gw.db")
    for device in ("good", "bad"):
        store.add_device(device, "f")
    store.db.execute("INSERT INTO telemetry (device, ts, body) VALUES ('bad', 0, '[1, 2, 3]')")
    store.add_telemetry("good", {"agents": {"a1": {"state": "running", "fuel_used": 5, "events": 2, "traps": 0}}})
    store.close()
    rows = {r["device"]: r for r in ops.fleet_status(tmp_path / "gw.db")}
    assert (rows["bad"]["agents"], rows["good"]["agents"], rows["good"]["fuel_used"]) == (0, 1, 5)


def test_an_agents_replica_keeps_its_newest_records_within_its_quota(tmp_path):
    from microfang.gateway.store import REPLICA_BYTES, Store

    store = Store(tmp_path / "gw.db")
    store.add_device("dev1", "f")
    for first in range(1, 601, 100):  # 600 KB offered in batches
        held = store.replicate("dev1", "a1", [(s, bytes(1000)) for s in range(first, first + 100)])
    kept = store.replica("dev1", "a1")
    assert held == 600 and kept[-1][0] == 600
    assert REPLICA_BYTES - 1000 <= sum(len(p) for _, p in kept) <= REPLICA_BYTES
    assert [s for s, _ in kept] == list(range(kept[0][0], 601))  # the oldest went, nothing in between


def test_a_board_announcing_too_many_agents_is_refused_over_quota(mosquitto, tmp_path):
    from microfang.gateway.store import AGENTS_MAX

    spawned = [("mf/f/dev1/up/" + f"x{i}", message(10 + i, "agent", {"version": 1, "budgets": {}}, agent=f"x{i}"))
               for i in range(AGENTS_MAX + 3)]
    metrics = asyncio.run(run_gateway(mosquitto.port, tmp_path, spawned))
    assert metrics["dropped_over-quota"] == 3


def test_oversized_telemetry_is_refused_over_quota(mosquitto, tmp_path):
    bulky = message(5, "tele", {"agents": {}, "note": "x" * 12_000})
    metrics = asyncio.run(run_gateway(mosquitto.port, tmp_path, [("mf/f/dev1/tele", bulky)]))
    assert metrics["dropped_over-quota"] == 1 and metrics["telemetry"] == 0
