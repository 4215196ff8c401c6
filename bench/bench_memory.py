"""Vector memory benchmarks, side by side in one run.

1. Search latency: k=3 nearest neighbours among 10,000 and 100,000 vectors of 384 dimensions in
   one scope, microfang's store through its API -- a hot scope (cached in RAM) and sqlite-vec on
   disk (no cache) -- vs a brute-force numpy scan (matrix product + argpartition) over the same
   vectors in RAM. The vectors are random unit vectors: embedding 100,000 texts would take minutes
   and does not change search cost.
2. Context: embedding latency per query (all-MiniLM-L6-v2 in numpy; SmolLM2 via llama.cpp) and
   recall@1/@3 of each embedder on the labelled set of tests/memory_set.py.

Usage: python bench/bench_memory.py [--quick]; results go to bench/results/memory.json.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from memory_set import MEMORIES, QUERIES  # noqa: E402

from results_file import save  # noqa: E402

from microfang.memory.embed import MiniLMEmbedder, SmolLM2Embedder, minilm_path  # noqa: E402
from microfang.memory.store import SqliteVectorStore  # noqa: E402

DIM = 384


def unit_vectors(n: int, seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def search_latency(n: int, queries: int, tmp: Path) -> dict:
    vectors = unit_vectors(n, n)
    store = SqliteVectorStore(tmp / f"bench-{n}.db", DIM, "random")
    t = time.perf_counter()
    store.db.execute("BEGIN")
    for i in range(n):  # one transaction: loading is not what is measured
        store.db.execute("INSERT INTO memories (scope, kind, text, meta, ts) VALUES ('agent:b/a', 'semantic', ?, '{}', 0)",
                         (f"memory {i}",))
        store.db.execute("INSERT INTO memory_vectors (rowid, scope, kind, embedding) VALUES (?, 'agent:b/a', "
                         "'semantic', ?)", (i + 1, vectors[i].tobytes()))
    store.db.execute("COMMIT")
    load_s = time.perf_counter() - t
    probes = unit_vectors(queries, 7)
    disk = SqliteVectorStore(tmp / f"bench-{n}.db", DIM, "random", cache_bytes=0)
    store.search("agent:b/a", probes[0], 3)  # loads the scope into RAM
    ours, on_disk, numpy_ms, agree = [], [], [], 0
    for q in probes:  # alternate the three, so noise hits all alike
        t = time.perf_counter()
        found = store.search("agent:b/a", q, 3)
        ours.append((time.perf_counter() - t) * 1000)
        t = time.perf_counter()
        found_on_disk = disk.search("agent:b/a", q, 3)
        on_disk.append((time.perf_counter() - t) * 1000)
        t = time.perf_counter()
        scores = vectors @ q
        top = np.argpartition(-scores, 3)[:3]
        top = top[np.argsort(-scores[top])]
        numpy_ms.append((time.perf_counter() - t) * 1000)
        agree += [r["id"] - 1 for r in found] == list(top) == [r["id"] - 1 for r in found_on_disk]
    store.close()
    disk.close()
    row = {"vectors": n, "hot_ms": statistics.median(ours), "sqlite_vec_ms": statistics.median(on_disk),
           "numpy_ms": statistics.median(numpy_ms), "same_top3": agree / queries, "load_s": load_s}
    row["ratio"] = row["hot_ms"] / row["numpy_ms"]
    row["sqlite_vec_ratio"] = row["sqlite_vec_ms"] / row["numpy_ms"]
    return row


def quality(embedder) -> dict:  # noqa: ANN001
    docs = embedder.embed(MEMORIES)
    t = time.perf_counter()
    qs = [embedder.embed([q])[0] for q, _ in QUERIES]
    per_query_ms = (time.perf_counter() - t) * 1000 / len(QUERIES)
    hits1 = hits3 = 0
    for (_, want), q in zip(QUERIES, qs):
        order = list(np.argsort(-(docs @ q)))
        hits1 += order[0] == want
        hits3 += want in order[:3]
    return {"embedder": embedder.name, "dim": embedder.dim, "embed_ms": per_query_ms,
            "recall_at_1": hits1 / len(QUERIES), "recall_at_3": hits3 / len(QUERIES)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="10k vectors only, fewer queries")
    args = parser.parse_args()
    sizes = [10_000] if args.quick else [10_000, 100_000]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in sizes:
            row = search_latency(n, 50 if args.quick else 200, Path(tmp))
            rows.append(row)
            print(f"search k=3 in {n:,} vectors: microfang hot scope {row['hot_ms']:.2f} ms, sqlite-vec on disk "
                  f"{row['sqlite_vec_ms']:.2f} ms vs numpy scan {row['numpy_ms']:.2f} ms -> {row['ratio']:.2f}x and "
                  f"{row['sqlite_vec_ratio']:.2f}x (same top 3: {row['same_top3']:.0%}; loaded in {row['load_s']:.1f} s)")
    embedders = ([MiniLMEmbedder()] if minilm_path() else []) + [SmolLM2Embedder()]
    quality_rows = []
    for embedder in embedders:
        q = quality(embedder)
        quality_rows.append(q)
        print(f"{q['embedder']} ({q['dim']} dims): {q['embed_ms']:.1f} ms per query embedding; recall@1 "
              f"{q['recall_at_1']:.2f}, recall@3 {q['recall_at_3']:.2f} on {len(QUERIES)} labelled queries")
    save("memory", search=rows, embedders=quality_rows)


if __name__ == "__main__":
    main()
