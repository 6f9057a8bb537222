"""The two indexes rag_engine keeps. Every search is scoped to one tenant
inside the index query itself: isolation never depends on a caller's filters."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from services.rag_engine.domain import Chunk, DocumentKey, Scope
from services.rag_engine.filters import Filter


class VectorIndex(Protocol):
    """Embeddings and the chunk records themselves (text, title, metadata)."""

    async def upsert(
        self, chunks: Sequence[Chunk], vectors: Sequence[Sequence[float]], replacing: Sequence[DocumentKey] = ()
    ) -> None:
        """Writes the chunks, each replacing the chunk of its id; every earlier
        chunk of the documents in `replacing` goes first."""

    async def search(
        self, vector: Sequence[float], scope: Scope, filters: Sequence[Filter], limit: int
    ) -> list[tuple[str, float]]:
        """(chunk_id, similarity), best first."""

    async def passing(self, tenant_id: str, chunk_ids: Sequence[str], filters: Sequence[Filter]) -> set[str]:
        """Those of the tenant's chunk ids whose metadata passes every filter."""

    async def fetch(self, tenant_id: str, chunk_ids: Sequence[str]) -> dict[str, Chunk]: ...

    async def delete_document(self, tenant_id: str, kb_id: str, document_id: str) -> int: ...

    async def delete_knowledge_base(self, tenant_id: str, kb_id: str) -> int: ...

    async def count(self, tenant_id: str, kb_id: str, document_id: str) -> int: ...

    async def any_record(self) -> tuple[Chunk, list[float]] | None:
        """Some stored chunk with its vector, or None when the index is empty."""

    async def close(self) -> None: ...


class KeywordIndex(Protocol):
    """BM25 over the chunks' analysed text."""

    async def upsert(self, chunks: Sequence[Chunk], replacing: Sequence[DocumentKey] = ()) -> None:
        """As VectorIndex.upsert, in one commit."""

    async def search(
        self, query: str, scope: Scope, limit: int
    ) -> list[tuple[str, float]]:
        """(chunk_id, BM25 score), best first. Metadata filters are the vector
        index's: it holds the chunk records."""

    async def delete_document(self, tenant_id: str, kb_id: str, document_id: str) -> None: ...

    async def delete_knowledge_base(self, tenant_id: str, kb_id: str) -> None: ...

    async def close(self) -> None: ...
