"""The real indexes: the local vector index, Milvus Lite and tantivy, on disk in a temporary folder,
and Elasticsearch (noida-db standing in for it). Every test_bm25_* test runs on
both keyword backends. Vectors are given explicitly here: these tests are about
the indexes, not a model."""

from __future__ import annotations

import asyncio
import logging
import sys
import uuid
from contextlib import asynccontextmanager

import numpy as np
import pytest
from elasticsearch import AsyncElasticsearch

from meshkit.errors import Unavailable
from services.rag_engine.bm25_elasticsearch import ElasticsearchKeywordIndex
from services.rag_engine.bm25_tantivy import TantivyKeywordIndex
from services.rag_engine.domain import Chunk, DocumentKey, Scope
from services.rag_engine.filters import AnyOf, Equals, Range
from services.rag_engine import vector_milvus
from services.rag_engine.vector_local import LocalVectorIndex
from services.rag_engine.vector_milvus import MilvusVectorIndex
from tests.conftest import free_port

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


@pytest.fixture(params=["local", "lite", "server"])
async def vectors(request, tmp_path):
    """Every vector test runs on the local index, on Milvus Lite and on a real
    Milvus server, there in a collection of its own, dropped at the end."""
    if request.param == "local":
        index = LocalVectorIndex(tmp_path / "vectors", DIMENSION)
    elif request.param == "lite":
        index = MilvusVectorIndex(str(tmp_path / "milvus.db"), DIMENSION)
    else:
        # Requested here, not as a parameter, so Lite-only runs start no server.
        index = MilvusVectorIndex(request.getfixturevalue("milvus_server_url"), DIMENSION,
                                  collection=f"test_chunks_{uuid.uuid4().hex}")
    try:
        await index.upsert(CHUNKS, [unit(i) for i in range(len(CHUNKS))])
        yield index
    finally:
        if request.param == "server":
            index.client.drop_collection(index.collection)
        await index.close()


@asynccontextmanager
async def elasticsearch_indexes(url: str):
    """Opens clients on one fresh index name; drops the index at the end."""
    name = f"test-chunks-{uuid.uuid4().hex}"
    opened: list[ElasticsearchKeywordIndex] = []

    def open_index() -> ElasticsearchKeywordIndex:
        opened.append(ElasticsearchKeywordIndex(url, name))
        return opened[-1]

    try:
        yield open_index
    finally:
        for index in opened:
            await index.close()
        async with AsyncElasticsearch(url) as admin:
            await admin.indices.delete(index=name, ignore_unavailable=True)


@pytest.fixture(params=["tantivy", "elasticsearch"])
async def keywords(request, tmp_path):
    if request.param == "tantivy":
        index = TantivyKeywordIndex(tmp_path / "bm25")
        await index.upsert(CHUNKS)
        yield index
        await index.close()
    else:
        # Requested here, not as a parameter, so tantivy-only runs start no server.
        url = request.getfixturevalue("elasticsearch_url")
        async with elasticsearch_indexes(url) as open_index:
            index = open_index()
            await index.upsert(CHUNKS)
            yield index


@pytest.fixture
async def open_elasticsearch(elasticsearch_url):
    async with elasticsearch_indexes(elasticsearch_url) as open_index:
        yield open_index


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
    # Another tenant's chunk id never passes, whatever its metadata.
    assert await vectors.passing("t1", ["c1", "c2", "c3", "c4"], [Range("year", gt=2022)]) == {"c1", "c3"}
    assert await vectors.passing("t1", ["c1", "c2"], [Equals("lang", "en"), Equals("year", 2021)]) == {"c2"}


async def test_fetch_is_scoped_by_tenant_and_records_round_trip(vectors):
    records = await vectors.fetch("t1", ["c1", "c4"])
    assert set(records) == {"c1"}  # c4 belongs to t2
    assert records["c1"].text == "quarterly revenue grew strongly"
    assert records["c1"].metadata == {"year": "2023", "lang": "en"}


async def test_the_same_chunk_id_in_two_tenants_stays_two_chunks(vectors):
    await vectors.upsert([chunk("t2", "kb9", "d9", "c1", "t2's own c1")], [unit(42)])
    assert (await vectors.fetch("t1", ["c1"]))["c1"].text == "quarterly revenue grew strongly"
    assert (await vectors.fetch("t2", ["c1"]))["c1"].text == "t2's own c1"


async def test_long_non_ascii_fields_are_cut_to_the_byte_limits(vectors):
    """A Milvus server counts VARCHAR lengths in UTF-8 bytes (Lite counts
    characters): text, title and headings are cut by bytes, between characters."""
    long = Chunk("t1", "kb1", "d1", "c9", "北京大学" * 6000, title="标题" * 400,
                 headings=("第一章", "节" * 400))
    await vectors.upsert([long], [unit(9)])
    stored = (await vectors.fetch("t1", ["c9"]))["c9"]
    assert stored.text == long.text[:21_845]  # 65,535 bytes of 3-byte characters
    assert stored.title == long.title[:333]  # 999 bytes: a 334th character would pass 1,000
    assert stored.headings == ("第一章", "节" * 333)


