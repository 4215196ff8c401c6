"""Vector memory on PostgreSQL + pgvector: the same interface as SqliteVectorStore, for a
gateway that outgrows one SQLite file (several gateways, millions of memories).

    store = PgVectorStore("postgresql://microfang@db/microfang", dim=384, model="minilm")

Needs `pip install psycopg[binary]` and the `vector` extension in the database (CREATE
EXTENSION vector, as a superuser once). Scopes are a column with a B-tree index and the vectors
an HNSW index for cosine distance; a search filters by scope (and kind) and orders by distance.
Tested by tests/test_memory_pg.py against MICROFANG_PG_DSN when one is set (CI machines have
PostgreSQL 15 without pgvector, so there it is skipped with that reason).
"""

from __future__ import annotations

import json
import time
from typing import Any

import numpy as np

from microfang.memory.store import MemoryStoreError

SCHEMA = """
CREATE EXTENSION IF NOT EXISTS vector;
CREATE TABLE IF NOT EXISTS microfang_memory_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS microfang_memories (
    id BIGSERIAL PRIMARY KEY,
    scope TEXT NOT NULL,
    kind TEXT NOT NULL,
    text TEXT NOT NULL,
    meta JSONB NOT NULL,
    ts DOUBLE PRECISION NOT NULL,
    embedding vector({dim}) NOT NULL
);
CREATE INDEX IF NOT EXISTS microfang_memories_scope ON microfang_memories (scope, kind);
CREATE INDEX IF NOT EXISTS microfang_memories_embedding ON microfang_memories
    USING hnsw (embedding vector_cosine_ops);
"""


def _literal(vector: np.ndarray) -> str:
    return "[" + ",".join(f"{x:.7g}" for x in np.asarray(vector, np.float32)) + "]"


class PgVectorStore:
    def __init__(self, dsn: str, dim: int, model: str) -> None:
        try:
            import psycopg
        except ImportError:
            raise MemoryStoreError("PostgreSQL vector memory needs psycopg: pip install 'psycopg[binary]'") from None
        self.dim = dim
        try:
            self.db = psycopg.connect(dsn, autocommit=True)
            self.db.execute(SCHEMA.format(dim=int(dim)))
        except psycopg.Error as e:
            raise MemoryStoreError(f"PostgreSQL: {' '.join(str(e).split())}") from None
        want = json.dumps({"model": model, "dim": dim})
        row = self.db.execute("SELECT value FROM microfang_memory_meta WHERE key = 'embedder'").fetchone()
        if row is None:
            self.db.execute("INSERT INTO microfang_memory_meta VALUES ('embedder', %s)", (want,))
        elif json.loads(row[0]) != json.loads(want):
            raise MemoryStoreError(f"PostgreSQL memory holds vectors of {row[0]}, not of {model} ({dim} dims)")

    def add(self, scope: str, kind: str, text: str, meta: dict[str, Any], vector: np.ndarray) -> int:
        row = self.db.execute("INSERT INTO microfang_memories (scope, kind, text, meta, ts, embedding) "
                              "VALUES (%s, %s, %s, %s, %s, %s::vector) RETURNING id",
                              (scope, kind, text, json.dumps(meta), time.time(), _literal(vector))).fetchone()
        assert row is not None  # RETURNING id
        return int(row[0])

    def search(self, scope: str, vector: np.ndarray, k: int, kind: str | None = None) -> list[dict[str, Any]]:
        query = "SELECT id, embedding <=> %s::vector AS d, kind, text, meta FROM microfang_memories WHERE scope = %s"
        args: list[Any] = [_literal(vector), scope]
        if kind is not None:
            query += " AND kind = %s"
            args.append(kind)
        rows = self.db.execute(query + " ORDER BY d LIMIT %s", (*args, k)).fetchall()
        return [{"id": r[0], "score": round(1.0 - float(r[1]), 4), "kind": r[2], "text": r[3],
                 "meta": r[4] if isinstance(r[4], dict) else json.loads(r[4])} for r in rows]

    def count(self, scope: str | None = None) -> int:
        if scope is None:
            row = self.db.execute("SELECT count(*) FROM microfang_memories").fetchone()
        else:
            row = self.db.execute("SELECT count(*) FROM microfang_memories WHERE scope = %s", (scope,)).fetchone()
        assert row is not None  # count(*) always has a row
        return int(row[0])

    def texts(self, scope: str) -> set[str]:
        return {r[0] for r in self.db.execute("SELECT text FROM microfang_memories WHERE scope = %s", (scope,))}

    def close(self) -> None:
        self.db.close()
