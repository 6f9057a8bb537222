"""The local vector index beyond the protocol tests of test_indexes.py:
filters applied before the search, tenant isolation, HNSW recall, the
attribute selection against filters.matches_all, snapshots and what a start
does with them, and a kill -9 in the middle of writing."""

from __future__ import annotations

import asyncio
import json
import signal
import sqlite3
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from meshkit.errors import FailedPrecondition
from services.rag_engine.ann import UnusableSnapshot
from services.rag_engine.ann_faiss import FaissHnsw
from services.rag_engine.attributes import Attributes
from services.rag_engine.domain import Chunk, DocumentKey, Scope
from services.rag_engine.filters import AnyOf, Equals, Range, matches_all, typed
from services.rag_engine.search_plan import SearchPlanner
from services.rag_engine.server import vector_index
from services.rag_engine.settings import RagEngineSettings
from services.rag_engine.vector_local import LocalIndexOptions, LocalVectorIndex, StartUp, normalised
from services.rag_engine.vector_milvus import MilvusVectorIndex

ROOT = Path(__file__).resolve().parents[2]
DIMENSION = 32
# HNSW whatever the selection: for the tests that are about the graph walk.
ALWAYS_HNSW = LocalIndexOptions(planner=SearchPlanner(exact_max_rows=0, exact_below_share=0.0))


