"""rag_engine over a real gRPC channel: the local vector index, tantivy and the local
embedding model, with tenants taken from real signed access tokens."""

from __future__ import annotations

import asyncio
import time
from contextlib import asynccontextmanager
from datetime import datetime, timezone

import grpc
import pytest
from google.protobuf import struct_pb2
from prometheus_client import REGISTRY

from meshkit.channels import create_channel
from meshkit.server import MeshServer
from sagemesh.rag_engine.v1 import rag_engine_pb2 as pb
from sagemesh.rag_engine.v1 import rag_engine_pb2_grpc
from meshkit.errors import FailedPrecondition
from services.identity.domain import Role, User
from services.identity.tokens import AccessTokenIssuer, load_signing_key
from services.rag_engine.server import build
from services.rag_engine.settings import RagEngineSettings
from tests.conftest import free_port
from tests.rag_engine.toy_cross_encoder import write_model_dir

DOCS = {
    "d-finance": [
        ("f1", "Quarterly results", "Revenue in the third quarter grew 12 percent to 4.2 million euros.", {"year": "2024", "lang": "en"}),
        ("f2", "Quarterly results", "Operating costs fell because the Lisbon office was closed.", {"year": "2024", "lang": "en"}),
    ],
    "d-pets": [
        ("p1", "Pet care", "Cats sleep for about fifteen hours a day and groom themselves often.", {"year": "2021", "lang": "en"}),
    ],
    "d-zh": [
        ("z1", "年度报告", "公司的年度收入增长了百分之十二，主要来自北京的新客户。", {"year": "2023", "lang": "zh"}),
    ],
}


class RagUnderTest:
    def __init__(self, stub, issuer, address: str = ""):
        self.stub = stub
        self.issuer = issuer
        # For a gateway put in front of it.
        self.address = address

    def token_for(self, tenant: str) -> list[tuple[str, str]]:
        user = User(f"user-{tenant}", tenant, tenant, f"{tenant}@example.com", tenant, Role.MEMBER,
                    datetime.now(timezone.utc))
        return [("authorization", f"Bearer {self.issuer.issue(user, 's1', time.time())}")]

    async def index(self, tenant: str, kb: str, document: str, rows, replace: bool = False) -> pb.IndexChunksResponse:
        chunks = [pb.Chunk(chunk_id=cid, title=title, text=text, metadata=meta, position=i)
                  for i, (cid, title, text, meta) in enumerate(rows)]
        return await self.stub.IndexChunks(pb.IndexChunksRequest(
            tenant_id=tenant, kb_id=kb, document_id=document, chunks=chunks, replace_document=replace))

    async def retrieve(self, tenant: str, query: str, **fields) -> pb.RetrieveResponse:
        return await self.stub.Retrieve(pb.RetrieveRequest(query=query, **fields), metadata=self.token_for(tenant))


@asynccontextmanager
async def serving(data_dir, **settings_fields):
    settings = RagEngineSettings(_env_file=None, data_dir=data_dir, listen_port=0, **settings_fields)
    kid, key = load_signing_key(settings.keys_dir, None)
    issuer = AccessTokenIssuer(kid, key, settings.jwt_issuer, settings.jwt_audience, 600)
    server = MeshServer(await build(settings), settings)
    await server.start()
    channel = create_channel(server.address, settings)
    try:
        yield RagUnderTest(rag_engine_pb2_grpc.RagEngineServiceStub(channel), issuer, server.address)
    finally:
        await channel.close()
        await server.stop(grace=0)


@pytest.fixture(scope="module")
async def rag(tmp_path_factory):
    async with serving(tmp_path_factory.mktemp("rag")) as under_test:
        for document, rows in DOCS.items():
            await under_test.index("acme", "kb-main", document, rows)
        await under_test.index("globex", "kb-secret", "d-globex", [
            ("g1", "Globex revenue", "Globex revenue in the third quarter grew 40 percent.", {"year": "2024"}),
        ])
        yield under_test


def ids(response: pb.RetrieveResponse) -> list[str]:
    return [r.chunk_id for r in response.results]


async def test_retrieve_finds_the_fact_with_ranks_and_timings(rag):
    response = await rag.retrieve("acme", "How much did revenue grow last quarter?", top_k=3)
    top = response.results[0]
    assert top.chunk_id == "f1"
    assert top.document_id == "d-finance" and top.kb_id == "kb-main" and top.title == "Quarterly results"
    assert "12 percent" in top.content
    assert top.vector_rank >= 1 and top.bm25_rank >= 1 and top.score > 0
    assert [r.score for r in response.results] == sorted((r.score for r in response.results), reverse=True)
    timings = response.timings
    assert timings.embed_ms > 0 and timings.vector_ms > 0 and timings.bm25_ms > 0
    assert timings.total_ms >= max(timings.embed_ms, timings.bm25_ms)


