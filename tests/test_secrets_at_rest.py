"""Files that hold secrets are readable by their owner only, whatever the umask: the gateway's
database (every device key, the fleets' signing keys), its WAL, vector memory, flash images."""

import os
from pathlib import Path

import numpy as np

from microfang.gateway.store import Store
from microfang.memory.store import SqliteVectorStore


def mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def test_a_new_gateway_database_and_its_wal_are_0600_even_with_a_lax_umask(tmp_path):
    old = os.umask(0o022)
    try:
        store = Store(tmp_path / "gw.db")
        store.add_device("kitchen", "home")
        assert mode(tmp_path / "gw.db") == 0o600
        assert all(mode(p) == 0o600 for p in tmp_path.glob("gw.db-*"))
        store.close()
    finally:
        os.umask(old)


def test_an_existing_world_readable_gateway_database_is_tightened(tmp_path):
    Store(tmp_path / "gw.db").close()
    (tmp_path / "gw.db").chmod(0o644)
    Store(tmp_path / "gw.db").close()
    assert mode(tmp_path / "gw.db") == 0o600


def test_vector_memory_is_0600(tmp_path):
    store = SqliteVectorStore(tmp_path / "m.db", 4, "test")
    store.add("agent:d/a", "semantic", "a memory", {}, np.ones(4, dtype=np.float32) / 2)
    store.close()
    assert mode(tmp_path / "m.db") == 0o600
