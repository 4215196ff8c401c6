"""Presence is believed only when the device's own signed messages agree (gateway/presence.py):
a status claim ("online", "offline": unauthenticated, retained) changes nothing by itself.
Unit-level against the real Store with a clock the test moves; then end to end, forged
retained status against a real gateway, Mosquitto and board."""

import asyncio
import time

import paho.mqtt.client as mqtt
import pytest
from fleet import make_board, wait_until

from microfang.gateway import Gateway
from microfang.gateway.presence import SILENCE_CHECK_S, Presence
from microfang.gateway.store import Store

GRACE_S = 10.0


@pytest.fixture
def presence(tmp_path, request):
    """(Presence, the registry's records, the clock's [now]) over a store with device b1, offline:
    SQLite, or PostgreSQL when parametrized so (indirect)."""
    engine = getattr(request, "param", "sqlite")
    store = Store(tmp_path / "gw.db" if engine == "sqlite" else request.getfixturevalue("pg_store"))
    store.add_device("b1", "test")
    records = store.devices()
    now = [time.time()]
    yield Presence(store, lambda: records, {"presence": 0}, GRACE_S, lambda: now[0]), records, now
    store.close()


def stored_online(presence):
    return presence.store.device("b1")["online"]


def test_an_online_claim_alone_leaves_a_device_offline(presence):
    p, records, _ = presence
    p.claim("b1", records["b1"], True)
    assert not records["b1"]["online"] and not stored_online(p)


def test_a_verified_message_puts_a_device_online(presence):
    p, records, _ = presence
    p.heard("b1", records["b1"])
    assert records["b1"]["online"] and stored_online(p)


def test_an_offline_claim_is_not_believed_before_the_grace_passes(presence):
    p, records, now = presence
    p.heard("b1", records["b1"])
    p.claim("b1", records["b1"], False)
    now[0] += GRACE_S - 1
    p.expire()
    assert records["b1"]["online"] and stored_online(p)


def test_an_offline_claim_nothing_disproves_is_believed_after_the_grace(presence):
    p, records, now = presence
    p.heard("b1", records["b1"])
    p.claim("b1", records["b1"], False)
    now[0] += GRACE_S
    p.expire()
    assert not records["b1"]["online"] and not stored_online(p)


def test_an_offline_claim_followed_by_a_verified_message_changes_nothing(presence):
    p, records, now = presence
    p.heard("b1", records["b1"])
    p.claim("b1", records["b1"], False)
    p.heard("b1", records["b1"])
    now[0] += GRACE_S
    p.expire()
    assert records["b1"]["online"] and stored_online(p) and p.unconfirmed == 0


def test_a_message_another_gateway_verified_disproves_an_offline_claim(presence):
    """Gateways on one store each get a share of the messages: the store's last_seen counts."""
    p, records, now = presence
    p.heard("b1", records["b1"])
    p.claim("b1", records["b1"], False)
    p.store.save_window("b1", records["b1"]["window"])  # what the other gateway writes for a verified message
    now[0] += GRACE_S
    p.expire()
    assert records["b1"]["online"] and stored_online(p)


def forge_status(port, device, payload):
    """Anyone the broker lets write mf/test/DEVICE/status: here an anonymous client, retained."""
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="forger")
    client.connect("127.0.0.1", port)
    client.loop_start()
    client.publish(f"mf/test/{device}/status", payload, qos=1, retain=True).wait_for_publish(10)
    client.disconnect()
    client.loop_stop()


def test_a_forged_retained_online_leaves_an_absent_board_offline(mosquitto, tmp_path):
    async def scenario():
        async with Gateway(broker=f"mqtt://127.0.0.1:{mosquitto.port}", db=tmp_path / "gw.db", quiet=True) as gw:
            gw.add_device("b1", fleet="test")
            await asyncio.to_thread(forge_status, mosquitto.port, "b1", b"online")
            claimed = await wait_until(lambda: gw.metrics["presence"] >= 1)
            await asyncio.sleep(0.5)
            return claimed, gw.devices["b1"]["online"], gw.store.device("b1")["online"], gw.health()["online"]

    claimed, online, stored, counted = asyncio.run(scenario())
    assert claimed and (online, stored, counted) == (False, False, 0)


def test_a_forged_offline_leaves_a_talking_board_online(mosquitto, tmp_path):
    async def scenario():
        async with Gateway(broker=f"mqtt://127.0.0.1:{mosquitto.port}", db=tmp_path / "gw.db", quiet=True) as gw:
            gw.presence.grace_s = 1.0  # the board sends telemetry every 200 ms
            board, _ = make_board("b1", gw.add_device("b1", fleet="test"), mosquitto.port)
            run = asyncio.create_task(board.run(20_000))
            online = await wait_until(lambda: gw.devices["b1"].get("online"))
            await asyncio.to_thread(forge_status, mosquitto.port, "b1", b"offline")
            await wait_until(lambda: gw.metrics["presence"] >= 2)
            await asyncio.sleep(3 * gw.presence.grace_s)
            still = gw.devices["b1"]["online"], gw.store.device("b1")["online"]
            board.stop()
            await run
            return online, still

    online, still = asyncio.run(scenario())
    assert online and still == (True, True)


def test_a_board_that_stopped_is_offline_once_the_grace_passes(mosquitto, tmp_path):
    async def scenario():
        async with Gateway(broker=f"mqtt://127.0.0.1:{mosquitto.port}", db=tmp_path / "gw.db", quiet=True) as gw:
            gw.presence.grace_s = 1.0
            board, _ = make_board("b1", gw.add_device("b1", fleet="test"), mosquitto.port)
            run = asyncio.create_task(board.run(20_000))
            online = await wait_until(lambda: gw.devices["b1"].get("online"))
            board.stop()  # says "offline" itself on a clean stop
            await run
            offline = await wait_until(lambda: not gw.devices["b1"]["online"], 5)
            return online, offline, gw.store.device("b1")["online"]

    assert asyncio.run(scenario()) == (True, True, False)