def stage_count(stage: str) -> float:
    return REGISTRY.get_sample_value("sagemesh_rag_retrieval_stage_seconds_count", {"stage": stage}) or 0.0


async def test_stage_timings_are_recorded_as_metrics(rag):
    before = {stage: stage_count(stage) for stage in ("embed", "vector", "bm25", "fuse", "rerank", "total")}
    await rag.retrieve("acme", "cats", top_k=3)
    await rag.retrieve("acme", "Lisbon", top_k=3, weights=pb.FusionWeights(vector=0, bm25=1))
    moved = {stage: stage_count(stage) - count for stage, count in before.items()}
    # The BM25-only call never embedded or searched vectors; nothing reranked.
    assert moved == {"embed": 1, "vector": 1, "bm25": 2, "fuse": 2, "rerank": 0, "total": 2}


async def test_chinese_query_finds_the_chinese_passage(rag):
    response = await rag.retrieve("acme", "年度收入增长", top_k=2)
    assert response.results[0].chunk_id == "z1"


async def test_a_tenant_never_sees_another_tenants_chunks(rag):
    # Globex's own words, and its knowledge base named outright: still nothing.
    response = await rag.retrieve("acme", "Globex revenue third quarter 40 percent", top_k=10,
                                  kb_ids=["kb-secret"])
    assert ids(response) == []
    everything = await rag.retrieve("acme", "Globex revenue third quarter 40 percent", top_k=100)
    assert "g1" not in ids(everything)
    theirs = await rag.retrieve("globex", "revenue", top_k=10)
    assert ids(theirs) == ["g1"]


def value(v) -> struct_pb2.Value:
    return struct_pb2.Value(string_value=v) if isinstance(v, str) else struct_pb2.Value(number_value=v)


async def test_metadata_filters_apply_to_both_lists(rag):
    equals = await rag.retrieve("acme", "revenue growth", top_k=10,
                                filters=[pb.MetadataFilter(field="lang", equals=value("zh"))])
    assert ids(equals) == ["z1"]
    ranged = await rag.retrieve("acme", "revenue cats", top_k=10,
                                filters=[pb.MetadataFilter(field="year", range=pb.NumericRange(lte=2023))])
    assert set(ids(ranged)) == {"p1", "z1"}
    any_of = struct_pb2.ListValue(values=[value("2021"), value(2023)])
    listed = await rag.retrieve("acme", "cats revenue", top_k=10,
                                filters=[pb.MetadataFilter(field="year", any_of=any_of)])
    assert set(ids(listed)) == {"p1", "z1"}


async def test_weights_can_switch_a_list_off(rag):
    bm25_only = await rag.retrieve("acme", "Lisbon office", top_k=5, weights=pb.FusionWeights(vector=0, bm25=1))
    assert bm25_only.results[0].chunk_id == "f2"
    # A list weighted 0 is not even searched.
    assert all(r.bm25_rank > 0 and r.vector_rank == 0 for r in bm25_only.results)
    assert bm25_only.timings.embed_ms == 0 and bm25_only.timings.vector_ms == 0
    vector_only = await rag.retrieve("acme", "Lisbon office", top_k=5, weights=pb.FusionWeights(vector=1, bm25=0))
    assert len(vector_only.results) == 4 and all(r.bm25_rank == 0 and r.vector_rank > 0 for r in vector_only.results)


async def test_reindexing_replaces_and_deleting_removes(rag):
    await rag.index("acme", "kb-tmp", "d-tmp", [("t1", "Temp", "The zeppelin hangar is in Friedrichshafen.", {})])
    assert ids(await rag.retrieve("acme", "zeppelin hangar", top_k=1)) == ["t1"]
    replaced = await rag.index("acme", "kb-tmp", "d-tmp", [("t1", "Temp", "The airship museum opened in 1996.", {})])
    assert (replaced.indexed_count, replaced.vector_count) == (1, 1)
    again = await rag.retrieve("acme", "airship museum", top_k=1, kb_ids=["kb-tmp"])
    assert "1996" in again.results[0].content
    deleted = await rag.stub.DeleteDocumentChunks(
        pb.DeleteDocumentChunksRequest(tenant_id="acme", kb_id="kb-tmp", document_id="d-tmp")
    )
    assert deleted.deleted_count == 1
    assert ids(await rag.retrieve("acme", "airship museum", top_k=5, kb_ids=["kb-tmp"])) == []


