"""Concurrent IndexChunks calls embedded and written together.

A call carries a document's chunks, often one or two. Embedding costs far less
per chunk in a batch of dozens than alone, and every write has a fixed price
(tantivy commits a segment, Milvus takes a request): so calls that arrive while
a batch is being embedded wait, and the next batch takes all of them, up to a
chunk budget, for one embedding pass and one write to each index. Embedding
the next batch overlaps with writing the last.

Calls are written in the order they arrived, and two calls for one document
never share a batch, so a document's calls apply in the order they were made.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from opentelemetry import trace
from opentelemetry.trace import Link, SpanContext

from meshkit.errors import Unavailable
from services.rag_engine.domain import Chunk, DocumentKey
from services.rag_engine.indexes import KeywordIndex, VectorIndex
from services.rag_engine.metrics import INDEX_BATCH_CALLS, INDEX_BATCH_CHUNKS

tracer = trace.get_tracer("sagemesh.rag_engine")

# Chunks embedded and written as one batch, at most (a single larger call is a
# batch of its own). 256 chunks of 200 tokens embed in about 5 s on two cores:
# large enough that a write's fixed cost is small beside it, small enough that
# a call waits a few seconds at worst behind the batch before its own.
BATCH_CHUNKS = 256


@dataclass(eq=False)
class IndexCall:
    key: DocumentKey
    chunks: Sequence[Chunk]
    replace: bool
    texts: Sequence[str]
    done: asyncio.Future[int] = field(default_factory=lambda: asyncio.get_running_loop().create_future())
    caller: SpanContext = field(default_factory=lambda: trace.get_current_span().get_span_context())


class IndexBatcher:
    def __init__(
        self,
        embed: Callable[[list[str]], Awaitable[list[list[float]]]],
        vectors: VectorIndex,
        keywords: KeywordIndex,
        written: Callable[[set[tuple[str, str]]], Awaitable[None]],
        batch_chunks: int = BATCH_CHUNKS,
    ) -> None:
        self._embed = embed
        self.vectors = vectors
        self.keywords = keywords
        self._written = written
        self.batch_chunks = batch_chunks
        self._waiting: deque[IndexCall] = deque()
        self._arrived = asyncio.Event()
        # One embedded batch waits here while the one before it is written.
        self._embedded: asyncio.Queue[tuple[list[IndexCall], list[list[float]]]] = asyncio.Queue(maxsize=1)
        self._tasks: list[asyncio.Task] = []
        # Every call not yet answered, wherever it is: close() answers them.
        self._pending: set[IndexCall] = set()
        self._closed = False

    async def index(self, key: DocumentKey, chunks: Sequence[Chunk], texts: Sequence[str], replace: bool) -> int:
        """Embeds `texts` (one per chunk) and writes the chunks; returns the
        vectors the document now holds."""
        if self._closed:
            raise Unavailable("the rag_engine is shutting down")
        if not self._tasks:
            self._tasks = [asyncio.create_task(self._embedding(), name="index batches: embed"),
                           asyncio.create_task(self._writing(), name="index batches: write")]
        call = IndexCall(key, chunks, replace, texts)
        self._pending.add(call)
        call.done.add_done_callback(lambda _: self._pending.discard(call))
        self._waiting.append(call)
        self._arrived.set()
        # A caller that gives up leaves its call to finish: the write is the same when it retries.
        return await asyncio.shield(call.done)

    def _next_batch(self) -> list[IndexCall]:
        batch: list[IndexCall] = []
        documents: set[DocumentKey] = set()
        chunks = 0
        while self._waiting:
            call = self._waiting[0]
            if batch and (call.key in documents or chunks + len(call.chunks) > self.batch_chunks):
                break
            self._waiting.popleft()
            batch.append(call)
            documents.add(call.key)
            chunks += len(call.chunks)
        return batch

    async def _embedding(self) -> None:
        while True:
            await self._arrived.wait()
            batch = self._next_batch()
            if not self._waiting:
                self._arrived.clear()
            if not batch:
                continue
            try:
                with tracer.start_as_current_span("rag.index_batch.embed", links=_links(batch), attributes={
                        "calls": len(batch), "chunks": sum(len(c.chunks) for c in batch)}):
                    vectors = await self._embed([text for call in batch for text in call.texts])
            except Exception as error:
                _fail(batch, error)
                continue
            await self._embedded.put((batch, vectors))

    async def _writing(self) -> None:
        while True:
            batch, vectors = await self._embedded.get()
            chunks = [chunk for call in batch for chunk in call.chunks]
            try:
                with tracer.start_as_current_span("rag.index_batch.write", links=_links(batch), attributes={
                        "calls": len(batch), "chunks": len(chunks)}):
                    replacing = [call.key for call in batch if call.replace]
                    # Vectors first: they carry the records every result is built from.
                    await self.vectors.upsert(chunks, vectors, replacing)
                    await self.keywords.upsert(chunks, replacing)
                    counts = [len(call.chunks) if call.replace else await self.vectors.count(
                        call.key.tenant_id, call.key.kb_id, call.key.document_id) for call in batch]
                    await self._written({(call.key.tenant_id, call.key.kb_id) for call in batch})
                INDEX_BATCH_CALLS.observe(len(batch))
                INDEX_BATCH_CHUNKS.observe(len(chunks))
            except Exception as error:
                _fail(batch, error)
                continue
            for call, count in zip(batch, counts):
                if not call.done.done():
                    call.done.set_result(count)

    async def close(self) -> None:
        """Stops; calls not yet answered fail as unavailable, for their callers
        to retry (a write cut short is done again whole by the retry)."""
        self._closed = True
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        _fail(list(self._pending), Unavailable("the rag_engine is shutting down"))


def _links(batch: list[IndexCall]) -> list[Link]:
    return [Link(call.caller) for call in batch if call.caller.is_valid]


def _fail(batch: list[IndexCall], error: BaseException) -> None:
    for call in batch:
        if not call.done.done():
            call.done.set_exception(error)