async def test_upsert_replaces_and_delete_removes(vectors):
    await vectors.upsert([chunk("t1", "kb1", "d1", "c1", "rewritten")], [unit(7)])
    assert (await vectors.fetch("t1", ["c1"]))["c1"].text == "rewritten"
    assert await vectors.count("t1", "kb1", "d1") == 2
    assert await vectors.delete_document("t1", "kb1", "d1") == 2
    assert await vectors.count("t1", "kb1", "d1") == 0
    assert await vectors.delete_knowledge_base("t1", "kb2") == 1
    assert (await vectors.fetch("t2", ["c4"]))  # another tenant untouched


async def test_upsert_replacing_a_document_removes_its_other_chunks_only(vectors):
    # d1 holds c1 and c2; t2's d9 and t1's d2 must not be touched.
    await vectors.upsert([chunk("t1", "kb1", "d1", "c5", "the new version")], [unit(8)],
                         replacing=[DocumentKey("t1", "kb1", "d1"), DocumentKey("t1", "kb1", "never-indexed")])
    assert await vectors.count("t1", "kb1", "d1") == 1
    assert set(await vectors.fetch("t1", ["c1", "c2", "c5"])) == {"c5"}
    assert await vectors.count("t1", "kb2", "d2") == 1
    assert await vectors.fetch("t2", ["c4"])


async def test_bm25_upsert_replacing_a_document_removes_its_other_chunks_only(keywords):
    await keywords.upsert([chunk("t1", "kb1", "d1", "c5", "the cat chased revenue")],
                          replacing=[DocumentKey("t1", "kb1", "d1")])
    assert [cid for cid, _ in await keywords.search("revenue cat", Scope("t1", ("kb1",)), 10)] == ["c5"]
    assert [cid for cid, _ in await keywords.search("revenue", Scope("t2"), 10)] == ["c4"]
    # With no chunks it deletes.
    await keywords.upsert([], replacing=[DocumentKey("t1", "kb1", "d1")])
    assert await keywords.search("cat revenue", Scope("t1", ("kb1",)), 10) == []
    assert [cid for cid, _ in await keywords.search("大学收入", Scope("t1"), 10)] == ["c3"]


async def test_bm25_ranks_matching_text_within_the_tenant(keywords):
    hits = await keywords.search("revenue growth", Scope("t1"), 10)
    assert [cid for cid, _ in hits] == ["c1"]
    assert await keywords.search("revenue", Scope("t2"), 10) == [("c4", pytest.approx(hits[0][1], rel=1))]
    chinese = await keywords.search("大学收入", Scope("t1"), 10)
    assert [cid for cid, _ in chinese] == ["c3"]


async def test_bm25_kb_scope_and_deletes(keywords):
    assert await keywords.search("revenue", Scope("t1", ("kb2",)), 10) == []
    await keywords.upsert([chunk("t1", "kb1", "d1", "c2", "revenue now mentioned")])
    assert {cid for cid, _ in await keywords.search("revenue", Scope("t1"), 10)} == {"c1", "c2"}
    await keywords.delete_document("t1", "kb1", "d1")
    assert await keywords.search("revenue", Scope("t1"), 10) == []
    assert [cid for cid, _ in await keywords.search("revenue", Scope("t2"), 10)] == ["c4"]


