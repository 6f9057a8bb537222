"""IndexBatcher over the real embedded indexes (the local vector index and tantivy). The
embedding function is a stand-in that can be held or made to fail: these
tests are about which calls share a batch and what each caller is told."""

from __future__ import annotations

import asyncio

import pytest

from meshkit.errors import Unavailable
from services.rag_engine.bm25_tantivy import TantivyKeywordIndex
from services.rag_engine.domain import DocumentKey, Scope
from services.rag_engine.index_batches import IndexBatcher
from services.rag_engine.vector_local import LocalVectorIndex
from tests.rag_engine.test_indexes import DIMENSION, chunk, unit


class Embedding:
    """Vectors from each text's length; can be held at the next call, or fail it."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.hold = asyncio.Event()
        self.hold.set()
        self.entered = asyncio.Event()
        self.fail_next = False

    async def __call__(self, texts: list[str]) -> list[list[float]]:
        self.batches.append(texts)
        self.entered.set()
        await self.hold.wait()
        if self.fail_next:
            self.fail_next = False
            raise RuntimeError("the model fell over")
        return [unit(len(text)) for text in texts]


@pytest.fixture
async def setup(tmp_path):
    vectors = LocalVectorIndex(tmp_path / "vectors", DIMENSION)
    keywords = TantivyKeywordIndex(tmp_path / "bm25")
    embedding = Embedding()
    changed: list[set[tuple[str, str]]] = []

    async def written(bases: set[tuple[str, str]]) -> None:
        changed.append(bases)

    batcher = IndexBatcher(embedding, vectors, keywords, written)
    yield batcher, embedding, changed
    await batcher.close()
    await keywords.close()
    await vectors.close()


def document(name: str, *texts: str):
    key = DocumentKey("t1", "kb1", name)
    chunks = [chunk("t1", "kb1", name, f"{name}:{i}", text) for i, text in enumerate(texts)]
    return key, chunks, list(texts)


async def test_calls_waiting_behind_a_batch_go_in_the_next_one_together(setup):
    batcher, embedding, changed = setup
    embedding.hold.clear()
    first = asyncio.create_task(batcher.index(*document("d0", "held"), replace=True))
    await embedding.entered.wait()
    waiting = [asyncio.create_task(batcher.index(*document(f"d{n}", f"text number {n}"), replace=True))
               for n in range(1, 6)]
    await asyncio.sleep(0.05)
    embedding.hold.set()
    assert await asyncio.gather(first, *waiting) == [1] * 6
    assert [len(batch) for batch in embedding.batches] == [1, 5]
    assert {("t1", "kb1")} in changed
    hits = await batcher.keywords.search("number", Scope("t1"), 10)
    assert len(hits) == 5


async def test_two_calls_for_one_document_apply_in_the_order_they_came(setup):
    batcher, embedding, _ = setup
    embedding.hold.clear()
    blocker = asyncio.create_task(batcher.index(*document("d-other", "held"), replace=False))
    await embedding.entered.wait()
    older = asyncio.create_task(batcher.index(*document("d1", "older words here", "older second"), replace=True))
    newer = asyncio.create_task(batcher.index(*document("d1", "newer words"), replace=True))
    await asyncio.sleep(0.05)
    embedding.hold.set()
    await asyncio.gather(blocker, older, newer)
    # Never one batch: the newer replacement came after the older one, and won.
    assert [len(batch) for batch in embedding.batches] == [1, 2, 1]
    stored = await batcher.vectors.fetch("t1", ["d1:0", "d1:1"])
    assert [c.text for c in stored.values()] == ["newer words"]


async def test_a_failed_batch_fails_its_callers_and_the_next_batch_is_written(setup):
    batcher, embedding, _ = setup
    embedding.fail_next = True
    with pytest.raises(RuntimeError, match="fell over"):
        await batcher.index(*document("d1", "doomed"), replace=True)
    assert await batcher.index(*document("d2", "fine"), replace=True) == 1
    assert await batcher.vectors.count("t1", "kb1", "d1") == 0


async def test_closing_answers_waiting_calls_as_unavailable(setup):
    batcher, embedding, _ = setup
    embedding.hold.clear()
    calls = [asyncio.create_task(batcher.index(*document(f"d{n}", "text"), replace=True)) for n in range(3)]
    await embedding.entered.wait()
    await batcher.close()
    for call in calls:
        with pytest.raises(Unavailable):
            await call
    with pytest.raises(Unavailable, match="shutting down"):
        await batcher.index(*document("d9", "late"), replace=True)
