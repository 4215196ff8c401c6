"""Vector memory: the real embedder (all-MiniLM-L6-v2 in numpy), SQLite + sqlite-vec, the
mem.put / mem.search kinds with their scopes, and episodic memory from replicated logs."""

import asyncio

import numpy as np
import pytest
from agents import request_chain
from helpers import agent_wat, build_bundle
from fleet import make_board, wait_until
from memory_set import MEMORIES, QUERIES

from microfang.firmware import cbor
from microfang.gateway import Gateway, Router
from microfang.memory.embed import MiniLMEmbedder, open_embedder
from microfang.memory.service import VectorMemory, agent_scope, fit_reply, memory_handlers
from microfang.memory.store import MemoryStoreError, SqliteVectorStore
from microfang.request import Request


@pytest.fixture(scope="module")
def minilm():
    return MiniLMEmbedder()


def test_minilm_in_numpy_gives_the_models_published_vector(minilm):
    # The first values of the model card's example embedding (sentence-transformers on PyTorch).
    vector = minilm.embed(["This is an example sentence"])[0]
    assert np.allclose(vector[:5], [0.0677, 0.0635, 0.0487, 0.0793, 0.0374], atol=5e-4), vector[:5]
    assert abs(np.linalg.norm(vector) - 1) < 1e-5


def test_recall_at_3_on_the_labelled_set(minilm, tmp_path):
    store = SqliteVectorStore(tmp_path / "m.db", minilm.dim, minilm.name)
    for text, vector in zip(MEMORIES, minilm.embed(MEMORIES)):
        store.add("agent:b/a", "semantic", text, {}, vector)
    hits1 = hits3 = 0
    for (query, want), vector in zip(QUERIES, minilm.embed([q for q, _ in QUERIES])):
        found = [MEMORIES.index(r["text"]) for r in store.search("agent:b/a", vector, 3)]
        hits1 += found[0] == want
        hits3 += want in found
    recall1, recall3 = hits1 / len(QUERIES), hits3 / len(QUERIES)
    print(f"minilm on {len(MEMORIES)} memories, {len(QUERIES)} queries: recall@1 {recall1:.2f}, recall@3 {recall3:.2f}")
    assert recall3 >= 0.9


def test_search_never_crosses_scopes_and_filters_by_kind(minilm, tmp_path):
    store = SqliteVectorStore(tmp_path / "m.db", minilm.dim, minilm.name)
    text = "The boiler pressure dropped to 0.6 bar."
    vector = minilm.embed([text])[0]
    store.add("agent:b1/a", "semantic", text, {"n": 1}, vector)
    store.add("agent:b2/a", "procedural", "How to refill the boiler: open the blue valve.", {}, vector)
    assert [r["text"] for r in store.search("agent:b1/a", vector, 5)] == [text]
    assert store.search("agent:b1/a", vector, 5, kind="procedural") == []
    assert store.search("agent:b1/a", vector, 1)[0]["meta"] == {"n": 1}


def test_a_store_refuses_vectors_of_another_embedder(tmp_path):
    SqliteVectorStore(tmp_path / "m.db", 384, "minilm").close()
    with pytest.raises(MemoryStoreError, match="holds vectors of .*minilm.*not of smollm2"):
        SqliteVectorStore(tmp_path / "m.db", 576, "smollm2")


def test_unknown_embedder_is_a_clear_error():
    from microfang.memory.embed import EmbedError

    with pytest.raises(EmbedError, match="unknown embedder 'bert'"):
        open_embedder("bert")


def test_replies_are_cut_to_what_an_agent_can_take():
    results = [{"text": "x" * 300, "kind": "semantic", "score": 0.9}] * 4
    reply = fit_reply(results)
    assert len(cbor.dumps(reply)) <= 384 and reply["results"] and reply["more"] >= 1


def handlers(minilm, tmp_path, manifests=None):
    memory = VectorMemory(minilm, SqliteVectorStore(tmp_path / "m.db", minilm.dim, minilm.name))
    found = memory_handlers(memory, lambda device: "home", lambda d, a: (manifests or {}).get((d, a)))
    return memory, found


def test_agents_without_the_shared_permission_get_only_their_own_scope(minilm, tmp_path):
    memory, h = handlers(minilm, tmp_path)

    async def run():
        await h["mem.put"](Request("b1", "a1", "mem.put", 1, {"text": "the key is under the mat"}))
        own = await h["mem.search"](Request("b1", "a1", "mem.search", 2, {"query": "where is the key"}))
        other = await h["mem.search"](Request("b2", "a1", "mem.search", 3, {"query": "where is the key"}))
        with pytest.raises(Exception, match=r"needs \[vector_memory\] shared = true"):
            await h["mem.search"](Request("b1", "a1", "mem.search", 4, {"query": "key", "scope": "fleet"}))
        return own, other

    own, other = asyncio.run(run())
    memory.close()
    assert own["results"][0]["text"] == "the key is under the mat"
    assert other["results"] == []


