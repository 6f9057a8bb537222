"""What ingestion needs from the rag_engine. indexer_grpc.py is the client."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from services.knowledge.chunking import ChunkText


class IndexUnavailable(Exception):
    """The index could not be reached or did not answer in time: worth retrying."""


class IndexRejected(Exception):
    """The index refused the chunks: retrying would not help."""


class ChunkIndexer(Protocol):
    async def index(self, tenant_id: str, kb_id: str, document_id: str, chunks: Sequence[ChunkText],
                    title: str, metadata: dict[str, str], filename: str) -> int:
        """Replaces the document's chunks in the index with these; returns how
        many vectors the index now holds for the document."""

    async def delete_document(self, tenant_id: str, kb_id: str, document_id: str) -> None: ...

    async def delete_knowledge_base(self, tenant_id: str, kb_id: str) -> None: ...
