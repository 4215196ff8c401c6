"""Every device is served in turn (gateway/batches.py): a quiet board's message waits for one
round, not for a flood's backlog. The backlog is real: all the flood's messages are in the
gateway's queues before the first batch runs, so the order of handling is what the queues decide
(a test over the wire passed only when the gateway happened to work slower than its intake).
Real store (SQLite), real batches; the handler records the order and the batch each message is
handled in, the acknowledgements are recorded as the broker would get them."""

import asyncio

from microfang.firmware import protocol
from microfang.gateway.batches import BATCH, Batches
from microfang.gateway.store import Store

FLOOD = 3000


def serve(tmp_path, arrivals):
    """Offer `arrivals` ([(device, n)] in broker order) to a gateway's batches before they run;
    return the handling order [(device, n)], each message's batch number, and the acks
    {mid: (batch number when acknowledged, whether a transaction was open then)}."""
    store = Store(tmp_path / "gw.db")
    handled, batch_of, acked = [], {}, []
    topics = {}

    async def scenario():
        batches = Batches(store, lambda topic, payload: handle(topic), lambda mid, qos: acked.append(
            (mid, (store.db.transactions, store.db.in_transaction))), lambda line: None, {"store_failures": 0, "batches": 0},
            lambda topic: protocol.parse_topic(topic)[1], lambda reason, topic, detail: None)

        def handle(topic):
            handled.append(topics[topic])
            batch_of[topics[topic]] = store.db.transactions

        for mid, (device, n) in enumerate(arrivals, 1):
            topic = f"mf/f/{device}/up/a{n}"
            topics[topic] = (device, n)
            batches.offer((topic, b"x", mid, 1))
        task = asyncio.create_task(batches.run())
        for _ in range(3000):  # a bound, not a figure: all is done in a few hundred milliseconds
            if len(acked) == len(arrivals):
                break
            await asyncio.sleep(0.01)
        task.cancel()

    asyncio.run(scenario())
    store.close()
    return handled, batch_of, dict(acked)


def test_a_quiet_boards_messages_are_handled_in_the_first_rounds_behind_a_flood_of_thousands(tmp_path):
    arrivals = [("noisy", n) for n in range(FLOOD)] + [("quiet", n) for n in range(3)]
    handled, _, _ = serve(tmp_path, arrivals)
    assert len(handled) == FLOOD + 3
    # One message per device per round: the quiet board's three are the 2nd, 4th and 6th.
    assert [handled.index(("quiet", n)) for n in range(3)] == [1, 3, 5]


def test_each_devices_messages_keep_their_order_while_devices_take_turns(tmp_path):
    arrivals = [("noisy", n) for n in range(500)] + [(f"b{k}", n) for n in range(4) for k in range(3)]
    handled, _, _ = serve(tmp_path, arrivals)
    for device in ("noisy", "b0", "b1", "b2"):
        mine = [n for d, n in handled if d == device]
        assert mine == sorted(mine), device
    first_round = handled[:4]
    assert sorted(first_round) == [("b0", 0), ("b1", 0), ("b2", 0), ("noisy", 0)]


def test_a_flood_is_handled_in_bounded_batches_each_acknowledged_after_its_commit(tmp_path):
    arrivals = [("noisy", n) for n in range(FLOOD)] + [("quiet", 0)]
    handled, batch_of, acked = serve(tmp_path, arrivals)
    sizes = {}
    for message in handled:
        sizes[batch_of[message]] = sizes.get(batch_of[message], 0) + 1
    assert len(sizes) > 1 and max(sizes.values()) <= BATCH  # the backlog is not one transaction
    assert batch_of[("quiet", 0)] == min(sizes)  # in the first batch
    # Acknowledged only once its batch committed: no transaction open, the one it was handled in done.
    for mid, message in enumerate(arrivals, 1):
        assert acked[mid] == (batch_of[message], False), (message, acked[mid], batch_of[message])


def test_a_bug_in_a_batchs_commit_holds_its_messages_unacknowledged_and_the_intake_goes_on(tmp_path):
    # A staged write that raises (not a store failure) at the first commit: the batch is
    # rolled back, nothing of it acknowledged, `problem` names the bug, and it is tried again.
    store = Store(tmp_path / "gw.db")
    failures = ["KeyError('dev9')"]
    acked, problems = [], []

    def flush(items):
        if failures:
            problems.append(failures.pop())
            raise KeyError("dev9")

    async def scenario():
        batches = Batches(store, lambda topic, payload: store.before_commit(flush, topic),
                          lambda mid, qos: acked.append((mid, batches.problem)), lambda line: None,
                          {"store_failures": 0, "batches": 0}, lambda topic: protocol.parse_topic(topic)[1],
                          lambda reason, topic, detail: None)
        for mid in range(1, 4):
            batches.offer((f"mf/f/dev{mid}/up/a1", b"x", mid, 1))
        task = asyncio.create_task(batches.run())
        for _ in range(500):  # a bound: the retry comes after RETRY_S[0]
            if len(acked) == 3:
                break
            await asyncio.sleep(0.01)
        problem_seen = batches.problem
        task.cancel()
        return problem_seen, batches.metrics["store_failures"]

    problem, store_failures = asyncio.run(scenario())
    store.close()
    assert problems == ["KeyError('dev9')"]
    assert sorted(mid for mid, _ in acked) == [1, 2, 3]  # all three, after the retry
    assert all(p is None for _, p in acked)  # none while the commit failed
    assert store_failures == 1 and problem is None
