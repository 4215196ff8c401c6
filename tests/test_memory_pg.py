"""The vector-store contract, run on every store microfang has: SQLite with hot scopes searched
in RAM and with sqlite-vec searching on disk (no cache), and PostgreSQL + pgvector (a private
cluster started for the session, or MICROFANG_PG_DSN; tests/run installs both)."""

import uuid

import numpy as np
import pytest

from microfang.memory.store import SqliteVectorStore


def unit(seed):
    v = np.random.default_rng(seed).standard_normal(384).astype(np.float32)
    return v / np.linalg.norm(v)


@pytest.fixture(params=["sqlite", "sqlite-vec-on-disk", "postgres"])
def store(request, tmp_path):
    if request.param.startswith("sqlite"):
        s = SqliteVectorStore(tmp_path / "m.db", 384, "contract",
                              cache_bytes=0 if request.param == "sqlite-vec-on-disk" else 1 << 20)
    else:
        from microfang.memory.pg import PgVectorStore

        s = PgVectorStore(request.getfixturevalue("pg_dsn"), 384, "contract")
    yield s
    s.close()


def test_nearest_first_within_a_scope_only(store):
    scope, other = f"agent:{uuid.uuid4().hex}/a", f"agent:{uuid.uuid4().hex}/a"
    for n in range(20):
        store.add(scope, "semantic", f"memory {n}", {"n": n}, unit(n))
    store.add(other, "semantic", "not mine", {}, unit(3))
    found = store.search(scope, unit(3), 3)
    assert found[0]["text"] == "memory 3" and found[0]["meta"] == {"n": 3} and found[0]["score"] > 0.99
    assert all(r["text"] != "not mine" for r in found)
    assert store.count(scope) == 20


def test_kind_filter(store):
    scope = f"agent:{uuid.uuid4().hex}/a"
    store.add(scope, "procedural", "how to reset the pump", {}, unit(1))
    store.add(scope, "semantic", "the pump is blue", {}, unit(1))
    assert [r["text"] for r in store.search(scope, unit(1), 5, "procedural")] == ["how to reset the pump"]
    assert store.texts(scope) == {"how to reset the pump", "the pump is blue"}


def test_a_cached_scope_sees_what_is_added_after_it_was_loaded(tmp_path):
    s = SqliteVectorStore(tmp_path / "m.db", 384, "contract")
    s.add("agent:b/a", "semantic", "old", {}, unit(1))
    assert s.search("agent:b/a", unit(2), 1)[0]["text"] == "old"  # loads the scope into RAM
    s.add("agent:b/a", "semantic", "new", {}, unit(2))
    s.add("agent:b/a", "procedural", "how-to", {}, unit(3) * 5)  # any length: searched at unit length
    assert s.search("agent:b/a", unit(2), 1)[0]["text"] == "new"
    assert [(r["text"], r["score"]) for r in s.search("agent:b/a", unit(3), 1, "procedural")] == [("how-to", 1.0)]
    s.close()
