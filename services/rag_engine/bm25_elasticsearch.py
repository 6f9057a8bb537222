"""KeywordIndex on Elasticsearch, for deployments where several rag_engine
replicas must share one BM25 index (tantivy allows one writing process).

Text is analysed here by analysis.terms() and stored as space-joined terms
under the `whitespace` analyzer, so Elasticsearch tokenises exactly as the
tantivy index does: jieba for Chinese, Snowball stems for English. Scoring is
Elasticsearch's default BM25."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from elasticsearch import ApiError, AsyncElasticsearch, ConnectionTimeout
from elasticsearch import ConnectionError as ConnectionFailed
from elasticsearch.helpers import async_bulk

from meshkit.errors import Unavailable
from services.rag_engine import analysis
from services.rag_engine.domain import Chunk, DocumentKey, Scope, by_knowledge_base

MAPPINGS = {
    # A stray field would mean code and mapping disagree: fail loudly instead.
    "dynamic": "strict",
    "properties": {
        **{
            name: {"type": "keyword"}
            for name in ("pk", "chunk_id", "tenant_id", "kb_id", "document_id")
        },
        "terms": {"type": "text", "analyzer": "whitespace", "similarity": "BM25"},
    },
}


@contextmanager
def _reachable() -> Iterator[None]:
    # The gRPC layer maps Unavailable to UNAVAILABLE, which clients may retry.
    try:
        yield
    except (ConnectionFailed, ConnectionTimeout) as error:
        raise Unavailable("the keyword index is unreachable") from error
    except ApiError as error:
        if error.meta.status in (429, 503):
            raise Unavailable("the keyword index is overloaded or unavailable") from error
        raise


class ElasticsearchKeywordIndex:
    def __init__(
        self, url: str, index_name: str = "sagemesh-chunks", **client_options: Any
    ) -> None:
        self.client = AsyncElasticsearch(url, **client_options)
        self.index_name = index_name
        self._ready = False

    async def ensure_index(self) -> None:
        """Creates the index if it is missing; an existing one is used as it is."""
        if self._ready:
            return
        with _reachable():
            try:
                await self.client.indices.create(index=self.index_name, mappings=MAPPINGS)
            except ApiError as error:
                # Another replica (or an earlier run) created it first.
                if error.error != "resource_already_exists_exception":
                    raise
        self._ready = True

    async def upsert(self, chunks: Sequence[Chunk], replacing: Sequence[DocumentKey] = ()) -> None:
        for (tenant_id, kb_id), document_ids in by_knowledge_base(replacing).items():
            await self._delete_where(tenant_id, kb_id, document_ids)
        if not chunks:
            return
        await self.ensure_index()
        actions = [
            {
                "_index": self.index_name,
                # Indexing under the same _id replaces the chunk; the tenant in it
                # keeps equal chunk ids of two tenants apart.
                "_id": f"{chunk.tenant_id}:{chunk.chunk_id}",
                "_source": {
                    "pk": f"{chunk.tenant_id}:{chunk.chunk_id}",
                    "chunk_id": chunk.chunk_id,
                    "tenant_id": chunk.tenant_id,
                    "kb_id": chunk.kb_id,
                    "document_id": chunk.document_id,
                    "terms": " ".join(analysis.terms(f"{chunk.title}\n{chunk.text}")),
                },
            }
            for chunk in chunks
        ]
        with _reachable():
            # wait_for: searchable when this returns, as with tantivy's commit,
            # without forcing a refresh (and a tiny segment) per ingested document.
            await async_bulk(self.client, actions, refresh="wait_for")

    async def search(
        self, query: str, scope: Scope, limit: int
    ) -> list[tuple[str, float]]:
        words = analysis.terms(query)
        if not words:
            return []
        await self.ensure_index()
        # Filter context: these restrict the hits and add nothing to the BM25 score.
        filters: list[dict] = [{"term": {"tenant_id": scope.tenant_id}}]
        if scope.kb_ids:
            filters.append({"terms": {"kb_id": list(scope.kb_ids)}})
        with _reachable():
            response = await self.client.search(
                index=self.index_name,
                query={"bool": {"must": {"match": {"terms": " ".join(words)}}, "filter": filters}},
                size=limit,
                source_includes=["chunk_id"],
                track_total_hits=False,
            )
        hits = response["hits"]["hits"]
        return [(hit["_source"]["chunk_id"], float(hit["_score"])) for hit in hits]

    async def _delete_where(self, tenant_id: str, kb_id: str, document_ids: Sequence[str] | None = None) -> None:
        """Deletes a knowledge base's chunks, or those of some of its documents."""
        await self.ensure_index()
        filters: list[dict] = [{"term": {"tenant_id": tenant_id}}, {"term": {"kb_id": kb_id}}]
        if document_ids is not None:
            filters.append({"terms": {"document_id": list(document_ids)}})
        with _reachable():
            await self.client.delete_by_query(
                index=self.index_name,
                query={"bool": {"filter": filters}},
                # A chunk re-indexed meanwhile must not abort the rest of the delete.
                conflicts="proceed",
                refresh=True,
            )

    async def delete_document(self, tenant_id: str, kb_id: str, document_id: str) -> None:
        await self._delete_where(tenant_id, kb_id, [document_id])

    async def delete_knowledge_base(self, tenant_id: str, kb_id: str) -> None:
        await self._delete_where(tenant_id, kb_id)

    async def close(self) -> None:
        await self.client.close()
