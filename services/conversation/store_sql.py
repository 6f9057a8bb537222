"""ConversationStore on SQLAlchemy: SQLite by default, PostgreSQL in production.

Statements are SQLAlchemy Core on a connection, over the tables tables.py maps:
the ORM's session and unit of work cost more CPU than a send's statements
themselves (a send finds the conversation, stores the question, reads the
history and stores the answer), and sends are most of what this service does."""

from __future__ import annotations

import uuid
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import and_, delete, func, insert, or_, select, tuple_, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from meshkit.errors import Aborted
from services.conversation.domain import Conversation, Message, Mode, Role
from services.conversation.store import Cursor, DuplicateSend, Send
from services.conversation.tables import ConversationRow, MessageRow, SendRow

TITLE_CHARS = 80
# How often a send tries to take an idempotency key that a forgotten send is giving up.
MAX_KEY_CLAIMS = 3
CONVERSATIONS, MESSAGES, SENDS = ConversationRow.__table__, MessageRow.__table__, SendRow.__table__


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _conversation(row: Any) -> Conversation:
    """From a row of _with_counts()."""
    return Conversation(row.id, row.tenant_id, row.user_id, row.title, Mode(row.mode), tuple(row.kb_ids),
                        row.created_at, row.updated_at, row.message_count)


def _with_counts():
    messages = (select(func.count()).where(MESSAGES.c.conversation_id == CONVERSATIONS.c.id)
                .correlate(CONVERSATIONS).scalar_subquery())
    return select(CONVERSATIONS, messages.label("message_count"))


def _message(row: Any) -> Message:
    """From a row of MESSAGES."""
    return Message(row.id, row.conversation_id, Role(row.role), row.content, row.created_at, row.parent_id,
                   list(row.sources), dict(row.metrics))


def _title(content: str) -> str:
    line = " ".join(content.split())
    return line if len(line) <= TITLE_CHARS else line[: TITLE_CHARS - 1].rstrip() + "…"


def _new_message(conversation_id: str, role: Role, content: str, parent_id: str = "",
                 sources: list[dict[str, Any]] | None = None, metrics: dict[str, Any] | None = None) -> Message:
    return Message(str(uuid.uuid4()), conversation_id, role, content, _now(), parent_id, sources or [], metrics or {})


def _message_values(message: Message) -> dict[str, Any]:
    return {"id": message.id, "conversation_id": message.conversation_id, "role": message.role.value,
            "content": message.content, "parent_id": message.parent_id, "sources": message.sources,
            "metrics": message.metrics, "created_at": message.created_at}


class SqlConversationStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def create_conversation(self, tenant_id: str, user_id: str, title: str, mode: Mode,
                                  kb_ids: tuple[str, ...]) -> Conversation:
        now = _now()
        conversation = Conversation(str(uuid.uuid4()), tenant_id, user_id, title, mode, kb_ids, now, now)
        async with self.engine.begin() as db:
            await db.execute(insert(CONVERSATIONS), {
                "id": conversation.id, "tenant_id": tenant_id, "user_id": user_id, "title": title,
                "mode": mode.value, "kb_ids": list(kb_ids), "created_at": now, "updated_at": now})
        return conversation

    async def conversation(self, user_id: str, conversation_id: str) -> Conversation | None:
        async with self.engine.connect() as db:
            found = (await db.execute(_with_counts().where(
                CONVERSATIONS.c.id == conversation_id, CONVERSATIONS.c.user_id == user_id))).first()
        return _conversation(found) if found else None

    async def list_conversations(self, user_id: str, limit: int, after: Cursor | None) -> list[Conversation]:
        order = (CONVERSATIONS.c.updated_at, CONVERSATIONS.c.id)
        query = _with_counts().where(CONVERSATIONS.c.user_id == user_id)
        if after:
            query = query.where(tuple_(*order) < tuple_(*after))
        async with self.engine.connect() as db:
            rows = await db.execute(query.order_by(*(c.desc() for c in order)).limit(limit))
        return [_conversation(row) for row in rows]

    async def delete_conversation(self, user_id: str, conversation_id: str) -> bool:
        async with self.engine.begin() as db:
            owned = CONVERSATIONS.c.id == conversation_id, CONVERSATIONS.c.user_id == user_id
            if not await db.scalar(select(CONVERSATIONS.c.id).where(*owned)):
                return False
            # Explicitly, children first: not every connection enforces foreign keys.
            await db.execute(delete(SENDS).where(SENDS.c.conversation_id == conversation_id))
            await db.execute(delete(MESSAGES).where(MESSAGES.c.conversation_id == conversation_id))
            await db.execute(delete(CONVERSATIONS).where(*owned))
        return True

    async def add_user_message(self, conversation: Conversation, content: str, idempotency_key: str) -> Message:
        for _ in range(MAX_KEY_CLAIMS):
            try:
                return await self._insert_user_message(conversation, content, idempotency_key)
            except IntegrityError:
                if not idempotency_key:
                    raise
            if (earlier := await self.send(conversation.user_id, idempotency_key)) is not None:
                raise DuplicateSend(earlier)
            # The send that held the key was forgotten (left unanswered) since the insert failed:
            # the key is free again.
        raise Aborted("another send with this idempotency key is starting; retry shortly")

    async def _insert_user_message(self, conversation: Conversation, content: str, idempotency_key: str) -> Message:
        message = _new_message(conversation.id, Role.USER, content)
        async with self.engine.begin() as db:
            await db.execute(insert(MESSAGES), _message_values(message))
            if idempotency_key:
                await db.execute(insert(SENDS), {
                    "id": str(uuid.uuid4()), "user_id": conversation.user_id, "idempotency_key": idempotency_key,
                    "conversation_id": conversation.id, "user_message_id": message.id, "answer_message_id": None,
                    "created_at": message.created_at})
            await db.execute(update(CONVERSATIONS).where(CONVERSATIONS.c.id == conversation.id).values(
                updated_at=message.created_at,
                title=func.coalesce(func.nullif(CONVERSATIONS.c.title, ""), _title(content))))
        return message

    async def add_answer(self, user_message: Message, content: str, sources: list[dict[str, Any]],
                         metrics: dict[str, Any]) -> Message:
        answer = _new_message(user_message.conversation_id, Role.ASSISTANT, content, user_message.id, sources,
                              metrics)
        async with self.engine.begin() as db:
            await db.execute(insert(MESSAGES), _message_values(answer))
            await db.execute(update(SENDS).where(SENDS.c.user_message_id == user_message.id)
                             .values(answer_message_id=answer.id))
            await db.execute(update(CONVERSATIONS).where(CONVERSATIONS.c.id == user_message.conversation_id)
                             .values(updated_at=answer.created_at))
        return answer

    async def forget(self, user_message: Message) -> None:
        async with self.engine.begin() as db:
            await db.execute(delete(SENDS).where(SENDS.c.user_message_id == user_message.id))
            await db.execute(delete(MESSAGES).where(MESSAGES.c.id == user_message.id))

    async def messages(self, conversation_id: str, limit: int, after: Cursor | None) -> list[Message]:
        order = (MESSAGES.c.created_at, MESSAGES.c.id)
        query = select(MESSAGES).where(MESSAGES.c.conversation_id == conversation_id)
        if after:
            query = query.where(tuple_(*order) > tuple_(*after))
        async with self.engine.connect() as db:
            rows = await db.execute(query.order_by(*order).limit(limit))
        return [_message(row) for row in rows]

    async def recent_messages(self, conversation_id: str, before: Message, limit: int) -> list[Message]:
        earlier = or_(MESSAGES.c.created_at < before.created_at,
                      and_(MESSAGES.c.created_at == before.created_at, MESSAGES.c.id != before.id,
                           MESSAGES.c.id < before.id))
        async with self.engine.connect() as db:
            rows = await db.execute(select(MESSAGES).where(MESSAGES.c.conversation_id == conversation_id, earlier)
                                    .order_by(MESSAGES.c.created_at.desc(), MESSAGES.c.id.desc()).limit(limit))
        return [_message(row) for row in rows][::-1]

    async def send(self, user_id: str, idempotency_key: str) -> Send | None:
        # One statement, so that a send being forgotten meanwhile is read whole or not at all.
        async with self.engine.connect() as db:
            rows = (await db.execute(
                select(MESSAGES, SENDS.c.user_message_id, SENDS.c.created_at.label("sent_at"))
                .join(SENDS, or_(MESSAGES.c.id == SENDS.c.user_message_id,
                                 MESSAGES.c.id == SENDS.c.answer_message_id))
                .where(SENDS.c.user_id == user_id, SENDS.c.idempotency_key == idempotency_key))).all()
        question = next((row for row in rows if row.id == row.user_message_id), None)
        if question is None:
            return None
        answer = next((row for row in rows if row.id != row.user_message_id), None)
        return Send(_message(question), _message(answer) if answer else None, question.sent_at)