def clustered(count: int, dimension: int = DIMENSION, clusters: int = 40, seed: int = 0) -> np.ndarray:
    """Normalised vectors around random centres: nearest neighbours that are
    close to one another, as real embeddings have, which is what makes HNSW work hard."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, dimension))
    points = centres[rng.integers(clusters, size=count)] + 0.35 * rng.normal(size=(count, dimension))
    return normalised(points)


def rows(count: int, tenant: str = "t1", kb: str = "kb1", prefix: str = "c") -> list[Chunk]:
    return [Chunk(tenant, kb, f"d{i % 50}", f"{prefix}{i}", f"text {i}",
                  metadata={"group": str(i % 100), "year": str(2000 + i % 25)}) for i in range(count)]


async def until_indexed(index: LocalVectorIndex) -> None:
    for _ in range(600):
        if not index.unindexed_rows:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{index.unindexed_rows} rows still unindexed after 30 s")


def exact_top(vectors: np.ndarray, query: np.ndarray, candidates: np.ndarray, k: int) -> list[int]:
    similarities = vectors[candidates] @ query
    return candidates[np.argsort(-similarities, kind="stable")[:k]].tolist()


@pytest.fixture
async def filled(tmp_path):
    vectors = clustered(3000)
    chunks = rows(3000)
    index = LocalVectorIndex(tmp_path / "vectors", DIMENSION)
    await index.upsert(chunks, vectors.tolist())
    yield index, chunks, vectors
    await index.close()


async def test_a_selective_filter_still_gets_its_full_top_k(filled):
    """1 % of the rows pass: the ten nearest of those come back, exactly, whether
    the rows are still unindexed or in the ANN index."""
    index, chunks, vectors = filled
    one_group = [Equals("group", 7)]
    # "7" is text, and stored 7 a number: only groups 8 and 9 pass, and of those only 2008.
    narrower = [AnyOf("group", ("7", 8, 9.0)), Range("year", gte=2005, lt=2009)]

    def passing(filters) -> np.ndarray:
        return np.array([i for i, c in enumerate(chunks)
                         if matches_all(filters, {k: typed(v) for k, v in c.metadata.items()})])

    queries = clustered(20, seed=1)
    for moment in ("unindexed", "indexed"):
        if moment == "indexed":
            await until_indexed(index)
            assert index.indexed_rows == 3000
        for query in queries:
            allowed = passing(one_group)
            hits = await index.search(query.tolist(), Scope("t1"), one_group, 10)
            assert [cid for cid, _ in hits] == [f"c{i}" for i in exact_top(vectors, query, allowed, 10)], moment
            assert [s for _, s in hits] == pytest.approx(sorted((vectors[allowed] @ query).tolist())[::-1][:10],
                                                          abs=1e-5)
            allowed = passing(narrower)
            hits = await index.search(query.tolist(), Scope("t1"), narrower, 100)
            assert [cid for cid, _ in hits] == [f"c{i}" for i in exact_top(vectors, query, allowed, 100)], moment
            assert len(hits) == len(allowed) == 30


@pytest.mark.parametrize("options", [LocalIndexOptions(), ALWAYS_HNSW], ids=["planned", "hnsw"])
async def test_a_tenant_never_sees_another_tenants_rows(tmp_path, options):
    index = LocalVectorIndex(tmp_path / "vectors", DIMENSION, options=options)
    try:
        vectors = clustered(600)
        # t2 holds the very vectors t1 holds and more, under the same chunk ids.
        await index.upsert(rows(300, "t1"), vectors[:300].tolist())
        await index.upsert(rows(600, "t2"), vectors.tolist())
        await index.upsert(rows(50, "t1", kb="kb2", prefix="k"), vectors[300:350].tolist())
        for moment in ("unindexed", "indexed"):
            if moment == "indexed":
                await until_indexed(index)
            for i in (0, 10, 320, 500):
                hits = await index.search(vectors[i].tolist(), Scope("t1"), [], 50)
                ids = {cid for cid, _ in hits}
                assert len(hits) == 50 and ids <= {f"c{j}" for j in range(300)} | {f"k{j}" for j in range(50)}
                in_kb2 = {cid for cid, _ in await index.search(vectors[i].tolist(), Scope("t1", ("kb2",)), [], 100)}
                assert in_kb2 <= {f"k{j}" for j in range(50)}
                # A graph walk may miss some of 4 % of the rows; the planner sends them to an exact search.
                assert len(in_kb2) == 50 if options is not ALWAYS_HNSW else in_kb2
            assert await index.search(vectors[0].tolist(), Scope("t3"), [], 10) == []
            assert await index.search(vectors[0].tolist(), Scope("t1", ("kb9",)), [], 10) == []
        assert await index.passing("t1", ["c500", "c5", "k1"], []) == {"c5", "k1"}
        assert set(await index.fetch("t1", ["c500", "c5"])) == {"c5"}
    finally:
        await index.close()


async def test_hnsw_recall_at_10_against_exact_search(tmp_path):
    vectors = clustered(4000, dimension=64, clusters=64, seed=3)
    index = LocalVectorIndex(tmp_path / "vectors", 64, options=ALWAYS_HNSW)
    try:
        await index.upsert(rows(4000), vectors.tolist())
        await until_indexed(index)
        queries = clustered(100, dimension=64, clusters=64, seed=4)
        everything = np.arange(4000)
        half = np.array([i for i in range(4000) if i % 100 < 50])
        found = found_half = 0
        for query in queries:
            hits = await index.search(query.tolist(), Scope("t1"), [], 10)
            found += len({cid for cid, _ in hits} & {f"c{i}" for i in exact_top(vectors, query, everything, 10)})
            hits = await index.search(query.tolist(), Scope("t1"), [Range("group", lt=50)], 10)
            found_half += len({cid for cid, _ in hits} & {f"c{i}" for i in exact_top(vectors, query, half, 10)})
        assert found / 1000 >= 0.98
        assert found_half / 1000 >= 0.98
    finally:
        await index.close()


def test_the_planner_searches_few_passing_rows_exactly():
    planner = SearchPlanner(ef=128, wide_ef=512)
    assert planner.plan(10_000, 1_000_000, 100).exact
    assert planner.plan(90_000, 1_000_000, 100).exact
    assert planner.plan(150_000, 1_000_000, 100) == planner.plan(150_000, 1_000_000, 100)
    assert not planner.plan(150_000, 1_000_000, 100).exact and planner.plan(150_000, 1_000_000, 100).ef == 512
    assert planner.plan(500_000, 1_000_000, 100).ef == 128
    assert planner.plan(500_000, 1_000_000, 1000).ef == 1000


def random_metadata(rng) -> dict:
    """typed() values: of text as chunks carry it, and numbers as they are
    (a number typed() keeps whole, 2**60 + 1, which float64 rounds)."""
    values = ["2023", "2023.0", "1e3", "-4", "0.5", "en", "zh", "", "true", "NaN", "inf", "1",
              str(2**60), "7", "007", 2**60 + 1, 2**60, 1, 0.5]
    keys = ["year", "lang", "n"]
    return {key: typed(values[rng.integers(len(values))]) for key in keys if rng.random() < 0.7}


def random_filter(rng):
    field = str(rng.choice(["year", "lang", "n", "absent"]))
    values = [2023, 2023.0, "2023", 1000, -4, 0.5, "en", "zh", "", "true", True, 7, "007", 2**60, 2**60 + 1,
              float(2**60), float("nan"), None]
    kind = rng.integers(3)
    if kind == 0:
        return Equals(field, values[rng.integers(len(values))])
    if kind == 1:
        return AnyOf(field, tuple(values[i] for i in rng.integers(len(values), size=rng.integers(1, 4))))
    bounds = [None, None, -4, 0, 0.5, 7, 2023, 1000.5, 2**60, 2**60 + 1]
    pick = lambda: bounds[rng.integers(len(bounds))]  # noqa: E731
    return Range(field, gt=pick(), gte=pick(), lt=pick(), lte=pick())


def test_the_selection_gives_the_answers_of_matches_all():
    rng = np.random.default_rng(11)
    attributes = Attributes()
    stored = {}
    for rid in range(1, 401):
        tenant, kb = ("t1", "t2")[rid % 2 == 0 and rid % 3 == 0], ("kb1", "kb2")[rid % 5 == 0]
        metadata = random_metadata(rng)
        stored[rid] = (tenant, kb, metadata)
        attributes.add([(rid, tenant, kb, metadata)])
    deleted = list(range(1, 401, 7))
    attributes.remove(deleted)
    checked = 0
    for _ in range(400):
        filters = [random_filter(rng) for _ in range(rng.integers(1, 3))]
        scope = Scope("t1", ("kb2",) if rng.random() < 0.5 else ())
        expected = {rid for rid, (tenant, kb, metadata) in stored.items()
                    if tenant == "t1" and (not scope.kb_ids or kb in scope.kb_ids) and rid not in deleted
                    and matches_all(filters, metadata)}
        assert set(attributes.select(scope, filters).tolist()) == expected, filters
        checked += len(expected)
    assert checked > 1000  # the filters did let rows through


async def test_replaced_and_deleted_rows_never_take_a_place(tmp_path):
    """Their rows stay in the graph as tombstones: every selection leaves them out."""
    vectors = clustered(400)
    index = LocalVectorIndex(tmp_path / "vectors", DIMENSION)
    try:
        await index.upsert(rows(200), vectors[:200].tolist())
        await until_indexed(index)
        await index.upsert([Chunk("t1", "kb1", "d1", "c1", "moved")], vectors[200:201].tolist(),
                           replacing=[DocumentKey("t1", "kb1", "d1")])
        await index.upsert(rows(100, prefix="e"), vectors[300:].tolist())  # c0..c99 again, as e0..e99
        assert await index.delete_document("t1", "kb1", "d2") == 6
        # d1's four chunks became one; e0..e99 joined; d2's four c and two e chunks went.
        live = 200 - 4 + 1 + 100 - 6
        for moment in ("unindexed", "indexed"):
            if moment == "indexed":
                await until_indexed(index)
            everything = await index.search(vectors[51].tolist(), Scope("t1"), [], 1000)
            assert len(everything) == live and "c51" not in {cid for cid, _ in everything}
            near = await index.search(vectors[51].tolist(), Scope("t1"), [], 10)
            assert len(near) == 10 and near == everything[:10]
            assert (await index.search(vectors[200].tolist(), Scope("t1"), [], 1))[0] == ("c1", pytest.approx(1.0))
    finally:
        await index.close()


async def test_rows_survive_a_close_and_reopen(tmp_path):
    vectors = clustered(500)
    first = LocalVectorIndex(tmp_path / "vectors", DIMENSION)
    await first.upsert(rows(500), vectors.tolist())
    await until_indexed(first)
    assert await first.delete_document("t1", "kb1", "d3") == 10
    await first.close()
    assert len(list((tmp_path / "vectors").glob("hnsw-*.faiss"))) == 1
    again = LocalVectorIndex(tmp_path / "vectors", DIMENSION)
    try:
        assert again.start_up == StartUp(chunks=490, from_snapshot=500, to_add=0)
        assert await again.count("t1", "kb1", "d3") == 0 and await again.count("t1", "kb1", "d4") == 10
        hits = await again.search(vectors[4].tolist(), Scope("t1"), [], 3)
        assert hits[0] == ("c4", pytest.approx(1.0, abs=1e-5))
        assert "c3" not in {cid for cid, _ in await again.search(vectors[3].tolist(), Scope("t1"), [], 20)}
        assert (await again.fetch("t1", ["c4"]))["c4"].metadata == {"group": "4", "year": "2004"}
    finally:
        await again.close()


async def test_a_stale_snapshot_is_caught_up_at_start(tmp_path):
    vectors = clustered(700)
    directory = tmp_path / "vectors"
    first = LocalVectorIndex(directory, DIMENSION)
    await first.upsert(rows(400), vectors[:400].tolist())
    await until_indexed(first)
    await first.close()
    (snapshot,) = directory.glob("hnsw-*.faiss")
    stale = snapshot.read_bytes()
    second = LocalVectorIndex(directory, DIMENSION)
    later = [Chunk("t1", "kb1", "new", f"n{i}", f"new {i}") for i in range(300)]
    await second.upsert(later, vectors[400:].tolist(), replacing=[DocumentKey("t1", "kb1", "d1")])
    await until_indexed(second)
    await second.close()
    # As if killed after those writes committed, before any snapshot held them.
    snapshot.write_bytes(stale)
    third = LocalVectorIndex(directory, DIMENSION)
    try:
        assert third.start_up == StartUp(chunks=692, from_snapshot=400, to_add=300)
        assert (await third.search(vectors[650].tolist(), Scope("t1"), [], 1))[0][0] == "n250"
        # d1's chunks went with the replacing write: the snapshot still holds them, no search returns them.
        near_d1 = await third.search(vectors[1].tolist(), Scope("t1"), [], 50)
        assert not {cid for cid, _ in near_d1} & {f"c{i}" for i in range(1, 400, 50)}
        assert len(near_d1) == 50  # nor do they take a place
        await until_indexed(third)
        assert third.indexed_rows == 700
        assert (await third.search(vectors[650].tolist(), Scope("t1"), [], 1))[0][0] == "n250"
    finally:
        await third.close()


@pytest.mark.parametrize("damage", ["garbage", "truncated", "missing"])
async def test_an_unusable_snapshot_is_rebuilt(tmp_path, damage, caplog):
    vectors = clustered(300)
    directory = tmp_path / "vectors"
    first = LocalVectorIndex(directory, DIMENSION)
    await first.upsert(rows(300), vectors.tolist())
    await until_indexed(first)
    await first.close()
    (snapshot,) = directory.glob("hnsw-*.faiss")
    if damage == "garbage":
        snapshot.write_bytes(b"\x00not a faiss index" * 100)
    elif damage == "truncated":
        snapshot.write_bytes(snapshot.read_bytes()[:len(snapshot.read_bytes()) // 2])
    else:
        snapshot.unlink()
    again = LocalVectorIndex(directory, DIMENSION)
    try:
        assert again.start_up == StartUp(chunks=300, from_snapshot=0, to_add=300)
        assert (await again.search(vectors[42].tolist(), Scope("t1"), [], 1))[0][0] == "c42"
        await until_indexed(again)
        assert (await again.search(vectors[42].tolist(), Scope("t1"), [], 1))[0][0] == "c42"
    finally:
        await again.close()
    assert FaissHnsw().load(snapshot, DIMENSION).size == 300
    if damage != "missing":
        assert "rebuilding the vector index's ANN snapshot" in caplog.text


def test_a_snapshot_of_another_dimension_is_unusable(tmp_path):
    ann = FaissHnsw().new(8)
    ann.add(np.arange(1, 4), normalised(np.ones((3, 8))))
    ann.save(tmp_path / "hnsw.faiss")
    assert FaissHnsw().load(tmp_path / "hnsw.faiss", 8).max_id == 3
    with pytest.raises(UnusableSnapshot, match="8-dimensional"):
        FaissHnsw().load(tmp_path / "hnsw.faiss", 16)


async def test_vectors_of_another_model_are_refused(tmp_path, caplog):
    index = LocalVectorIndex(tmp_path / "vectors", DIMENSION, model="all-minilm-l6-v2")
    try:
        with pytest.raises(ValueError, match="8-dimensional vectors for an index of 32"):
            await index.upsert(rows(2), clustered(2, dimension=8).tolist())
        with pytest.raises(ValueError, match="8-dimensional"):
            await index.search([0.1] * 8, Scope("t1"), [], 5)
        assert await index.any_record() is None
        await index.upsert(rows(2), clustered(2).tolist())
        chunk, vector = await index.any_record()
        assert chunk.chunk_id == "c0" and vector == pytest.approx(clustered(2)[0].tolist())
    finally:
        await index.close()
    with pytest.raises(ValueError, match="holds 32-dimensional vectors, but the embedding model makes 16"):
        LocalVectorIndex(tmp_path / "vectors", 16)
    # Another name is only noted: the engine's check_stored_vectors embeds a chunk again to tell
    # (tests/rag_engine/test_service.py), since an endpoint can serve the same model under another name.
    LocalVectorIndex(tmp_path / "vectors", DIMENSION, model="openai:minilm").close_sync()
    assert "built by the embedding model 'all-minilm-l6-v2', now served by 'openai:minilm'" in caplog.text
    # A refusal releases the directory.
    LocalVectorIndex(tmp_path / "vectors", DIMENSION, model="all-minilm-l6-v2").close_sync()


async def test_one_process_at_a_time(tmp_path):
    index = LocalVectorIndex(tmp_path / "vectors", DIMENSION)
    try:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-c",
            "import sys; from pathlib import Path; from services.rag_engine.vector_local import LocalVectorIndex; "
            "LocalVectorIndex(Path(sys.argv[1]), 32)", str(tmp_path / "vectors"),
            cwd=ROOT, stderr=asyncio.subprocess.PIPE)
        _, stderr = await asyncio.wait_for(process.communicate(), 60)
        assert process.returncode != 0 and b"is open in another process" in stderr
    finally:
        await index.close()


WRITER = textwrap.dedent("""
    import asyncio, sys
    from pathlib import Path
    import numpy as np
    from services.rag_engine.domain import Chunk, DocumentKey
    from services.rag_engine.vector_local import LocalIndexOptions, LocalVectorIndex
    from tests.rag_engine.test_vector_local import batch

    async def main():
        # Snapshots every few batches, so the kill can land in one.
        index = LocalVectorIndex(Path(sys.argv[1]), 32, options=LocalIndexOptions(snapshot_every_rows=30))
        for number in range(100_000):
            chunks, vectors, replacing = batch(number)
            await index.upsert(chunks, vectors, replacing)
            print(number, flush=True)

    asyncio.run(main())
