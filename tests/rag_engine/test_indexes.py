"""The two real indexes: Milvus Lite and tantivy, on disk in a temporary folder.
Vectors are given explicitly here: these tests are about the indexes, not a model."""

from __future__ import annotations

import numpy as np
import pytest

from services.rag_engine.bm25_tantivy import TantivyKeywordIndex
from services.rag_engine.domain import Chunk, Scope
from services.rag_engine.filters import AnyOf, Equals, Range
from services.rag_engine.vector_milvus import MilvusVectorIndex

DIMENSION = 16


def unit(seed: int) -> list[float]:
    vector = np.random.default_rng(seed).normal(size=DIMENSION)
    return (vector / np.linalg.norm(vector)).tolist()


def chunk(tenant: str, kb: str, doc: str, cid: str, text: str, **metadata) -> Chunk:
    return Chunk(tenant, kb, doc, cid, text, title=f"title {cid}", metadata=metadata)


CHUNKS = [
    chunk("t1", "kb1", "d1", "c1", "quarterly revenue grew strongly", year="2023", lang="en"),
    chunk("t1", "kb1", "d1", "c2", "the cat sat on the mat", year="2021", lang="en"),
    chunk("t1", "kb2", "d2", "c3", "北京大学 研究 报告 收入 增长", year="2024", lang="zh"),
    chunk("t2", "kb9", "d9", "c4", "quarterly revenue of another tenant", year="2023", lang="en"),
]


@pytest.fixture
async def vectors(tmp_path):
    index = MilvusVectorIndex(str(tmp_path / "milvus.db"), DIMENSION)
    await index.upsert(CHUNKS, [unit(i) for i in range(len(CHUNKS))])
    yield index
    await index.close()


@pytest.fixture
async def keywords(tmp_path):
    index = TantivyKeywordIndex(tmp_path / "bm25")
    await index.upsert(CHUNKS)
    yield index
    await index.close()


async def test_vector_search_finds_the_nearest_within_the_tenant(vectors):
    hits = await vectors.search(unit(0), Scope("t1"), [], 10)
    assert hits[0][0] == "c1" and hits[0][1] == pytest.approx(1.0, abs=1e-4)
    assert {chunk_id for chunk_id, _ in hits} == {"c1", "c2", "c3"}
    other = await vectors.search(unit(3), Scope("t1"), [], 10)
    assert "c4" not in {chunk_id for chunk_id, _ in other}


async def test_vector_filters_and_kb_scope(vectors):
    async def ids(scope, filters):
        return {cid for cid, _ in await vectors.search(unit(0), scope, filters, 10)}

    assert await ids(Scope("t1", ("kb2",)), []) == {"c3"}
    assert await ids(Scope("t1"), [Equals("year", 2023)]) == {"c1"}
    assert await ids(Scope("t1"), [AnyOf("lang", ("zh", "fr"))]) == {"c3"}
    assert await ids(Scope("t1"), [Range("year", gte=2021, lt=2024)]) == {"c1", "c2"}
    assert await vectors.matching_ids(Scope("t1"), [Range("year", gt=2022)]) == {"c1", "c3"}


async def test_fetch_is_scoped_by_tenant_and_records_round_trip(vectors):
    records = await vectors.fetch("t1", ["c1", "c4"])
    assert set(records) == {"c1"}  # c4 belongs to t2
    assert records["c1"].text == "quarterly revenue grew strongly"
    assert records["c1"].metadata == {"year": "2023", "lang": "en"}


async def test_the_same_chunk_id_in_two_tenants_stays_two_chunks(vectors):
    await vectors.upsert([chunk("t2", "kb9", "d9", "c1", "t2's own c1")], [unit(42)])
    assert (await vectors.fetch("t1", ["c1"]))["c1"].text == "quarterly revenue grew strongly"
    assert (await vectors.fetch("t2", ["c1"]))["c1"].text == "t2's own c1"


async def test_upsert_replaces_and_delete_removes(vectors):
    await vectors.upsert([chunk("t1", "kb1", "d1", "c1", "rewritten")], [unit(7)])
    assert (await vectors.fetch("t1", ["c1"]))["c1"].text == "rewritten"
    assert await vectors.count("t1", "kb1", "d1") == 2
    assert await vectors.delete_document("t1", "kb1", "d1") == 2
    assert await vectors.count("t1", "kb1", "d1") == 0
    assert await vectors.delete_knowledge_base("t1", "kb2") == 1
    assert (await vectors.fetch("t2", ["c4"]))  # another tenant untouched


async def test_bm25_ranks_matching_text_within_the_tenant(keywords):
    hits = await keywords.search("revenue growth", Scope("t1"), 10)
    assert [cid for cid, _ in hits] == ["c1"]
    assert await keywords.search("revenue", Scope("t2"), 10) == [("c4", pytest.approx(hits[0][1], rel=1))]
    chinese = await keywords.search("大学收入", Scope("t1"), 10)
    assert [cid for cid, _ in chinese] == ["c3"]


async def test_bm25_restriction_kb_scope_and_deletes(keywords):
    assert await keywords.search("revenue", Scope("t1"), 10, restrict_to={"c2"}) == []
    assert await keywords.search("revenue", Scope("t1"), 10, restrict_to=set()) == []
    assert await keywords.search("revenue", Scope("t1", ("kb2",)), 10) == []
    await keywords.upsert([chunk("t1", "kb1", "d1", "c2", "revenue now mentioned")])
    assert {cid for cid, _ in await keywords.search("revenue", Scope("t1"), 10)} == {"c1", "c2"}
    await keywords.delete_document("t1", "kb1", "d1")
    assert await keywords.search("revenue", Scope("t1"), 10) == []
    assert [cid for cid, _ in await keywords.search("revenue", Scope("t2"), 10)] == ["c4"]


async def test_bm25_survives_a_reopen(tmp_path):
    first = TantivyKeywordIndex(tmp_path / "bm25")
    await first.upsert(CHUNKS)
    await first.close()
    second = TantivyKeywordIndex(tmp_path / "bm25")
    try:
        assert [cid for cid, _ in await second.search("cat mat", Scope("t1"), 5)] == ["c2"]
    finally:
        await second.close()
