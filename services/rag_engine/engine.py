"""rag_engine's domain logic: indexing and hybrid retrieval. No gRPC here."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from opentelemetry import trace

from meshkit.errors import FailedPrecondition, InvalidArgument, Unavailable
from meshkit.ids import MAX_KNOWLEDGE_BASES
from meshkit.timing import ms_since
from services.rag_engine.domain import Chunk, DocumentKey, RankedChunk, Scope, Timings
from services.rag_engine.embedding import Embedder
from services.rag_engine.filters import Filter, post_filtered
from services.rag_engine.fusion import reciprocal_rank_fusion
from services.rag_engine.index_batches import IndexBatcher
from services.rag_engine.indexes import KeywordIndex, VectorIndex
from services.rag_engine.metrics import record_retrieval
from services.rag_engine.rerank import Reranker

log = logging.getLogger(__name__)
tracer = trace.get_tracer("sagemesh.rag_engine")

MAX_QUERY_CHARS = 2_000
MAX_TOP_K = 100
MAX_CHUNKS_PER_CALL = 2_000
MAX_CHUNK_CHARS = 60_000
# BM25 hits looked at, at most, to find enough that pass a metadata filter.
MAX_FILTERED_CANDIDATES = 10_000
# The same model embeds the same text to within rounding; another model's
# vector for it lies far off (MiniLM against multilingual-e5: under 0.1).
SAME_MODEL_SIMILARITY = 0.98


@dataclass(frozen=True)
class RetrievalConfig:
    rrf_k: int = 60
    # Candidates each index contributes to fusion.
    candidates_per_list: int = 100
    default_top_k: int = 10
    # Fused candidates the reranker re-scores (at least top_k).
    rerank_candidates: int = 20


class RagEngine:
    def __init__(
        self, embedder: Embedder, vectors: VectorIndex, keywords: KeywordIndex, config: RetrievalConfig,
        reranker: Reranker | None = None,
    ) -> None:
        self.embedder = embedder
        self.vectors = vectors
        self.keywords = keywords
        self.config = config
        self.reranker = reranker
        # Told (tenant, kb) after every write to a base: the answer cache listens.
        self.on_change: list[Callable[[str, str], Awaitable[None]]] = []
        self._batches = IndexBatcher(embedder.embed_documents, vectors, keywords, self._written)

    async def _changed(self, tenant_id: str, kb_id: str) -> None:
        for listener in self.on_change:
            await listener(tenant_id, kb_id)

    async def index(
        self, tenant_id: str, kb_id: str, document_id: str, chunks: Sequence[Chunk], replace: bool = False
    ) -> tuple[int, int]:
        """Embeds and upserts the chunks into both indexes; returns (indexed,
        vectors now held for the document). Indexing a chunk again replaces it;
        `replace` removes the document's other chunks in the same write."""
        for name, value in (("tenant_id", tenant_id), ("kb_id", kb_id), ("document_id", document_id)):
            if not value:
                raise InvalidArgument("is required", field=name)
        if len(chunks) > MAX_CHUNKS_PER_CALL:
            raise InvalidArgument(f"at most {MAX_CHUNKS_PER_CALL} chunks per call", field="chunks")
        seen: set[str] = set()
        for position, chunk in enumerate(chunks):
            if not chunk.chunk_id:
                raise InvalidArgument(f"chunks[{position}].chunk_id is required", field="chunks")
            if chunk.chunk_id in seen:
                raise InvalidArgument(f"chunk_id {chunk.chunk_id!r} appears twice", field="chunks")
            if not chunk.text.strip():
                raise InvalidArgument(f"chunks[{position}].text is empty", field="chunks")
            if len(chunk.text) > MAX_CHUNK_CHARS:
                raise InvalidArgument(f"chunks[{position}].text is over {MAX_CHUNK_CHARS} characters", field="chunks")
            seen.add(chunk.chunk_id)
        if not chunks and not replace:
            return 0, await self.vectors.count(tenant_id, kb_id, document_id)
        # A replacement with no chunks is a delete, written in its turn among the batches.
        vectors = await self._batches.index(DocumentKey(tenant_id, kb_id, document_id), chunks,
                                            [_passage(c) for c in chunks], replace)
        return len(chunks), vectors

    async def _written(self, bases: set[tuple[str, str]]) -> None:
        for tenant_id, kb_id in bases:
            await self._changed(tenant_id, kb_id)

    async def close(self) -> None:
        await self._batches.close()

    async def check_stored_vectors(self) -> None:
        """Refuses to serve an index built by another embedding model: its
        vectors would still be searched, and answer with noise, not errors.
        One stored chunk is embedded again and must land where it was."""
        record = await self.vectors.any_record()
        if record is None:
            return
        chunk, stored = record
        try:
            fresh = (await self.embedder.embed_documents([_passage(chunk)]))[0]
        except Unavailable as error:
            # An embedding endpoint that is down must not keep the index from serving BM25.
            log.warning("could not check the stored vectors against the embedding model: %s", error)
            return
        similarity = sum(a * b for a, b in zip(stored, fresh))
        if similarity < SAME_MODEL_SIMILARITY:
            raise FailedPrecondition(
                f"the vector index was built by another embedding model than {self.embedder.name!r} "
                f"(a stored chunk embeds again at cosine {similarity:.2f}): use the model that built it, "
                "or a new collection (SAGEMESH_VECTOR_COLLECTION) and index the documents again"
            )

    async def delete_document(self, tenant_id: str, kb_id: str, document_id: str) -> int:
        deleted = await self.vectors.delete_document(tenant_id, kb_id, document_id)
        await self.keywords.delete_document(tenant_id, kb_id, document_id)
        await self._changed(tenant_id, kb_id)
        return deleted

    async def delete_knowledge_base(self, tenant_id: str, kb_id: str) -> int:
        deleted = await self.vectors.delete_knowledge_base(tenant_id, kb_id)
        await self.keywords.delete_knowledge_base(tenant_id, kb_id)
        await self._changed(tenant_id, kb_id)
        return deleted

    async def retrieve(
        self,
        scope: Scope,
        query: str,
        top_k: int = 0,
        filters: Sequence[Filter] = (),
        weights: tuple[float, float] = (1.0, 1.0),
        use_rerank: bool = False,
    ) -> tuple[list[RankedChunk], Timings]:
        query = query.strip()
        if not query:
            raise InvalidArgument("is required", field="query")
        if len(query) > MAX_QUERY_CHARS:
            raise InvalidArgument(f"must be at most {MAX_QUERY_CHARS} characters", field="query")
        top_k = top_k or self.config.default_top_k
        if not 1 <= top_k <= MAX_TOP_K:
            raise InvalidArgument(f"must be between 1 and {MAX_TOP_K}", field="top_k")
        if len(scope.kb_ids) > MAX_KNOWLEDGE_BASES:
            raise InvalidArgument(f"at most {MAX_KNOWLEDGE_BASES} knowledge bases", field="kb_ids")
        if any(w < 0 for w in weights):
            raise InvalidArgument("must not be negative", field="weights")
        if not any(weights):
            raise InvalidArgument("at least one weight must be positive", field="weights")
        if use_rerank and self.reranker is None:
            raise FailedPrecondition("no reranker is configured on this server (see SAGEMESH_RERANKER)")
        timings = Timings()
        started = time.perf_counter()
        limit = max(self.config.candidates_per_list, top_k)

        async def vector_branch() -> list[str]:
            if not weights[0]:
                return []  # A list that cannot count is not worth fetching.
            embed_started = time.perf_counter()
            with tracer.start_as_current_span("rag.embed", attributes={"model": self.embedder.name}):
                vector = await self.embedder.embed_query(query)
            timings.embed_ms = ms_since(embed_started)
            search_started = time.perf_counter()
            with tracer.start_as_current_span("rag.vector_search", attributes={
                    "limit": limit, "filtered": bool(filters)}) as span:
                hits = await self.vectors.search(vector, scope, filters, limit)
                span.set_attribute("candidates", len(hits))
            timings.vector_ms = ms_since(search_started)
            return [chunk_id for chunk_id, _ in hits]

        async def keyword_branch() -> list[str]:
            if not weights[1]:
                return []
            search_started = time.perf_counter()
            with tracer.start_as_current_span("rag.bm25_search", attributes={
                    "limit": limit, "filtered": bool(filters)}) as span:
                if filters:
                    # The best BM25 hits whose records pass the filters.
                    hits = await post_filtered(
                        lambda fetch: self.keywords.search(query, scope, fetch),
                        lambda ids: self.vectors.passing(scope.tenant_id, ids, filters), limit,
                        MAX_FILTERED_CANDIDATES,
                    )
                else:
                    hits = await self.keywords.search(query, scope, limit)
                span.set_attribute("candidates", len(hits))
            timings.bm25_ms = ms_since(search_started)
            return [chunk_id for chunk_id, _ in hits]

        with tracer.start_as_current_span("rag.retrieve", attributes={
                "top_k": top_k, "knowledge_bases": len(scope.kb_ids), "rerank": use_rerank,
                "weights": list(weights)}) as retrieve_span:
            vector_ids, keyword_ids = await asyncio.gather(vector_branch(), keyword_branch())
            fuse_started = time.perf_counter()
            keep = max(top_k, self.config.rerank_candidates) if use_rerank else top_k
            with tracer.start_as_current_span("rag.fuse", attributes={
                    "rrf_k": self.config.rrf_k, "vector_candidates": len(vector_ids),
                    "bm25_candidates": len(keyword_ids)}) as span:
                fused = reciprocal_rank_fusion([vector_ids, keyword_ids], list(weights), self.config.rrf_k)[:keep]
                span.set_attribute("kept", len(fused))
            timings.fuse_ms = ms_since(fuse_started)
            records = await self.vectors.fetch(scope.tenant_id, [f.key for f in fused])
            results = [
                RankedChunk(records[f.key], f.score, vector_rank=f.ranks[0], bm25_rank=f.ranks[1])
                for f in fused
                # A chunk deleted between search and fetch is simply gone.
                if f.key in records and records[f.key].tenant_id == scope.tenant_id
            ]
            if use_rerank and results:
                rerank_started = time.perf_counter()
                with tracer.start_as_current_span("rag.rerank", attributes={"candidates": len(results)}):
                    results = await self._rerank(query, results)
                timings.rerank_ms = ms_since(rerank_started)
            retrieve_span.set_attribute("results", min(len(results), top_k))
        timings.total_ms = ms_since(started)
        record_retrieval(timings)
        return results[:top_k], timings

    async def _rerank(self, query: str, candidates: list[RankedChunk]) -> list[RankedChunk]:
        # Candidates go in best first: a reranker may blend in that order.
        scores = await self.reranker.score(query, [_passage(c.chunk) for c in candidates])
        order = sorted(range(len(candidates)), key=lambda i: -scores[i])
        reranked = []
        for rank, i in enumerate(order, start=1):
            candidates[i].score, candidates[i].rerank_rank = scores[i], rank
            reranked.append(candidates[i])
        return reranked


def _passage(chunk: Chunk) -> str:
    return f"{chunk.title}\n{chunk.text}" if chunk.title else chunk.text
