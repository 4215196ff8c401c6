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