async def test_replacing_a_document_removes_the_chunks_the_call_does_not_carry(rag):
    await rag.index("acme", "kb-rep", "d-rep", [("r1", "", "The glacier retreated forty metres.", {}),
                                                ("r2", "", "Moraine deposits mark the old glacier front.", {})])
    appended = await rag.index("acme", "kb-rep", "d-rep", [("r3", "", "Meltwater lakes formed below it.", {})])
    assert appended.vector_count == 3
    replaced = await rag.index("acme", "kb-rep", "d-rep", [("r1", "", "The glacier is now stable.", {})], replace=True)
    assert (replaced.indexed_count, replaced.vector_count) == (1, 1)
    for weights in (pb.FusionWeights(vector=1, bm25=0), pb.FusionWeights(vector=0, bm25=1)):
        found = await rag.retrieve("acme", "moraine deposits meltwater glacier", top_k=5, kb_ids=["kb-rep"],
                                   weights=weights)
        assert ids(found) == ["r1"], weights
    emptied = await rag.index("acme", "kb-rep", "d-rep", [], replace=True)
    assert (emptied.indexed_count, emptied.vector_count) == (0, 0)
    assert ids(await rag.retrieve("acme", "glacier", top_k=5, kb_ids=["kb-rep"])) == []


def _histogram_total(name: str) -> tuple[float, float]:
    """(observations, their sum) of a histogram in this process's registry."""
    return (REGISTRY.get_sample_value(f"{name}_count") or 0.0, REGISTRY.get_sample_value(f"{name}_sum") or 0.0)


async def test_concurrent_index_calls_are_embedded_and_written_together(rag):
    batches_before, calls_before = _histogram_total("sagemesh_rag_index_batch_calls")
    topics = ["basalt columns", "tidal bores", "sand dunes", "karst caves", "fjord depth", "geyser cycles",
              "salt flats", "coral atolls", "peat bogs", "ice shelves", "river deltas", "lava tubes"]
    replies = await asyncio.gather(*(
        rag.index("acme", "kb-many", f"d-{n}", [(f"m{n}", "", f"A field report on {topic} number {n}.", {})],
                  replace=True)
        for n, topic in enumerate(topics)))
    assert [(r.indexed_count, r.vector_count) for r in replies] == [(1, 1)] * len(topics)
    batches_after, calls_after = _histogram_total("sagemesh_rag_index_batch_calls")
    assert calls_after - calls_before == len(topics)
    # Calls that arrived while a batch was embedded went in together.
    assert batches_after - batches_before < len(topics)
    found = await rag.retrieve("acme", "karst caves field report", top_k=1, kb_ids=["kb-many"])
    assert ids(found) == ["m3"]


async def test_deleting_a_knowledge_base_removes_its_chunks_only(rag):
    await rag.index("acme", "kb-gone", "d-a", [("x1", "", "Volcanic soil suits vineyards.", {})])
    await rag.index("acme", "kb-gone", "d-b", [("x2", "", "Vineyards need sun.", {})])
    deleted = await rag.stub.DeleteKnowledgeBaseChunks(pb.DeleteKnowledgeBaseChunksRequest(tenant_id="acme", kb_id="kb-gone"))
    assert deleted.deleted_count == 2
    assert ids(await rag.retrieve("acme", "vineyards", top_k=5, kb_ids=["kb-gone"])) == []
    assert ids(await rag.retrieve("acme", "revenue", top_k=1)) == ["f1"]


@pytest.mark.parametrize(
    ("fields", "phrase"),
    [
        ({"query": ""}, "query"),
        ({"query": "x" * 2001}, "query"),
        ({"query": "revenue", "top_k": 101}, "top_k"),
        ({"query": "revenue", "weights": pb.FusionWeights(vector=-1, bm25=1)}, "weights"),
        ({"query": "revenue", "weights": pb.FusionWeights(vector=0, bm25=0)}, "positive"),
        ({"query": "revenue", "filters": [pb.MetadataFilter(field="bad field!", equals=struct_pb2.Value(string_value="x"))]}, "filters"),
        ({"query": "revenue", "filters": [pb.MetadataFilter(field="year")]}, "no condition"),
    ],
)
async def test_bad_retrieve_requests_are_invalid_argument(rag, fields, phrase):
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await rag.stub.Retrieve(pb.RetrieveRequest(**fields), metadata=rag.token_for("acme"))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert phrase in caught.value.details()


