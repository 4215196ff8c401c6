"""Fair, cheap refusals (issue 17 item 6): limits come only from the manifests the host
registered, and a request refused at intake costs an error reply (its row kept only until the
broker has it), not audit records of its own. A board on the wire is a paho client sending signed requests
(tests/wireboard.py) to a real gateway on a real Mosquitto."""

import asyncio
import json
import time

from fleet import wait_until
from wireboard import KEY, WireBoard

from microfang.firmware import envelope, protocol
from microfang.gateway import Gateway, RateLimiter, Router
from microfang.gateway.store import Store

FLOOD = 3000


def flood(port, db, limiter, announced, count=FLOOD):
    """A board that announces `announced` budgets for its agent a1 (no manifest registered) and
    sends `count` requests as fast as it can. Returns (replies ok, error replies, seconds until
    the gateway had them all, the gateway's audit records, request rows left)."""

    async def scenario():
        async with Gateway(broker=f"mqtt://127.0.0.1:{port}", db=db, router=Router(limiter=limiter),
                           quiet=True) as gw:
            gw.add_device("dev1", "f", KEY)
            board = WireBoard(port)
            try:
                board.client.publish("mf/f/dev1/up/a1", envelope.seal(KEY, "dev1", 1, "a1", protocol.K_AGENT, {
                    "version": 1, "budgets": announced}), qos=1)
                start = time.monotonic()
                board.send(2, count)
                deadline = start + 60
                while gw.metrics["requests"] < count and time.monotonic() < deadline:
                    await asyncio.sleep(0.02)
                took = time.monotonic() - start
                await wait_until(lambda: len(board.ok) >= gw.metrics["replies"])  # the replies on their way
            finally:
                board.stop()
            ok = sum(1 for v in board.ok.values() if v)
        store = Store(db)  # the last second's refusals are audited as the gateway stops, at the latest
        audit = [dict(zip(("action", "detail"), row)) for row in
                 store.db.execute("SELECT action, detail FROM audit ORDER BY n")]
        requests_left = store.db.execute("SELECT count(*) FROM requests").fetchone()[0]
        store.close()
        return ok, len(board.ok) - ok, took, audit, requests_left

    return asyncio.run(scenario())


def test_an_agent_without_a_registered_manifest_cannot_lift_its_own_rate_limit(mosquitto, tmp_path):
    """The attack from issue 17: announcing requests_per_s = 100000 at spawn let 3000/3000 through."""
    ok, _, took, audit, _ = flood(mosquitto.port, tmp_path / "gw.db", RateLimiter(rate=50, burst=100),
                                  {"requests_per_s": 100000})
    assert ok <= 100 + 50 * took + 10, (ok, took)  # the gateway's own limit: a burst of 100 at 50/s
    spawned = [json.loads(r["detail"]) for r in audit if r["action"] == "spawned"]
    assert spawned == [{"version": 1, "budgets": {"requests_per_s": 100000}, "registered": None}]


def test_a_flood_of_refused_requests_writes_a_few_audit_records_a_second(mosquitto, tmp_path):
    ok, errors, took, audit, requests_left = flood(mosquitto.port, tmp_path / "gw.db",
                                                   RateLimiter(rate=0.001, burst=1), {})
    assert ok == 1
    records = [json.loads(r["detail"]) for r in audit if r["action"] == "request refused"]
    assert len(records) <= took + 3, (len(records), took)  # O(1) a second, not one per refused request
    assert sum(r["count"] for r in records) == FLOOD - 1
    assert {r["reason"] for r in records} == {"rate limited: too many requests from this agent"}
    # Error replies: a burst of 100 and 100 a second, the rest counted as unanswered.
    assert errors == FLOOD - 1 - sum(r["unanswered"] for r in records)
    assert 100 <= errors <= 100 + 100 * took + 10, (errors, took)
    assert [r["action"] for r in audit].count("request") == 1  # only the admitted request is stored
    assert requests_left == 0


def test_budgets_a_board_announced_to_an_older_gateway_are_not_applied_at_start(mosquitto, tmp_path):
    store = Store(tmp_path / "gw.db")
    store.add_device("dev1", "f", KEY)
    store.set_agent("dev1", "a1", 1, {"requests_per_s": 100000})  # what a gateway before the fix stored
    store.close()

    async def scenario():
        async with Gateway(broker=f"mqtt://127.0.0.1:{mosquitto.port}", db=tmp_path / "gw.db", quiet=True) as gw:
            return dict(gw.router.limiter.rates)

    assert asyncio.run(scenario()) == {}
