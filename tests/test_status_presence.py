"""What `microfang status` (and every reader of the store) calls online: while a gateway runs,
what that gateway believes (it turns a board offline after its own --offline-after, which a
reader does not know); with none running, online and heard within the default 60 s."""

from __future__ import annotations

import json
import time

import pytest

from microfang.cli import main
from microfang.gateway.peers import Peers
from microfang.gateway.store import Store


@pytest.fixture
def silent_for_two_minutes(tmp_path):
    """A store with board b1 online as its gateway last believed, last heard 120 s ago."""
    db = tmp_path / "gw.db"
    store = Store(db)
    store.add_device("b1", "f")
    store.set_presence("b1", True)
    store.db.execute("UPDATE devices SET last_seen = ? WHERE id = 'b1'", (time.time() - 120,))
    yield db, store
    store.close()


def status_online(db, capsys) -> bool:
    capsys.readouterr()
    assert main(["status", "--json", "--db", str(db)]) == 0
    [row] = json.loads(capsys.readouterr().out)
    return row["online"]


def test_a_running_gateway_with_a_longer_offline_after_is_believed(silent_for_two_minutes, capsys):
    db, store = silent_for_two_minutes
    Peers(store, "gw-a").join()  # its heartbeat: a gateway runs on this store (say with --offline-after 300)
    assert status_online(db, capsys) is True


def test_with_no_gateway_running_a_board_silent_for_over_a_minute_is_offline(silent_for_two_minutes, capsys):
    db, _ = silent_for_two_minutes
    assert status_online(db, capsys) is False
