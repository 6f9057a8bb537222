"""The answer cache, in process and in the real Redis: hits on a repeated
question, misses once a base it read changed, semantic hits on a close
paraphrase, and misses, never failures, when the store is down."""

from __future__ import annotations

import os
import uuid

import pytest

from sagemesh.rag_engine.v1 import rag_engine_pb2 as pb
from services.rag_engine.answer_cache import AnswerCache, from_json, to_json
from services.rag_engine.answer_cache_memory import MemoryCacheStore
from services.rag_engine.answer_cache_redis import RedisCacheStore
from services.rag_engine.answering import Answer, AnswerMetrics, QueryOptions, Source
from services.rag_engine.domain import Chunk, RankedChunk, Scope, Timings
from tests.conftest import free_port
from tests.rag_engine.test_service import DOCS, serving

REDIS_URL = os.environ.get("SAGEMESH_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def an_answer(text: str = "Revenue grew 12 percent [1].") -> Answer:
    chunk = Chunk("t", "kb", "d", "c1", "Revenue grew 12 percent.", "Results", ("Q3",), 2, 0, {"year": "2024"})
    return Answer(text, [Source(1, RankedChunk(chunk, 0.5, 1, 2, 0), chunk.text)],
                  AnswerMetrics(3.0, 0.0, 1.0, 5.0, 40, 8, 0.0, "extractive", Timings(1, 2, 3, 0.1, 0, 4)),
                  ["hybrid", "generator:extractive"])


@pytest.fixture(params=["memory", "redis"])
async def store(request):
    made = MemoryCacheStore() if request.param == "memory" else RedisCacheStore(REDIS_URL)
    yield made
    await made.close()


def test_an_answer_survives_the_round_trip():
    answer = an_answer()
    assert from_json(to_json(answer)) == answer


async def test_a_repeated_question_hits_until_a_base_it_read_changes(store):
    tenant = uuid.uuid4().hex
    cache = AnswerCache(store, ttl_seconds=60)
    scope, other_scope, everything = Scope(tenant, ("kb-a",)), Scope(tenant, ("kb-b",)), Scope(tenant)
    for where in (scope, other_scope, everything):
        lookup = await cache.lookup(where, "How much did revenue grow?", QueryOptions())
        assert lookup.answer is None
        await cache.keep(lookup, "How much did revenue grow?", an_answer())

    again = await cache.lookup(scope, "  how much did REVENUE grow ", QueryOptions())
    assert again.answer == an_answer() and again.found_by == "cache"
    assert (await cache.lookup(scope, "How much did revenue grow?", QueryOptions(top_k=3))).answer is None

    await cache.changed(tenant, "kb-a")
    assert (await cache.lookup(scope, "How much did revenue grow?", QueryOptions())).answer is None
    assert (await cache.lookup(everything, "How much did revenue grow?", QueryOptions())).answer is None
    assert (await cache.lookup(other_scope, "How much did revenue grow?", QueryOptions())).answer is not None


async def test_an_answer_made_while_its_base_changed_is_not_served_as_new(store):
    tenant = uuid.uuid4().hex
    cache = AnswerCache(store, ttl_seconds=60)
    scope = Scope(tenant, ("kb-a",))
    lookup = await cache.lookup(scope, "q", QueryOptions())
    await cache.changed(tenant, "kb-a")  # indexing finished while the answer was being made
    await cache.keep(lookup, "q", an_answer())
    assert (await cache.lookup(scope, "q", QueryOptions())).answer is None


async def test_a_close_paraphrase_is_a_semantic_hit(store):
    vectors = {"how much did revenue grow": [1.0, 0.0, 0.1], "by how much did revenue grow": [0.98, 0.02, 0.12],
               "who closed the lisbon office": [0.0, 1.0, 0.0]}

    async def embed(text: str) -> list[float]:
        return vectors[text]

    cache = AnswerCache(store, ttl_seconds=60, semantic_threshold=0.95, embed_query=embed)
    scope = Scope(uuid.uuid4().hex, ("kb-a",))
    lookup = await cache.lookup(scope, "How much did revenue grow?", QueryOptions())
    await cache.keep(lookup, "How much did revenue grow?", an_answer())
    close = await cache.lookup(scope, "By how much did revenue grow?", QueryOptions())
    assert close.answer == an_answer() and close.found_by == "semantic-cache"
    assert (await cache.lookup(scope, "Who closed the Lisbon office?", QueryOptions())).answer is None


async def test_a_semantic_miss_embeds_the_question_once(store):
    embedded: list[str] = []

    async def embed(text: str) -> list[float]:
        embedded.append(text)
        return [1.0, 0.0] if "revenue" in text else [0.0, 1.0]

    cache = AnswerCache(store, ttl_seconds=60, semantic_threshold=0.95, embed_query=embed)
    scope = Scope(uuid.uuid4().hex, ("kb-a",))
    for question in ("How much did revenue grow?", "Who closed the Lisbon office?"):
        lookup = await cache.lookup(scope, question, QueryOptions())
        assert lookup.answer is None
        await cache.keep(lookup, question, an_answer())
    assert embedded == ["how much did revenue grow", "who closed the lisbon office"]


async def test_a_cache_that_is_down_misses_and_does_not_fail():
    cache = AnswerCache(RedisCacheStore(f"redis://127.0.0.1:{free_port()}/0"), ttl_seconds=60)
    lookup = await cache.lookup(Scope("t", ("kb",)), "q", QueryOptions())
    assert lookup.answer is None
    await cache.keep(lookup, "q", an_answer())
    await cache.changed("t", "kb")
    await cache.store.close()


async def test_query_is_served_from_redis_until_the_base_changes(tmp_path):
    tenant = f"cache-{uuid.uuid4().hex[:8]}"
    async with serving(tmp_path, redis_url=REDIS_URL) as rag:
        await rag.index(tenant, "kb-main", "d-finance", DOCS["d-finance"])
        ask = pb.QueryRequest(query="How much did revenue grow in the third quarter?", kb_ids=["kb-main"])
        first = await rag.stub.Query(ask, metadata=rag.token_for(tenant))
        second = await rag.stub.Query(ask, metadata=rag.token_for(tenant))
        assert not first.metrics.cache_hit and second.metrics.cache_hit
        assert second.answer == first.answer and list(second.sources) == list(first.sources)
        assert "cache" in second.features_used and second.metrics.prompt_tokens == 0

        bypassed = await rag.stub.Query(pb.QueryRequest(query=ask.query, kb_ids=["kb-main"], bypass_cache=True),
                                        metadata=rag.token_for(tenant))
        assert not bypassed.metrics.cache_hit

        await rag.index(tenant, "kb-main", "d-pets", DOCS["d-pets"])
        after_change = await rag.stub.Query(ask, metadata=rag.token_for(tenant))
        assert not after_change.metrics.cache_hit

        stream = rag.stub.StreamQuery(pb.StreamQueryRequest(query=ask.query, kb_ids=["kb-main"]),
                                      metadata=rag.token_for(tenant))
        events = [event async for event in stream]
        assert events[-1].completed.metrics.cache_hit
        assert "".join(e.answer_delta for e in events[:-1]) == events[-1].completed.answer