SILENCE_S = 60.0


def heard_at(store, device, when):
    """What a gateway writes for a verified message from `device` at `when` (store.save_window)."""
    store.db.execute("UPDATE devices SET last_seen = ? WHERE id = ?", (when, device))


def test_a_board_silent_for_the_silence_is_offline(presence):
    """No last will reached the gateway (a broker restarted, the gateway was down): silence alone."""
    p, records, now = presence
    p.heard("b1", records["b1"])
    heard_at(p.store, "b1", now[0])
    now[0] += SILENCE_S + 1
    with p.store.transaction():
        p.expire()
    assert (records["b1"]["online"], stored_online(p)) == (False, False)


def test_a_board_heard_within_the_silence_stays_online(presence):
    p, records, now = presence
    p.heard("b1", records["b1"])
    heard_at(p.store, "b1", now[0])
    now[0] += SILENCE_S - 1
    with p.store.transaction():
        p.expire()
    assert (records["b1"]["online"], stored_online(p)) == (True, True)


def test_a_board_another_gateway_hears_is_not_silent(presence):
    """Gateways on one store each hear a share of the boards: the store's last_seen counts."""
    p, records, now = presence
    p.heard("b1", records["b1"])
    now[0] += SILENCE_S + 1
    heard_at(p.store, "b1", now[0] - 1)  # the other gateway, a second ago
    with p.store.transaction():
        p.expire()
    assert (records["b1"]["online"], stored_online(p)) == (True, True)


def test_a_board_heard_here_but_not_yet_committed_is_not_silent(presence):
    """last_seen is written when the transaction commits: a message of this one counts already."""
    p, records, now = presence
    heard_at(p.store, "b1", now[0])
    now[0] += SILENCE_S + 1
    with p.store.transaction():
        p.heard("b1", records["b1"])
        p.expire()
    assert (records["b1"]["online"], stored_online(p)) == (True, True)


@pytest.mark.parametrize("presence", ["sqlite", "postgresql"], indirect=True)
def test_a_board_another_gateway_heard_is_online_here(presence):
    """The shared subscription may hand this gateway none of a board's messages (two boards'
    telemetry alternating between two gateways: each hears one board): what another gateway
    on the store verified puts the board online here too (job retries wait for online)."""
    p, records, now = presence
    p.store.set_presence("b1", True)  # what the other gateway writes for a verified message
    heard_at(p.store, "b1", now[0])
    now[0] += SILENCE_CHECK_S
    with p.store.transaction():
        p.expire()
    assert records["b1"]["online"]


def test_a_board_the_store_calls_online_but_nobody_heard_within_the_silence_stays_offline(presence):
    p, records, now = presence
    p.store.set_presence("b1", True)
    heard_at(p.store, "b1", now[0] - SILENCE_S - 1)
    now[0] += SILENCE_CHECK_S
    with p.store.transaction():
        p.expire()
    assert (records["b1"]["online"], stored_online(p)) == (False, False)


def test_a_silent_board_left_online_by_a_gateway_that_died_is_offline_after_the_next_start(mosquitto, tmp_path):
    """The store says online (its gateway stopped before the board's last will came): the next
    gateway believes the silence, with no board and no status message at all."""
    store = Store(tmp_path / "gw.db")
    store.add_device("b1", "test")
    store.set_presence("b1", True)
    heard_at(store, "b1", time.time() - 2)
    store.close()

    async def scenario():
        async with Gateway(broker=f"mqtt://127.0.0.1:{mosquitto.port}", db=tmp_path / "gw.db", quiet=True) as gw:
            gw.presence.silence_s = 1.0
            before = gw.devices["b1"]["online"]
            offline = await wait_until(lambda: not gw.devices["b1"]["online"], 10)
            return before, offline, gw.store.device("b1")["online"]

    assert asyncio.run(scenario()) == (True, True, False)


def test_status_does_not_call_a_board_online_its_gateway_stopped_hearing(tmp_path):
    """`microfang status` with no gateway running: a board last heard long ago is not online."""
    from microfang.ops import fleet_status, registered_devices

    store = Store(tmp_path / "gw.db")
    store.add_device("b1", "test")
    store.add_device("b2", "test")
    store.set_presence("b1", True)
    store.set_presence("b2", True)
    heard_at(store, "b1", time.time() - SILENCE_S - 5)
    heard_at(store, "b2", time.time())
    store.close()
    rows = fleet_status(tmp_path / "gw.db")
    assert [(r["device"], r["online"]) for r in rows] == [("b1", False), ("b2", True)]
    assert [(r["device"], r["online"]) for r in registered_devices(tmp_path / "gw.db")] == [("b1", False), ("b2", True)]


def test_the_gateways_offline_after_setting_is_the_silence_it_believes(mosquitto, tmp_path):
    from microfang.config import GatewaySettings
    from microfang.gateway.services import open_gateway

    async def scenario():
        settings = GatewaySettings(broker=f"mqtt://127.0.0.1:{mosquitto.port}", db=tmp_path / "gw.db", http=0,
                                   memory="none", offline_after=7.5)
        async with open_gateway(settings, quiet=True) as (gw, _):
            return gw.presence.silence_s

    assert asyncio.run(scenario()) == 7.5
