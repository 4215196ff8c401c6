"""Requests over their rate limit refused before their HMAC is checked (gateway/overlimit.py)
open no replay hole: each batch fences the numbers it refused unverified into the device's replay
window, bounded by one that verifies, before anything is acknowledged. A board on the wire
(tests/wireboard.py) floods a real gateway on a real Mosquitto; then every one of its messages
is published again, to the same gateway with the limit lifted, or to a gateway started anew."""

import asyncio

from fleet import wait_until
from wireboard import KEY, WireBoard

from microfang.firmware import cbor, envelope, protocol
from microfang.gateway import Gateway, RateLimiter, Router
from microfang.gateway.store import Store

FLOOD = 1500
TOPIC = "mf/f/dev1/up/a1"


def request(n, key=KEY):
    return envelope.seal(key, "dev1", n, "a1", protocol.K_REQUEST, {"id": n, "kind": "echo", "body": cbor.dumps(n)})


def flood_then_replay(port, db, restart, forged=()):
    """Flood FLOOD requests (those numbered in `forged` with a wrong key) at a limit of one
    request, then publish every one again, all genuine, once the limit allows thousands a
    second. Returns the first gateway's metrics, the replays the replaying gateway dropped, the
    ids answered ok, the audit's actions and its check."""
    board_ok = {}

    async def publish_all(board, gw, counter, want, forge=()):
        for n in range(1, FLOOD + 1):
            board.client.publish(TOPIC, request(n, b"f" * 32 if n in forge else KEY), qos=1)
        assert await wait_until(lambda: gw.metrics[counter] >= want, 60), (counter, gw.metrics)

    async def scenario():
        board = WireBoard(port)
        try:
            async with Gateway(broker=f"mqtt://127.0.0.1:{port}", db=db, quiet=True,
                               router=Router(limiter=RateLimiter(rate=0.001, burst=1))) as gw:
                gw.add_device("dev1", "f", KEY)
                await publish_all(board, gw, "messages", FLOOD, forged)
                first = dict(gw.metrics)
                if not restart:
                    gw.router.set_limits("dev1", "a1", {"requests_per_s": 1_000_000})
                    await publish_all(board, gw, "messages", 2 * FLOOD)
                    replays = gw.metrics["dropped_replay"]
                    await wait_until(lambda: len(board.ok) >= gw.metrics["replies"])
            if restart:
                async with Gateway(broker=f"mqtt://127.0.0.1:{port}", db=db, quiet=True,
                                   router=Router(limiter=RateLimiter(rate=1e6, burst=10**6))) as gw:
                    await publish_all(board, gw, "messages", FLOOD)
                    replays = gw.metrics["dropped_replay"]
                    await wait_until(lambda: len(board.ok) >= gw.metrics["replies"])
            board_ok.update(board.ok)
        finally:
            board.stop()
        return first, replays

    first, replays = asyncio.run(scenario())
    store = Store(db)
    actions = [r[0] for r in store.db.execute("SELECT action FROM audit ORDER BY n")]
    chain = store.verify_audit()
    store.close()
    return first, replays, sorted(n for n, ok in board_ok.items() if ok), actions, chain


def test_requests_refused_unverified_cannot_run_when_published_again(mosquitto, tmp_path):
    first, replays, answered_ok, actions, chain = flood_then_replay(mosquitto.port, tmp_path / "gw.db", False)
    assert first["refused_unverified"] > 0 and first["fenced"] > 0  # the cheap path was taken
    assert replays == FLOOD  # every copy dropped as a replay, those refused unverified too
    assert answered_ok == [1]  # only the one request the limit allowed ever ran
    assert actions.count("request") == 1
    assert chain[1] is None


def test_requests_refused_unverified_cannot_run_after_the_gateway_restarts(mosquitto, tmp_path):
    first, replays, answered_ok, actions, _ = flood_then_replay(mosquitto.port, tmp_path / "gw.db", True)
    assert first["refused_unverified"] > 0
    assert replays == FLOOD  # the fences were committed with the refusals
    assert answered_ok == [1]
    assert actions.count("request") == 1


def test_forged_requests_in_a_flood_take_no_number_from_the_board(mosquitto, tmp_path):
    """Forged requests claiming the board's next numbers, refused unverified within a flood,
    fence nothing: the board's own requests with those numbers run afterwards."""
    forged = set(range(FLOOD - 199, FLOOD + 1))  # the flood's highest numbers, with a wrong HMAC
    first, replays, answered_ok, _, _ = flood_then_replay(mosquitto.port, tmp_path / "gw.db", False, forged)
    assert first["refused_unverified"] > 0 and first["fenced"] > 0
    assert replays == FLOOD - len(forged)  # the genuine ones of the flood, all fenced
    assert answered_ok == [1, *sorted(forged)]
