"""ConversationStore on SQLAlchemy: SQLite by default, PostgreSQL in production."""

from __future__ import annotations

import uuid
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import and_, delete, func, or_, select, tuple_, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from services.conversation.domain import Conversation, Message, Mode, Role
from services.conversation.store import Cursor, DuplicateSend, Send
from services.conversation.tables import ConversationRow, MessageRow, SendRow

TITLE_CHARS = 80


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _conversation(row: ConversationRow, message_count: int = 0) -> Conversation:
    return Conversation(row.id, row.tenant_id, row.user_id, row.title, Mode(row.mode), tuple(row.kb_ids),
                        row.created_at, row.updated_at, message_count)


def _message(row: MessageRow) -> Message:
    return Message(row.id, row.conversation_id, Role(row.role), row.content, row.created_at, row.parent_id,
                   list(row.sources), dict(row.metrics))


def _title(content: str) -> str:
    line = " ".join(content.split())
    return line if len(line) <= TITLE_CHARS else line[: TITLE_CHARS - 1].rstrip() + "…"


class SqlConversationStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self.sessions = async_sessionmaker(engine, expire_on_commit=False)

    async def create_conversation(self, tenant_id: str, user_id: str, title: str, mode: Mode,
                                  kb_ids: tuple[str, ...]) -> Conversation:
        now = _now()
        row = ConversationRow(id=str(uuid.uuid4()), tenant_id=tenant_id, user_id=user_id, title=title,
                              mode=mode.value, kb_ids=list(kb_ids), created_at=now, updated_at=now)
        async with self.sessions.begin() as db:
            db.add(row)
        return _conversation(row)

    def _with_counts(self):
        messages = (select(func.count()).where(MessageRow.conversation_id == ConversationRow.id)
                    .correlate(ConversationRow).scalar_subquery())
        return select(ConversationRow, messages)

    async def conversation(self, user_id: str, conversation_id: str) -> Conversation | None:
        async with self.sessions() as db:
            found = (await db.execute(self._with_counts().where(
                ConversationRow.id == conversation_id, ConversationRow.user_id == user_id))).first()
        return _conversation(*found) if found else None

    async def list_conversations(self, user_id: str, limit: int, after: Cursor | None) -> list[Conversation]:
        order = (ConversationRow.updated_at, ConversationRow.id)
        query = self._with_counts().where(ConversationRow.user_id == user_id)
        if after:
            query = query.where(tuple_(*order) < tuple_(*after))
        async with self.sessions() as db:
            rows = await db.execute(query.order_by(*(c.desc() for c in order)).limit(limit))
        return [_conversation(*row) for row in rows]

    async def delete_conversation(self, user_id: str, conversation_id: str) -> bool:
        async with self.sessions.begin() as db:
            owned = ConversationRow.id == conversation_id, ConversationRow.user_id == user_id
            if not await db.scalar(select(ConversationRow.id).where(*owned)):
                return False
            # Explicitly, children first: not every connection enforces foreign keys.
            await db.execute(delete(SendRow).where(SendRow.conversation_id == conversation_id))
            await db.execute(delete(MessageRow).where(MessageRow.conversation_id == conversation_id))
            await db.execute(delete(ConversationRow).where(*owned))
        return True

    async def add_user_message(self, conversation: Conversation, content: str, idempotency_key: str) -> Message:
        now = _now()
        row = MessageRow(id=str(uuid.uuid4()), conversation_id=conversation.id, role=Role.USER.value,
                         content=content, parent_id="", sources=[], metrics={}, created_at=now)
        try:
            async with self.sessions.begin() as db:
                db.add(row)
                await db.flush()
                if idempotency_key:
                    db.add(SendRow(id=str(uuid.uuid4()), user_id=conversation.user_id,
                                   idempotency_key=idempotency_key, conversation_id=conversation.id,
                                   user_message_id=row.id, answer_message_id=None, created_at=now))
                    await db.flush()
                await db.execute(update(ConversationRow).where(ConversationRow.id == conversation.id).values(
                    updated_at=now, title=func.coalesce(func.nullif(ConversationRow.title, ""), _title(content))))
        except IntegrityError:
            earlier = await self.send(conversation.user_id, idempotency_key) if idempotency_key else None
            if earlier is None:
                raise
            raise DuplicateSend(earlier) from None
        return _message(row)

    async def add_answer(self, user_message: Message, content: str, sources: list[dict[str, Any]],
                         metrics: dict[str, Any]) -> Message:
        now = _now()
        row = MessageRow(id=str(uuid.uuid4()), conversation_id=user_message.conversation_id,
                         role=Role.ASSISTANT.value, content=content, parent_id=user_message.id, sources=sources,
                         metrics=metrics, created_at=now)
        async with self.sessions.begin() as db:
            db.add(row)
            await db.flush()
            await db.execute(update(SendRow).where(SendRow.user_message_id == user_message.id)
                             .values(answer_message_id=row.id))
            await db.execute(update(ConversationRow).where(ConversationRow.id == user_message.conversation_id)
                             .values(updated_at=now))
        return _message(row)

    async def forget(self, user_message: Message) -> None:
        async with self.sessions.begin() as db:
            await db.execute(delete(SendRow).where(SendRow.user_message_id == user_message.id))
            await db.execute(delete(MessageRow).where(MessageRow.id == user_message.id))

    async def messages(self, conversation_id: str, limit: int, after: Cursor | None) -> list[Message]:
        order = (MessageRow.created_at, MessageRow.id)
        query = select(MessageRow).where(MessageRow.conversation_id == conversation_id)
        if after:
            query = query.where(tuple_(*order) > tuple_(*after))
        async with self.sessions() as db:
            rows = await db.scalars(query.order_by(*order).limit(limit))
        return [_message(row) for row in rows]

    async def recent_messages(self, conversation_id: str, before: Message, limit: int) -> list[Message]:
        earlier = or_(MessageRow.created_at < before.created_at,
                      and_(MessageRow.created_at == before.created_at, MessageRow.id != before.id,
                           MessageRow.id < before.id))
        async with self.sessions() as db:
            rows = await db.scalars(select(MessageRow).where(MessageRow.conversation_id == conversation_id, earlier)
                                    .order_by(MessageRow.created_at.desc(), MessageRow.id.desc()).limit(limit))
        return [_message(row) for row in rows][::-1]

    async def send(self, user_id: str, idempotency_key: str) -> Send | None:
        async with self.sessions() as db:
            found = await db.scalar(select(SendRow).where(SendRow.user_id == user_id,
                                                          SendRow.idempotency_key == idempotency_key))
            if found is None:
                return None
            user_message = await db.get(MessageRow, found.user_message_id)
            answer = await db.get(MessageRow, found.answer_message_id) if found.answer_message_id else None
        return Send(_message(user_message), _message(answer) if answer else None, found.created_at)