def test_a_registered_shared_manifest_opens_the_fleet_scope(minilm, tmp_path):
    manifests = {("b1", "a1"): {"vector_memory": {"shared": True}}, ("b2", "a2"): {"vector_memory": {"shared": True}}}
    memory, h = handlers(minilm, tmp_path, manifests)

    async def run():
        await h["mem.put"](Request("b1", "a1", "mem.put", 1, {"text": "gate code changed to 4711", "scope": "fleet"}))
        return await h["mem.search"](Request("b2", "a2", "mem.search", 1, {"query": "new code for the gate",
                                                                           "scope": "fleet"}))

    found = asyncio.run(run())
    memory.close()
    assert found["results"][0]["text"] == "gate code changed to 4711"


def test_malformed_memory_requests_are_refused_with_the_reason(minilm, tmp_path):
    memory, h = handlers(minilm, tmp_path)

    async def refused(kind, body):
        with pytest.raises(Exception) as e:
            await h[kind](Request("b1", "a1", kind, 1, body))
        return str(e.value)

    async def run():
        return [await refused("mem.put", {"text": ""}), await refused("mem.put", {"text": "x", "kind": "episodic"}),
                await refused("mem.search", {"query": "q", "k": 50}), await refused("mem.put", {"text": "x" * 3000})]

    reasons = asyncio.run(run())
    memory.close()
    assert reasons == ["needs text (text)", "kind must be semantic or procedural (episodic memory comes from the "
                       "memory log)", "k must be an integer in 1..10", "text is over 2000 bytes"]


def test_an_agent_stores_and_finds_a_memory_through_the_fleet_and_its_log_becomes_episodic(minilm, mosquitto,
                                                                                           tmp_path):
    steps = [("mem.put", cbor.dumps({"text": "the spare fuse is in the red box"})),
             ("mem.search", cbor.dumps({"query": "where can I find a fuse", "k": 2}))]
    memory = VectorMemory(minilm, SqliteVectorStore(tmp_path / "m.db", minilm.dim, minilm.name))
    note = b"pump 3 overheated at noon"
    diary = build_bundle(agent_wat(f"""
      (data (i32.const 0) "{note.decode()}")
      (func (export "mf_on_event") (param i32 i32 i32) (result i32)
        (if (i32.eq (local.get 0) (i32.const 1)) (then (drop (call $append (i32.const 0) (i32.const {len(note)})))))
        (i32.const 0))""", imports='(import "mf" "mem_append" (func $append (param i32 i32) (result i32)))'),
        **{"sandbox.permissions.allowed_host_functions": ["mem_append"], "sandbox.agent_id": "diary"})

    async def scenario():
        router = Router()
        async with Gateway(broker=f"mqtt://127.0.0.1:{mosquitto.port}", db=tmp_path / "gw.db", router=router,
                           quiet=True) as gw:
            gw.add_log_listener(memory.index_log)
            for kind, handler in memory_handlers(memory, gw.fleet_of, gw.manifest_of).items():
                router.add(kind, handler)
            board, _ = make_board("b1", gw.add_device("b1", fleet="test"), mosquitto.port)
            board.spawn(request_chain(steps))
            board.spawn(diary)
            run = asyncio.create_task(board.run(15_000))
            log = board.supervisor.log("chain")
            await wait_until(lambda: log.last_seq >= 2 and memory.store.count(agent_scope("b1", "diary")) >= 1)
            board.stop()
            await run
            return [cbor.loads(p) for _, p in log.records()]

    replies = asyncio.run(scenario())
    episodic = memory.store.search(agent_scope("b1", "diary"), minilm.embed(["which pump got too hot"])[0], 3)
    binary = memory.store.count(agent_scope("b1", "chain"))
    memory.close()
    assert replies[0]["ok"] and replies[0]["id"] >= 1
    assert replies[1]["results"][0]["text"] == "the spare fuse is in the red box"
    assert [(r["kind"], r["text"], r["meta"]) for r in episodic] == [("episodic", note.decode(), {"seq": 1})]
    assert binary == 1  # the chain agent's log holds CBOR replies: binary records are not embedded


def test_an_openai_compatible_embeddings_endpoint_can_stand_in_for_the_local_model(tmp_path, monkeypatch):
    from openai_server import OpenAIServer

    monkeypatch.setenv("MICROFANG_EMBED_API_KEY", "sk-embed")
    with OpenAIServer() as server:
        embedder = open_embedder("openai", server.url, "text-embedding-3-small")
        vectors = embedder.embed(["first", "second"])
        store = SqliteVectorStore(tmp_path / "m.db", embedder.dim, embedder.name)
        store.add("agent:b/a", "semantic", "first", {}, vectors[0])
        found = store.search("agent:b/a", embedder.embed(["first"])[0], 1)
    assert embedder.dim == 8 and vectors.shape == (2, 8)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1)
    assert not np.allclose(vectors[0], vectors[1])  # rows put back in input order
    assert found[0]["text"] == "first" and found[0]["score"] > 0.999
    assert server.requests[-1]["path"] == "/v1/embeddings" and server.requests[-1]["auth"] == "Bearer sk-embed"


def test_memory_db_picks_sqlite_for_a_path_and_pgvector_for_a_postgresql_url(tmp_path):
    from microfang.gateway.services import vector_store

    store = vector_store(str(tmp_path / "m.db"), 384, "minilm")
    assert isinstance(store, SqliteVectorStore)
    store.close()
    with pytest.raises(MemoryStoreError, match=r"^PostgreSQL"):  # nothing listens on port 1
        vector_store("postgresql://microfang@127.0.0.1:1/none", 384, "minilm")