""")


def batch(number: int):
    """Batch `number` of the killed writer: a new document of 12 chunks, and every
    fourth batch a new version of the one before, replacing it whole."""
    if number % 4 == 3:
        document, chunk_ids = f"d{number - 1}", [f"d{number - 1}:v2:{i}" for i in range(5)]
    else:
        document, chunk_ids = f"d{number}", [f"d{number}:{i}" for i in range(12)]
    chunks = [Chunk("t1", "kb1", document, cid, f"text of {cid}") for cid in chunk_ids]
    vectors = np.random.default_rng(number).normal(size=(len(chunks), DIMENSION)).tolist()
    return chunks, vectors, [DocumentKey("t1", "kb1", document)]


def expected_after(batches: int) -> dict[str, set[str]]:
    documents: dict[str, set[str]] = {}
    for number in range(batches):
        chunks, _, _ = batch(number)
        documents[chunks[0].document_id] = {c.chunk_id for c in chunks}
    return documents


async def test_a_kill_9_mid_write_loses_and_doubles_nothing(tmp_path):
    directory = tmp_path / "vectors"
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", WRITER, str(directory), cwd=ROOT,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    acknowledged = 0
    try:
        while acknowledged < 40:
            line = await asyncio.wait_for(process.stdout.readline(), 60)
            assert line, (await process.stderr.read()).decode()[-2000:]
            acknowledged = int(line) + 1
    finally:
        process.send_signal(signal.SIGKILL)
        await process.wait()
    # Lines written before the kill that were not read yet are acknowledgements too.
    for line in (await process.stdout.read()).split():
        acknowledged = int(line) + 1

    index = LocalVectorIndex(directory, DIMENSION)
    try:
        with sqlite3.connect(directory / "chunks.sqlite") as db:
            stored = db.execute("SELECT document_id, chunk_id FROM chunks").fetchall()
        by_document: dict[str, set[str]] = {}
        for document, chunk_id in stored:
            by_document.setdefault(document, set()).add(chunk_id)
        # Every acknowledged write is there; the one in flight is there whole or not at all.
        assert by_document in (expected_after(acknowledged), expected_after(acknowledged + 1))
        assert len(stored) == sum(len(ids) for ids in by_document.values())
        for document, chunk_ids in by_document.items():
            assert await index.count("t1", "kb1", document) == len(chunk_ids)
            fetched = await index.fetch("t1", sorted(chunk_ids))
            assert {cid: c.text for cid, c in fetched.items()} == {cid: f"text of {cid}" for cid in chunk_ids}
        # Every stored chunk is found by its own vector, first, once.
        for number in range(acknowledged):
            chunks, vectors, _ = batch(number)
            if chunks[0].chunk_id in by_document.get(chunks[0].document_id, ()):
                hits = await index.search(vectors[0], Scope("t1"), [], 5)
                assert hits[0][0] == chunks[0].chunk_id
                assert len({cid for cid, _ in hits}) == len(hits)
        await until_indexed(index)
        assert index.indexed_rows >= len(stored)
        everything = await index.search(batch(0)[1][0], Scope("t1"), [], 10_000)
        assert sorted(cid for cid, _ in everything) == sorted(cid for _, cid in stored)
    finally:
        await index.close()


async def test_the_server_chooses_the_backend(tmp_path):
    local = vector_index(RagEngineSettings(_env_file=None, data_dir=tmp_path / "a"), DIMENSION)
    assert isinstance(local, LocalVectorIndex)
    assert local.directory == tmp_path / "a" / "rag_engine" / "vectors" / "sagemesh_chunks"
    await local.close()
    lite = vector_index(RagEngineSettings(_env_file=None, data_dir=tmp_path / "b", vector_index="milvus"), DIMENSION)
    assert isinstance(lite, MilvusVectorIndex)
    await lite.upsert(rows(1), clustered(1).tolist())
    await lite.close()
    # The URI alone keeps choosing Milvus.
    named = RagEngineSettings(_env_file=None, data_dir=tmp_path / "c",
                              SAGEMESH_MILVUS_URI=str(tmp_path / "b" / "rag_engine" / "milvus.db"))
    served = vector_index(named, DIMENSION)
    assert isinstance(served, MilvusVectorIndex)
    await served.close()
    # A data dir whose chunks are in Milvus Lite is not served empty by the local index.
    with pytest.raises(FailedPrecondition, match="holds 1 chunks in Milvus Lite.*SAGEMESH_VECTOR_INDEX=milvus"):
        vector_index(RagEngineSettings(_env_file=None, data_dir=tmp_path / "b"), DIMENSION)
    # ... and was left closed: it opens again.
    LocalVectorIndex(tmp_path / "b" / "rag_engine" / "vectors" / "sagemesh_chunks", DIMENSION).close_sync()


def test_metadata_is_stored_as_typed_json(tmp_path):
    """The records' metadata column holds typed() values, as Milvus's does."""
    async def write():
        index = LocalVectorIndex(tmp_path / "vectors", DIMENSION)
        await index.upsert([Chunk("t1", "kb", "d", "c", "x", metadata={"year": "2023", "lang": "en"})],
                           clustered(1).tolist())
        await index.close()

    asyncio.run(write())
    with sqlite3.connect(tmp_path / "vectors" / "chunks.sqlite") as db:
        (metadata,) = db.execute("SELECT metadata FROM chunks").fetchone()
    assert json.loads(metadata) == {"year": 2023, "lang": "en"}
