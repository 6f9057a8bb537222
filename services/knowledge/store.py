"""What knowledge needs from its database. store_sql.py implements it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from services.knowledge.domain import Document, DocumentStatus, KnowledgeBase, StageTimings

# Where a listing resumes: the (created_at, id) of the last item returned.
Cursor = tuple[datetime, str]


class DuplicateName(Exception):
    pass


class KnowledgeBaseGone(Exception):
    """The knowledge base was deleted while a document was being added to it."""


@dataclass(frozen=True)
class NewDocument:
    tenant_id: str
    kb_id: str
    filename: str
    content_type: str
    size_bytes: int
    sha256: str
    blob_key: str
    metadata: dict[str, str]
    # The upload's trace context (W3C traceparent), "" when not traced.
    upload_traceparent: str = ""


@dataclass(frozen=True)
class Claim:
    """A document a worker holds the lease on, with what it needs to run it."""

    document: Document
    blob_key: str
    chunk_max_tokens: int
    chunk_overlap_tokens: int
    owner: str
    upload_traceparent: str = ""


class KnowledgeStore(Protocol):
    async def create_knowledge_base(
        self, tenant_id: str, name: str, display_name: str, description: str, chunk_max_tokens: int,
        chunk_overlap_tokens: int,
    ) -> KnowledgeBase:
        """Raises DuplicateName."""

    async def knowledge_base(self, tenant_id: str, kb_id: str) -> KnowledgeBase | None: ...

    async def list_knowledge_bases(self, tenant_id: str, limit: int, after: Cursor | None,
                                   name: str = "") -> list[KnowledgeBase]:
        """The tenant's bases in creation order, only the one called `name` when given."""

    async def delete_knowledge_base(self, tenant_id: str, kb_id: str) -> list[str] | None:
        """Deletes the base and its documents; returns their blob keys, or None
        if there was no such base."""

    async def add_document(self, new: NewDocument) -> tuple[Document, bool]:
        """Adds a pending document, or returns the base's document with the
        same content and True. Raises KnowledgeBaseGone."""

    async def document(self, tenant_id: str, document_id: str) -> Document | None: ...

    async def list_documents(self, tenant_id: str, kb_id: str, limit: int, after: Cursor | None,
                             sha256: str = "") -> list[Document]:
        """The base's documents in upload order, only the one with these bytes when `sha256` is given."""

    async def delete_document(self, tenant_id: str, document_id: str) -> str | None:
        """Deletes the row; returns its blob key, or None if there was none."""

    async def restart_document(self, tenant_id: str, document_id: str) -> Document | None:
        """Queues the document to run again from the start, as a new generation."""

    # The ingestion queue.

    async def claim_due(self, owner: str, limit: int, lease_seconds: float) -> list[Claim]:
        """Leases up to `limit` unfinished documents that are due and not
        leased by a live worker, counting an attempt for each in the same write."""

    async def renew_lease(self, claim: Claim, lease_seconds: float) -> bool:
        """False if the claim was lost: the document was deleted or restarted,
        or its lease ran out and another worker took it."""

    async def set_status(self, claim: Claim, status: DocumentStatus) -> bool: ...

    async def finish(
        self, claim: Claim, status: DocumentStatus, *, chunk_count: int = 0, vector_count: int = 0,
        timings: StageTimings = StageTimings(), error: str = "", warnings: Sequence[str] = (),
        metadata: dict[str, str] | None = None,
    ) -> bool:
        """Records the outcome (and, when given, the metadata the file itself carries merged into the
        document's) and frees the lease; False if the claim was lost."""

    async def retry_later(self, claim: Claim, error: str, due: datetime, *, attempt_counts: bool = True) -> bool:
        """Back to pending, lease freed, not due before `due`. Unless the attempt
        counts, the one its claim counted is given back."""

    async def count_by_status(self) -> dict[str, int]:
        """Documents in every tenant, by status."""

    async def release_leases(self, owner: str) -> int:
        """Frees the leases `owner` held in an earlier life, so its unfinished
        documents run again now rather than when the leases run out."""