async def test_milvus_lite_file_is_free_for_another_process_after_close(tmp_path):
    """Lite serves its file from the process that opened it, and locks it:
    closing the index must stop that, or a restarted server cannot open it."""
    path = tmp_path / "milvus.db"
    index = MilvusVectorIndex(str(path), DIMENSION)
    await index.upsert(CHUNKS[:1], [unit(0)])
    await index.close()
    reader = (
        "import sys; from pymilvus import MilvusClient; "
        "c = MilvusClient(sys.argv[1]); c.load_collection('sagemesh_chunks'); "
        "print(len(c.query('sagemesh_chunks', filter='chunk_id != \"\"', output_fields=['chunk_id'])))"
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", reader, str(path),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, stderr.decode()[-2000:]
    assert stdout.split()[-1] == b"1"


async def test_milvus_lite_logs_nothing_alarming_in_normal_use(tmp_path, caplog):
    """What Lite lacks and pymilvus tolerates must not read as errors in the log."""
    caplog.set_level(logging.INFO)
    index = MilvusVectorIndex(str(tmp_path / "milvus.db"), DIMENSION)
    try:
        await index.upsert(CHUNKS, [unit(i) for i in range(len(CHUNKS))])
        hits = await index.search(unit(0), Scope("t1"), [Equals("lang", "en")], 10)
        assert {cid for cid, _ in hits} == {"c1", "c2"}
    finally:
        await index.close()
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []


async def test_a_collection_of_another_dimension_is_refused(tmp_path):
    index = MilvusVectorIndex(str(tmp_path / "milvus.db"), DIMENSION)
    await index.close()
    with pytest.raises(ValueError, match="holds 16-dimensional vectors, but the embedding model makes 8"):
        MilvusVectorIndex(str(tmp_path / "milvus.db"), 8)


async def test_milvus_lite_flushes_writes_once_they_pause(tmp_path, monkeypatch):
    """Unflushed rows make every Lite read slow: a pause in writing flushes
    them to a data file, and the rows stay as they were."""
    monkeypatch.setattr(vector_milvus, "LITE_FLUSH_DELAY_SECONDS", 0.2)
    path = tmp_path / "milvus.db"
    index = MilvusVectorIndex(str(path), DIMENSION)
    try:
        await index.upsert(CHUNKS, [unit(i) for i in range(len(CHUNKS))])
        assert not list(path.rglob("*.parquet"))
        await asyncio.sleep(1.0)
        assert list(path.rglob("*.parquet"))
        hits = await index.search(unit(0), Scope("t1"), [], 10)
        assert hits[0][0] == "c1" and {cid for cid, _ in hits} == {"c1", "c2", "c3"}
    finally:
        await index.close()


async def test_bm25_survives_a_reopen(tmp_path):
    first = TantivyKeywordIndex(tmp_path / "bm25")
    await first.upsert(CHUNKS)
    await first.close()
    second = TantivyKeywordIndex(tmp_path / "bm25")
    try:
        assert [cid for cid, _ in await second.search("cat mat", Scope("t1"), 5)] == ["c2"]
    finally:
        await second.close()


async def test_bm25_reindexing_replaces_and_tenants_stay_apart(keywords):
    await keywords.upsert([chunk("t1", "kb1", "d1", "c1", "the dog barked loudly")])
    assert await keywords.search("quarterly", Scope("t1"), 10) == []
    assert [cid for cid, _ in await keywords.search("dogs barking", Scope("t1"), 10)] == ["c1"]
    # t2's own c1 is a different chunk: it neither replaces nor leaks into t1's.
    await keywords.upsert([chunk("t2", "kb9", "d9", "c1", "a parrot talked")])
    assert await keywords.search("parrot", Scope("t1"), 10) == []
    assert [cid for cid, _ in await keywords.search("dog", Scope("t1"), 10)] == ["c1"]
    assert [cid for cid, _ in await keywords.search("parrot", Scope("t2"), 10)] == ["c1"]


async def test_elasticsearch_replaces_by_id_and_segments_chinese(open_elasticsearch):
    index = open_elasticsearch()
    await index.upsert(CHUNKS)
    await index.upsert([
        chunk("t1", "kb2", "d2", "c3", "机器学习模型的训练需要大量数据"),
        chunk("t1", "kb2", "d2", "c5", "北京大学的图书馆很大"),
    ])
    # One Elasticsearch document per (tenant, chunk): the re-index replaced c3.
    count = await index.client.count(index=index.index_name, query={"term": {"chunk_id": "c3"}})
    assert count["count"] == 1
    assert await index.search("研究报告", Scope("t1"), 10) == []
    assert [cid for cid, _ in await index.search("机器学习", Scope("t1"), 10)] == ["c3"]
    in_kb2 = await index.search("训练数据", Scope("t1", ("kb2",)), 10)
    assert [cid for cid, _ in in_kb2] == ["c3"]
    # Search-mode segmentation indexes 大学 inside 北京大学.
    assert [cid for cid, _ in await index.search("大学图书馆", Scope("t1"), 10)] == ["c5"]


async def test_elasticsearch_is_shared_by_every_client_of_the_index(open_elasticsearch):
    """Elasticsearch's counterpart of the reopen test: a second replica's client
    sees what the first wrote, and finds the index already there."""
    first, second = open_elasticsearch(), open_elasticsearch()
    await first.upsert(CHUNKS)
    await first.close()
    assert [cid for cid, _ in await second.search("cat mat", Scope("t1"), 5)] == ["c2"]
    await second.delete_knowledge_base("t1", "kb1")
    assert await second.search("cat mat", Scope("t1"), 5) == []


async def test_elasticsearch_unreachable_is_unavailable():
    index = ElasticsearchKeywordIndex(f"http://127.0.0.1:{free_port()}", max_retries=0)
    try:
        with pytest.raises(Unavailable):
            await index.search("revenue", Scope("t1"), 10)
        with pytest.raises(Unavailable):
            await index.upsert(CHUNKS)
    finally:
        await index.close()
