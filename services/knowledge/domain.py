"""Knowledge bases, documents and where each document is in its ingestion."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime


class DocumentStatus(enum.Enum):
    PENDING = "pending"
    PARSING = "parsing"
    CHUNKING = "chunking"
    INDEXING = "indexing"
    INDEXED = "indexed"
    FAILED = "failed"

    @property
    def finished(self) -> bool:
        return self in (DocumentStatus.INDEXED, DocumentStatus.FAILED)


@dataclass(frozen=True)
class KnowledgeBase:
    id: str
    tenant_id: str
    name: str
    display_name: str
    description: str
    chunk_max_tokens: int
    chunk_overlap_tokens: int
    created_at: datetime
    updated_at: datetime
    document_count: int = 0


@dataclass(frozen=True)
class StageTimings:
    """Milliseconds of the last ingestion attempt, by stage."""

    parse_ms: float = 0.0
    chunk_ms: float = 0.0
    index_ms: float = 0.0

    @property
    def total_ms(self) -> float:
        return self.parse_ms + self.chunk_ms + self.index_ms


@dataclass(frozen=True)
class Document:
    id: str
    tenant_id: str
    kb_id: str
    filename: str
    content_type: str
    size_bytes: int
    sha256: str
    status: DocumentStatus
    created_at: datetime
    updated_at: datetime
    metadata: dict[str, str] = field(default_factory=dict)
    chunk_count: int = 0
    vector_count: int = 0
    # Why it failed, or, while pending again, why the last attempt must be retried.
    error: str = ""
    timings: StageTimings = StageTimings()
    # Bumped by every reparse, so a worker still busy with an older run cannot
    # overwrite the newer one's status.
    generation: int = 0
    attempts: int = 0
