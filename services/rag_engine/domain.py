"""rag_engine's domain types."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Chunk:
    """A chunk as indexed, with everything a result needs to show."""

    tenant_id: str
    kb_id: str
    document_id: str
    chunk_id: str
    text: str
    title: str = ""
    headings: tuple[str, ...] = ()
    page: int = 0
    position: int = 0
    metadata: dict[str, str] = field(default_factory=dict)
    # The uploaded file's name, and where in it ("page 3", "slide 2", "sheet Budget").
    filename: str = ""
    location: str = ""


@dataclass(frozen=True)
class DocumentKey:
    """One document's place: its chunks are written, replaced and deleted together."""

    tenant_id: str
    kb_id: str
    document_id: str


def by_knowledge_base(documents: Iterable[DocumentKey]) -> dict[tuple[str, str], list[str]]:
    """Document ids grouped under their (tenant_id, kb_id), for one delete per base."""
    grouped: dict[tuple[str, str], list[str]] = {}
    for key in documents:
        grouped.setdefault((key.tenant_id, key.kb_id), []).append(key.document_id)
    return grouped


@dataclass(frozen=True)
class Scope:
    """Where a search may look: always one tenant, optionally some bases."""

    tenant_id: str
    kb_ids: tuple[str, ...] = ()


@dataclass
class RankedChunk:
    chunk: Chunk
    score: float
    vector_rank: int = 0
    bm25_rank: int = 0
    rerank_rank: int = 0


@dataclass
class Timings:
    embed_ms: float = 0.0
    vector_ms: float = 0.0
    bm25_ms: float = 0.0
    fuse_ms: float = 0.0
    rerank_ms: float = 0.0
    total_ms: float = 0.0