@pytest.mark.parametrize(
    ("request_fields", "phrase"),
    [
        ({"tenant_id": "", "kb_id": "k", "document_id": "d"}, "tenant_id"),
        ({"tenant_id": "t", "kb_id": "k", "document_id": "d", "chunks": [pb.Chunk(chunk_id="", text="x")]}, "chunk_id"),
        ({"tenant_id": "t", "kb_id": "k", "document_id": "d", "chunks": [pb.Chunk(chunk_id="a", text=" ")]}, "empty"),
        ({"tenant_id": "t", "kb_id": "k", "document_id": "d",
          "chunks": [pb.Chunk(chunk_id="a", text="x"), pb.Chunk(chunk_id="a", text="y")]}, "twice"),
    ],
)
async def test_bad_index_requests_are_invalid_argument_and_write_nothing(rag, request_fields, phrase):
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await rag.stub.IndexChunks(pb.IndexChunksRequest(**request_fields))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert phrase in caught.value.details()
    assert ids(await rag.retrieve("t", "x y", top_k=5)) == []


async def test_retrieve_needs_a_token(rag):
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await rag.stub.Retrieve(pb.RetrieveRequest(query="revenue"))
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_rerank_without_a_configured_reranker_is_failed_precondition(rag):
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await rag.retrieve("acme", "revenue", use_rerank=True)
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "reranker" in caught.value.details()


async def test_a_cross_encoder_reorders_the_fused_candidates(tmp_path):
    # The toy model scores a passage by its "gold" (1.0) and "silver" (0.5) tokens.
    write_model_dir(tmp_path / "model")
    passages = {"m1": "the lead mine", "m2": "gold gold silver", "m3": "a silver mine",
                "m4": "gold is gold is gold", "m5": "the gold"}
    async with serving(tmp_path / "data", reranker="cross-encoder", reranker_model_dir=tmp_path / "model",
                       rerank_candidates=10) as rag:
        await rag.index("acme", "kb", "d", [(cid, "", text, {}) for cid, text in passages.items()])
        plain = await rag.retrieve("acme", "gold", top_k=5)
        reranked = await rag.retrieve("acme", "gold", top_k=3, use_rerank=True)
    assert all(r.rerank_rank == 0 for r in plain.results) and plain.timings.rerank_ms == 0
    assert ids(reranked) == ["m4", "m2", "m5"]
    assert [r.rerank_rank for r in reranked.results] == [1, 2, 3]
    assert [r.score for r in reranked.results] == pytest.approx([3.0, 2.5, 1.0])
    # First-stage ranks survive reranking, so a caller sees how each result got there.
    assert all(r.bm25_rank or r.vector_rank for r in reranked.results)
    assert reranked.timings.rerank_ms > 0


async def test_an_index_built_by_another_embedding_model_is_refused_at_start(tmp_path):
    async with serving(tmp_path) as first:
        await first.index("acme", "kb", "d1", DOCS["d-pets"])
    # Same dimension (384), other model: its searches would return noise.
    with pytest.raises(FailedPrecondition, match="another embedding model"):
        await build(RagEngineSettings(_env_file=None, data_dir=tmp_path, embedding_model="multilingual-e5-small"))
    async with serving(tmp_path) as again:
        assert ids(await again.retrieve("acme", "How long do cats sleep?", top_k=1)) == ["p1"]


async def test_an_index_built_in_fp32_is_served_by_the_int8_model(tmp_path):
    # Quantization moves a vector less than another model would: no reindex for the faster default.
    async with serving(tmp_path, embedding_precision="fp32") as first:
        await first.index("acme", "kb", "d1", DOCS["d-pets"])
    async with serving(tmp_path, embedding_precision="int8") as again:
        vector_only = await again.retrieve("acme", "How long do cats sleep?", top_k=1,
                                           weights=pb.FusionWeights(vector=1, bm25=0))
        assert ids(vector_only) == ["p1"]


async def test_an_embedding_endpoint_that_is_down_does_not_keep_the_index_from_starting(tmp_path):
    async with serving(tmp_path) as first:
        await first.index("acme", "kb", "d1", DOCS["d-pets"])
    endpoint = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    async with serving(tmp_path, embedding_model="openai", embedding_url=endpoint, embedding_api_model="e5",
                       embedding_dimension=384, embedding_timeout_seconds=2) as degraded:
        bm25_only = await degraded.retrieve("acme", "cats sleep", top_k=1, weights=pb.FusionWeights(vector=0, bm25=1))
        assert ids(bm25_only) == ["p1"]
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await degraded.retrieve("acme", "cats sleep", top_k=1)
        assert failure.value.code() == grpc.StatusCode.UNAVAILABLE
