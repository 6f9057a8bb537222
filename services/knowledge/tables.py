"""Knowledge's tables. Schema changes go through migrations/."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, BigInteger, ForeignKey, Index, MetaData, String, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from meshkit.db import NAMING_CONVENTION, UtcDateTime


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: UtcDateTime, dict[str, str]: JSON}


class KnowledgeBaseRow(Base):
    __tablename__ = "knowledge_bases"
    __table_args__ = (UniqueConstraint("tenant_id", "name", name="uq_knowledge_bases_tenant_name"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(36))
    name: Mapped[str] = mapped_column(String(63))
    display_name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(String(2000))
    chunk_max_tokens: Mapped[int]
    chunk_overlap_tokens: Mapped[int]
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class DocumentRow(Base):
    """A document and its place in the ingestion queue: the worker claims rows
    whose status is not finished, whose next attempt is due and whose lease
    (held while a worker runs it) is free or has run out."""

    __tablename__ = "knowledge_documents"
    __table_args__ = (
        UniqueConstraint("kb_id", "sha256", name="uq_knowledge_documents_kb_sha256"),
        Index("ix_knowledge_documents_queue", "status", "next_attempt_at"),
        Index("ix_knowledge_documents_kb_created", "kb_id", "created_at", "id"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(36))
    kb_id: Mapped[str] = mapped_column(ForeignKey("knowledge_bases.id", ondelete="CASCADE"))
    filename: Mapped[str] = mapped_column(String(255))
    content_type: Mapped[str] = mapped_column(String(100))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    blob_key: Mapped[str] = mapped_column(String(300))
    meta: Mapped[dict[str, str]] = mapped_column("metadata")
    status: Mapped[str] = mapped_column(String(16))
    error: Mapped[str] = mapped_column(String(2000))
    chunk_count: Mapped[int]
    vector_count: Mapped[int]
    parse_ms: Mapped[float]
    chunk_ms: Mapped[float]
    index_ms: Mapped[float]
    generation: Mapped[int]
    attempts: Mapped[int]
    next_attempt_at: Mapped[datetime]
    lease_owner: Mapped[str | None] = mapped_column(String(200))
    lease_expires_at: Mapped[datetime | None]
    # The upload's W3C traceparent: its indexing links back to it.
    upload_traceparent: Mapped[str | None] = mapped_column(String(64))
    # What a person should know about how the file was read (low-confidence OCR, skipped attachments).
    warnings: Mapped[list[str]] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
