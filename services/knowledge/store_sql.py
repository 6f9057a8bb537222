"""KnowledgeStore on SQLAlchemy: SQLite by default, PostgreSQL in production.

Every write a worker makes names the document's id, its generation and the
worker as lease owner, so it takes effect only while that worker still holds
that run of that document: a deleted, restarted or re-leased document is left
alone by a worker that lost it.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone

from sqlalchemy import and_, delete, func, or_, select, tuple_, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from services.knowledge.domain import Document, DocumentStatus, KnowledgeBase, StageTimings
from services.knowledge.store import Claim, Cursor, DuplicateName, KnowledgeBaseGone, NewDocument
from services.knowledge.tables import DocumentRow, KnowledgeBaseRow

# A document's warnings kept, at most (a scanned book could warn of every page).
MAX_WARNINGS = 50
UNFINISHED = [s.value for s in DocumentStatus if not s.finished]


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _knowledge_base(row: KnowledgeBaseRow, document_count: int = 0) -> KnowledgeBase:
    return KnowledgeBase(
        id=row.id, tenant_id=row.tenant_id, name=row.name, display_name=row.display_name,
        description=row.description, chunk_max_tokens=row.chunk_max_tokens,
        chunk_overlap_tokens=row.chunk_overlap_tokens, created_at=row.created_at, updated_at=row.updated_at,
        document_count=document_count,
    )


def _document(row: DocumentRow) -> Document:
    return Document(
        id=row.id, tenant_id=row.tenant_id, kb_id=row.kb_id, filename=row.filename, content_type=row.content_type,
        size_bytes=row.size_bytes, sha256=row.sha256, status=DocumentStatus(row.status), created_at=row.created_at,
        updated_at=row.updated_at, metadata=dict(row.meta), chunk_count=row.chunk_count,
        vector_count=row.vector_count, error=row.error, warnings=tuple(row.warnings or ()),
        timings=StageTimings(row.parse_ms, row.chunk_ms, row.index_ms), generation=row.generation,
        attempts=row.attempts,
    )


def _after(columns, cursor: Cursor | None):
    return tuple_(*columns) > tuple_(*cursor) if cursor else True


def _lease_free(now: datetime):
    return or_(DocumentRow.lease_expires_at.is_(None), DocumentRow.lease_expires_at < now)


def _held(claim: Claim):
    return and_(DocumentRow.id == claim.document.id, DocumentRow.generation == claim.document.generation,
                DocumentRow.lease_owner == claim.owner)


class SqlKnowledgeStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self.sessions = async_sessionmaker(engine, expire_on_commit=False)

    async def create_knowledge_base(
        self, tenant_id: str, name: str, display_name: str, description: str, chunk_max_tokens: int,
        chunk_overlap_tokens: int,
    ) -> KnowledgeBase:
        now = _now()
        row = KnowledgeBaseRow(
            id=str(uuid.uuid4()), tenant_id=tenant_id, name=name, display_name=display_name,
            description=description, chunk_max_tokens=chunk_max_tokens, chunk_overlap_tokens=chunk_overlap_tokens,
            created_at=now, updated_at=now,
        )
        try:
            async with self.sessions.begin() as db:
                db.add(row)
        except IntegrityError:
            raise DuplicateName(name) from None
        return _knowledge_base(row)

    def _with_counts(self):
        documents = (select(func.count()).where(DocumentRow.kb_id == KnowledgeBaseRow.id)
                     .correlate(KnowledgeBaseRow).scalar_subquery())
        return select(KnowledgeBaseRow, documents)

    async def knowledge_base(self, tenant_id: str, kb_id: str) -> KnowledgeBase | None:
        async with self.sessions() as db:
            found = (await db.execute(self._with_counts().where(
                KnowledgeBaseRow.id == kb_id, KnowledgeBaseRow.tenant_id == tenant_id))).first()
        return _knowledge_base(*found) if found else None

    async def list_knowledge_bases(self, tenant_id: str, limit: int, after: Cursor | None,
                                   name: str = "") -> list[KnowledgeBase]:
        order = (KnowledgeBaseRow.created_at, KnowledgeBaseRow.id)
        named = KnowledgeBaseRow.name == name if name else True
        async with self.sessions() as db:
            rows = await db.execute(self._with_counts().where(
                KnowledgeBaseRow.tenant_id == tenant_id, named, _after(order, after)).order_by(*order).limit(limit))
        return [_knowledge_base(*row) for row in rows]

    async def delete_knowledge_base(self, tenant_id: str, kb_id: str) -> list[str] | None:
        async with self.sessions.begin() as db:
            blob_keys = list(await db.scalars(select(DocumentRow.blob_key).where(
                DocumentRow.kb_id == kb_id, DocumentRow.tenant_id == tenant_id)))
            # Explicitly, not by cascade: SQLite enforces foreign keys only per connection setting.
            await db.execute(delete(DocumentRow).where(DocumentRow.kb_id == kb_id, DocumentRow.tenant_id == tenant_id))
            deleted = await db.execute(delete(KnowledgeBaseRow).where(
                KnowledgeBaseRow.id == kb_id, KnowledgeBaseRow.tenant_id == tenant_id))
        return blob_keys if deleted.rowcount else None

    async def add_document(self, new: NewDocument) -> tuple[Document, bool]:
        now = _now()
        row = DocumentRow(
            id=str(uuid.uuid4()), tenant_id=new.tenant_id, kb_id=new.kb_id, filename=new.filename,
            content_type=new.content_type, size_bytes=new.size_bytes, sha256=new.sha256, blob_key=new.blob_key,
            meta=new.metadata, status=DocumentStatus.PENDING.value, error="", chunk_count=0, vector_count=0,
            parse_ms=0.0, chunk_ms=0.0, index_ms=0.0, generation=0, attempts=0, next_attempt_at=now,
            lease_owner=None, lease_expires_at=None, created_at=now, updated_at=now,
            upload_traceparent=new.upload_traceparent or None, warnings=[],
        )
        try:
            async with self.sessions.begin() as db:
                db.add(row)
            return _document(row), False
        except IntegrityError:
            pass
        async with self.sessions() as db:
            existing = await db.scalar(select(DocumentRow).where(
                DocumentRow.kb_id == new.kb_id, DocumentRow.sha256 == new.sha256))
        if existing is None:  # the failure was the base's foreign key: it was deleted meanwhile
            raise KnowledgeBaseGone(new.kb_id)
        return _document(existing), True

    async def document(self, tenant_id: str, document_id: str) -> Document | None:
        async with self.sessions() as db:
            row = await db.scalar(select(DocumentRow).where(
                DocumentRow.id == document_id, DocumentRow.tenant_id == tenant_id))
        return _document(row) if row else None

    async def list_documents(self, tenant_id: str, kb_id: str, limit: int, after: Cursor | None,
                             sha256: str = "") -> list[Document]:
        order = (DocumentRow.created_at, DocumentRow.id)
        # (kb_id, sha256) is unique, and indexed by its constraint.
        with_bytes = DocumentRow.sha256 == sha256 if sha256 else True
        async with self.sessions() as db:
            rows = await db.scalars(select(DocumentRow).where(
                DocumentRow.kb_id == kb_id, DocumentRow.tenant_id == tenant_id, with_bytes, _after(order, after),
            ).order_by(*order).limit(limit))
        return [_document(row) for row in rows]

    async def delete_document(self, tenant_id: str, document_id: str) -> str | None:
        async with self.sessions.begin() as db:
            blob_key = await db.scalar(delete(DocumentRow).where(
                DocumentRow.id == document_id, DocumentRow.tenant_id == tenant_id).returning(DocumentRow.blob_key))
        return blob_key

    async def restart_document(self, tenant_id: str, document_id: str) -> Document | None:
        now = _now()
        async with self.sessions.begin() as db:
            row = await db.scalar(update(DocumentRow).where(
                DocumentRow.id == document_id, DocumentRow.tenant_id == tenant_id,
            ).values(
                status=DocumentStatus.PENDING.value, error="", warnings=[], generation=DocumentRow.generation + 1,
                attempts=0,
                next_attempt_at=now, lease_owner=None, lease_expires_at=None, updated_at=now,
            ).returning(DocumentRow))
        return _document(row) if row else None

    async def claim_due(self, owner: str, limit: int, lease_seconds: float) -> list[Claim]:
        now = _now()
        async with self.sessions() as db:
            due = (await db.execute(select(DocumentRow.id, DocumentRow.generation).where(
                DocumentRow.status.in_(UNFINISHED), DocumentRow.next_attempt_at <= now, _lease_free(now),
            ).order_by(DocumentRow.next_attempt_at).limit(limit))).all()
        claimed = []
        for document_id, generation in due:
            # A compare-and-set: of two workers racing for a row, one updates it.
            # The attempt is counted here, with the claim, so that a run whose
            # process dies before it can record anything still uses one up.
            async with self.sessions.begin() as db:
                taken = await db.execute(update(DocumentRow).where(
                    DocumentRow.id == document_id, DocumentRow.generation == generation, _lease_free(now),
                ).values(lease_owner=owner, lease_expires_at=now + timedelta(seconds=lease_seconds),
                         attempts=DocumentRow.attempts + 1))
            if taken.rowcount:
                claimed.append(document_id)
        if not claimed:
            return []
        async with self.sessions() as db:
            rows = await db.execute(
                select(DocumentRow, KnowledgeBaseRow.chunk_max_tokens, KnowledgeBaseRow.chunk_overlap_tokens)
                .join(KnowledgeBaseRow, KnowledgeBaseRow.id == DocumentRow.kb_id)
                .where(DocumentRow.id.in_(claimed), DocumentRow.lease_owner == owner)
            )
            return [Claim(_document(row), row.blob_key, max_tokens, overlap, owner, row.upload_traceparent or "")
                    for row, max_tokens, overlap in rows]

    async def _update_held(self, claim: Claim, **values) -> bool:
        async with self.sessions.begin() as db:
            result = await db.execute(update(DocumentRow).where(_held(claim)).values(**values))
        return bool(result.rowcount)

    async def renew_lease(self, claim: Claim, lease_seconds: float) -> bool:
        return await self._update_held(claim, lease_expires_at=_now() + timedelta(seconds=lease_seconds))

    async def set_status(self, claim: Claim, status: DocumentStatus) -> bool:
        return await self._update_held(claim, status=status.value, updated_at=_now())

    async def finish(
        self, claim: Claim, status: DocumentStatus, *, chunk_count: int = 0, vector_count: int = 0,
        timings: StageTimings = StageTimings(), error: str = "", warnings: Sequence[str] = (),
        metadata: dict[str, str] | None = None,
    ) -> bool:
        merged = {} if metadata is None else {"meta": metadata}
        return await self._update_held(
            claim, status=status.value, chunk_count=chunk_count, vector_count=vector_count, error=error[:2000],
            parse_ms=timings.parse_ms, chunk_ms=timings.chunk_ms, index_ms=timings.index_ms,
            warnings=[w[:500] for w in warnings[:MAX_WARNINGS]], lease_owner=None, lease_expires_at=None,
            updated_at=_now(), **merged,
        )

    async def retry_later(self, claim: Claim, error: str, due: datetime, *, attempt_counts: bool = True) -> bool:
        refund = {} if attempt_counts else {"attempts": DocumentRow.attempts - 1}
        return await self._update_held(
            claim, status=DocumentStatus.PENDING.value, error=error[:2000], next_attempt_at=due,
            lease_owner=None, lease_expires_at=None, updated_at=_now(), **refund,
        )

    async def count_by_status(self) -> dict[str, int]:
        async with self.sessions() as db:
            rows = await db.execute(select(DocumentRow.status, func.count()).group_by(DocumentRow.status))
        return {status: count for status, count in rows}

    async def release_leases(self, owner: str) -> int:
        async with self.sessions.begin() as db:
            result = await db.execute(update(DocumentRow).where(DocumentRow.lease_owner == owner)
                                      .values(lease_owner=None, lease_expires_at=None))
        return result.rowcount
