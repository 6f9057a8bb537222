"""What conversation needs from its database. store_sql.py implements it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from services.conversation.domain import Conversation, Message, Mode

# Where a listing resumes: the sort key of the last item returned.
Cursor = tuple[datetime, str]


@dataclass(frozen=True)
class Send:
    """An earlier send under the same idempotency key."""

    user_message: Message
    answer: Message | None
    created_at: datetime


class DuplicateSend(Exception):
    def __init__(self, send: Send) -> None:
        super().__init__("a send with this idempotency key exists")
        self.send = send


class ConversationStore(Protocol):
    async def create_conversation(self, tenant_id: str, user_id: str, title: str, mode: Mode,
                                  kb_ids: tuple[str, ...]) -> Conversation: ...

    async def conversation(self, user_id: str, conversation_id: str) -> Conversation | None:
        """The user's conversation; None for anyone else's."""

    async def list_conversations(self, user_id: str, limit: int, after: Cursor | None) -> list[Conversation]:
        """Most recently active first."""

    async def delete_conversation(self, user_id: str, conversation_id: str) -> bool: ...

    async def add_user_message(self, conversation: Conversation, content: str, idempotency_key: str) -> Message:
        """Stores the message (and titles an untitled conversation by it). With
        a key already used by this user, raises DuplicateSend instead."""

    async def add_answer(self, user_message: Message, content: str, sources: list[dict[str, Any]],
                         metrics: dict[str, Any]) -> Message:
        """Stores the answer to `user_message`, and records it on the message's send."""

    async def forget(self, user_message: Message) -> None:
        """Removes a message that could not be answered, and its send."""

    async def messages(self, conversation_id: str, limit: int, after: Cursor | None) -> list[Message]:
        """Oldest first."""

    async def recent_messages(self, conversation_id: str, before: Message, limit: int) -> list[Message]:
        """The messages before `before`, oldest first, at most `limit` of the newest."""

    async def send(self, user_id: str, idempotency_key: str) -> Send | None: ...
