"""Vector memory storage: SQLite + sqlite-vec (default) or PostgreSQL + pgvector (pg.py).

Each memory: a scope ("agent:{device}/{agent}" or "fleet:{fleet}"), a kind (episodic: the
replicated memory-log records of an agent; semantic: facts an agent stores; procedural: skills
and tool descriptions), its text, JSON metadata and an embedding. Search is k nearest by
cosine distance within one scope, optionally one kind: the scope is sqlite-vec's partition
key, so a search reads only that scope's vectors.

Hot scopes are searched in RAM: the first search of a scope loads its vectors from SQLite into
one numpy matrix (kept up to date by add), while the cache stays under `cache_bytes`; a scope
that does not fit is searched by sqlite-vec on disk. Both give the same exact nearest
neighbours (bench/bench_memory.py compares them); SQLite stays the one durable copy.
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from microfang.config import private_file
from microfang.firmware.errors import MicrofangError

KINDS = ("episodic", "semantic", "procedural")


class MemoryStoreError(MicrofangError):
    """The vector store cannot be opened or used."""


class VectorStore(Protocol):
    dim: int

    def add(self, scope: str, kind: str, text: str, meta: dict[str, Any], vector: np.ndarray) -> int: ...

    def search(self, scope: str, vector: np.ndarray, k: int, kind: str | None = None) -> list[dict[str, Any]]: ...

    def count(self, scope: str | None = None) -> int: ...

    def texts(self, scope: str) -> set[str]: ...

    def close(self) -> None: ...


def _connect(path: str) -> Any:
    """A SQLite connection that can load sqlite-vec. Python builds without extension loading
    (pyenv's, say) get pysqlite3's bundled SQLite instead."""
    import sqlite_vec

    private_file(Path(path))  # agents' memories: readable by the gateway's user only
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    if not hasattr(db, "enable_load_extension"):
        db.close()
        try:
            from pysqlite3 import dbapi2
        except ImportError:
            raise MemoryStoreError("this Python's sqlite3 cannot load extensions; pip install pysqlite3-binary") from None
        db = dbapi2.connect(path, isolation_level=None, check_same_thread=False)
    db.enable_load_extension(True)
    sqlite_vec.load(db)
    db.enable_load_extension(False)
    return db


def _unit(rows: np.ndarray) -> np.ndarray:
    return rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)


class _HotScope:
    """One scope's vectors in RAM, at unit length. Adds do not copy the matrix: new rows wait in
    `pending` and join it at the next search, so a burst of adds costs one copy, not one each."""

    def __init__(self, ids: list[int], kinds: list[str], matrix: np.ndarray) -> None:
        self.ids = ids
        self.kinds = kinds
        self.matrix = _unit(matrix)
        self.pending: list[np.ndarray] = []
        self._kinds: np.ndarray | None = None

    @property
    def nbytes(self) -> int:
        return self.matrix.nbytes + sum(p.nbytes for p in self.pending)

    def add(self, memory_id: int, kind: str, vector: np.ndarray) -> None:
        self.ids.append(memory_id)
        self.kinds.append(kind)
        self.pending.append(_unit(np.asarray(vector, np.float32)[None, :]))
        self._kinds = None

    def rows(self) -> np.ndarray:
        if self.pending:
            self.matrix = np.vstack([self.matrix, *self.pending])
            self.pending = []
        return self.matrix

    def kind_array(self) -> np.ndarray:
        if self._kinds is None:
            self._kinds = np.array(self.kinds)
        return self._kinds


class SqliteVectorStore:
    """Memories in one SQLite file; vectors in a sqlite-vec vec0 table partitioned by scope."""

    def __init__(self, path: str | Path, dim: int, model: str, cache_bytes: int = 256 << 20) -> None:
        self.path = str(path)
        self.dim = dim
        self.cache_bytes = cache_bytes
        self._hot: dict[str, _HotScope] = {}
        try:
            self.db = _connect(self.path)
        except sqlite3.DatabaseError as e:
            raise MemoryStoreError(f"{path}: not a memory database ({e})") from None
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.executescript(f"""
            CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
            CREATE TABLE IF NOT EXISTS memories (
                id INTEGER PRIMARY KEY, scope TEXT NOT NULL, kind TEXT NOT NULL, text TEXT NOT NULL,
                meta TEXT NOT NULL, ts REAL NOT NULL);
            CREATE INDEX IF NOT EXISTS memories_scope ON memories (scope, kind);
            CREATE VIRTUAL TABLE IF NOT EXISTS memory_vectors USING vec0(
                scope TEXT PARTITION KEY, kind TEXT, embedding FLOAT[{dim}] distance_metric=cosine);
        """)
        row = self.db.execute("SELECT value FROM meta WHERE key = 'embedder'").fetchone()
        if row is None:
            self.db.execute("INSERT INTO meta VALUES ('embedder', ?)", (json.dumps({"model": model, "dim": dim}),))
        elif json.loads(row[0]) != {"model": model, "dim": dim}:
            raise MemoryStoreError(f"{path}: holds vectors of {json.loads(row[0])}, not of {model} ({dim} dims): "
                                   "use another file or the same embedder")

    def add(self, scope: str, kind: str, text: str, meta: dict[str, Any], vector: np.ndarray) -> int:
        self.db.execute("BEGIN")
        try:
            cur = self.db.execute("INSERT INTO memories (scope, kind, text, meta, ts) VALUES (?, ?, ?, ?, ?)",
                                  (scope, kind, text, json.dumps(meta), time.time()))
            memory_id = int(cur.lastrowid)
            self.db.execute("INSERT INTO memory_vectors (rowid, scope, kind, embedding) VALUES (?, ?, ?, ?)",
                            (memory_id, scope, kind, np.asarray(vector, np.float32).tobytes()))
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        hot = self._hot.get(scope)
        if hot is not None:
            hot.add(memory_id, kind, vector)
        return memory_id

    def _cached(self, scope: str) -> _HotScope | None:
        hot = self._hot.get(scope)
        if hot is not None:
            return hot
        rows = self.count(scope)
        used = sum(h.nbytes for h in self._hot.values())
        if rows == 0 or used + rows * self.dim * 4 > self.cache_bytes:
            return None
        found = self.db.execute("SELECT rowid, kind, embedding FROM memory_vectors WHERE scope = ?", (scope,)).fetchall()
        matrix = np.frombuffer(b"".join(r[2] for r in found), np.float32).reshape(len(found), self.dim)
        hot = self._hot[scope] = _HotScope([r[0] for r in found], [r[1] for r in found], matrix)
        return hot

    def search(self, scope: str, vector: np.ndarray, k: int, kind: str | None = None) -> list[dict[str, Any]]:
        hot = self._cached(scope)
        if hot is not None:
            return self._search_hot(hot, vector, k, kind)
        query = ("SELECT v.rowid, v.distance, m.kind, m.text, m.meta FROM memory_vectors v "
                 "JOIN memories m ON m.id = v.rowid WHERE v.embedding MATCH ? AND v.k = ? AND v.scope = ?")
        args: list[Any] = [np.asarray(vector, np.float32).tobytes(), k, scope]
        if kind is not None:
            query += " AND v.kind = ?"
            args.append(kind)
        rows = self.db.execute(query + " ORDER BY v.distance", args).fetchall()
        return [{"id": r[0], "score": round(1.0 - float(r[1]), 4), "kind": r[2], "text": r[3],
                 "meta": json.loads(r[4])} for r in rows]

    def _search_hot(self, hot: _HotScope, vector: np.ndarray, k: int, kind: str | None) -> list[dict[str, Any]]:
        ids = hot.ids
        scores = hot.rows() @ _unit(np.asarray(vector, np.float32)[None, :])[0]
        if kind is not None:
            scores = np.where(hot.kind_array() == kind, scores, -np.inf)
        k = min(k, len(ids))
        best: Any = np.argpartition(-scores, k - 1)[:k] if k else []
        top = [int(i) for i in sorted(best, key=lambda i: -scores[i]) if scores[i] > -np.inf]
        if not top:
            return []
        marks = ",".join("?" * len(top))
        rows = {r[0]: r for r in self.db.execute(f"SELECT id, kind, text, meta FROM memories WHERE id IN ({marks})",
                                                 [ids[i] for i in top])}
        return [{"id": ids[i], "score": round(float(scores[i]), 4), "kind": rows[ids[i]][1], "text": rows[ids[i]][2],
                 "meta": json.loads(rows[ids[i]][3])} for i in top]

    def count(self, scope: str | None = None) -> int:
        if scope is None:
            return int(self.db.execute("SELECT count(*) FROM memories").fetchone()[0])
        return int(self.db.execute("SELECT count(*) FROM memories WHERE scope = ?", (scope,)).fetchone()[0])

    def texts(self, scope: str) -> set[str]:
        return {r[0] for r in self.db.execute("SELECT text FROM memories WHERE scope = ?", (scope,))}

    def close(self) -> None:
        self.db.close()
