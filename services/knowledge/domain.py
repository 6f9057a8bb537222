"""Knowledge bases, documents and where each document is in its ingestion."""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field
from datetime import datetime

# A document's metadata: keys as filters name them, values and their number bounded.
METADATA_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,63}$")
MAX_METADATA_KEYS = 32
MAX_METADATA_VALUE = 512


def file_metadata(found: dict[str, str]) -> dict[str, str]:
    """What a file says of itself (an e-mail's sender and subject), as metadata: keys that break
    the rules left out, values cut to the bound."""
    return {key: value[:MAX_METADATA_VALUE] for key, value in found.items() if METADATA_KEY.match(key)}


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
class Uploaded:
    """What an upload made: the document, and whether the base held the same content already
    (`duplicate`) and was ingesting it again because that upload had failed (`retried`)."""

    document: Document
    duplicate: bool = False
    retried: bool = False


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
    # What a person should know about how the file was read; the document is indexed all the same.
    warnings: tuple[str, ...] = ()
    timings: StageTimings = StageTimings()
    # Bumped by every reparse, so a worker still busy with an older run cannot
    # overwrite the newer one's status.
    generation: int = 0
    attempts: int = 0
