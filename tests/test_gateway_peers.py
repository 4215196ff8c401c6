"""Gateways sharing a PostgreSQL store: names are exclusive while their gateway runs, and the
requests of a gateway gone silent are adopted by another (peers.py)."""

import time

import pytest

from microfang.firmware.errors import MicrofangError
from microfang.gateway import peers
from microfang.gateway.peers import Peers
from microfang.gateway.store import Store


def pending(store, owner, ids):
    for i in ids:
        store.add_request("b1", "a1", i, "echo", b"\xf6", owner)


def test_a_name_is_refused_while_its_gateway_runs_and_free_once_it_is_gone(pg_store):
    first, second = Store(pg_store), Store(pg_store)
    Peers(first, "gw-a").join()
    with pytest.raises(MicrofangError, match=r"^gateway name 'gw-a': already running \(pid \d+ on .*\) on this "
                                             r"store; give each gateway its own --name$"):
        Peers(second, "gw-a").join()
    first.close()  # as a kill -9 does: the connection goes, and the name with it
    Peers(second, "gw-a").join()
    second.close()


def test_the_requests_of_a_silent_gateway_are_adopted_and_a_live_ones_are_not(pg_store):
    store = Store(pg_store)
    store.add_device("b1", "f")
    a, b = Peers(store, "gw-a"), Peers(store, "gw-b")
    a.join()
    b.join()
    pending(store, "gw-a", [1, 2])
    pending(store, "gw-b", [3])
    assert b.adopt() == []  # gw-a is alive
    store.db.execute("UPDATE gateways SET seen = ? WHERE name = 'gw-a'", (time.time() - peers.STALE_S - 1,))
    assert sorted(r[2] for r in b.adopt()) == [1, 2]
    assert b.adopt() == []  # once: they are gw-b's now
    assert sorted(r[2] for r in b.own()) == [1, 2, 3]
    store.close()


def test_a_request_being_adopted_is_not_also_claimed_by_its_old_owner_coming_back(pg_store):
    # gw-b adopts silent gw-a's requests while gw-a restarts and asks for its own: one of the two
    # gets each request, never both (own() was a SELECT that still saw them as gw-a's).
    import threading

    store_a, store_b = Store(pg_store), Store(pg_store)
    store_a.add_device("b1", "f")
    a, b = Peers(store_a, "gw-a"), Peers(store_b, "gw-b")
    a.join()
    b.join()
    pending(store_a, "gw-a", [1, 2])
    store_a.db.execute("UPDATE gateways SET seen = ? WHERE name = 'gw-a'", (time.time() - peers.STALE_S - 1,))
    claimed_by_a: list = []
    with store_b.transaction():
        adopted = b.adopt()  # not committed yet
        back = threading.Thread(target=lambda: claimed_by_a.extend(a.own()))
        back.start()
        back.join(0.5)
    back.join(10)
    assert sorted(r[2] for r in adopted) == [1, 2]
    assert claimed_by_a == []
    store_a.close()
    store_b.close()


def test_a_request_id_used_again_is_a_new_request_without_the_old_reply(tmp_path):
    # A board restarted and numbers its requests from 1 again while the gateway still holds
    # request 1's kept reply: a restart would have resent that old reply as the new answer.
    store = Store(tmp_path / "gw.db")
    store.add_device("b1", "f")
    own = Peers(store, "gw-a")
    with store.transaction():
        store.add_request("b1", "a1", 1, "echo", b"\x01", "gw-a")
        store.keep_reply("b1", "a1", 1, b"the old reply")
    store.add_request("b1", "a1", 1, "echo", b"\x02", "gw-a")
    assert own.own() == [("b1", "a1", 1, "echo", b"\x02", None)]
    store.close()
