"""Conversation's domain logic: a user's conversations and the answering of
their messages. Knows nothing of gRPC.

An answer is made by a task of its own, not by the request that asked: a
client that goes away mid-stream stops receiving, the answer is still
written and stored. A message that cannot be answered is removed again, so
a failed send leaves nothing behind and can simply be retried.
"""

from __future__ import annotations

import asyncio
import time
import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from meshkit import paging
from meshkit.errors import Aborted, FailedPrecondition, InvalidArgument, NotFound, Unavailable
from meshkit.ids import knowledge_base_ids
from meshkit.knowledge_bases import KnowledgeBases, require_existing
from meshkit.paging import Page
from services.conversation.answerer import Answerer
from services.conversation.domain import AnswerResult, Conversation, Message, Mode
from services.conversation.store import ConversationStore, DuplicateSend, Send

log = logging.getLogger(__name__)

MAX_CONTENT_CHARS = 8000
MAX_TITLE_CHARS = 200
MAX_KEY_CHARS = 200


@dataclass(frozen=True)
class ChatsConfig:
    # Earlier messages sent along as context; the rag_engine bounds them by tokens.
    history_messages: int = 10
    # How long a send may take; a send with the same key is refused meanwhile.
    answer_timeout_seconds: float = 120.0


@dataclass(frozen=True)
class Caller:
    tenant_id: str
    user_id: str


class Chats:
    def __init__(self, store: ConversationStore, answerers: dict[Mode, Answerer], knowledge_bases: KnowledgeBases,
                 config: ChatsConfig) -> None:
        self.store = store
        self.answerers = answerers
        self.knowledge_bases = knowledge_bases
        self.config = config
        self._answering: set[asyncio.Task] = set()

    async def close(self) -> None:
        """Lets the answers being written finish (they are stored as they end)."""
        if self._answering:
            await asyncio.wait(self._answering, timeout=self.config.answer_timeout_seconds)

    async def create(self, caller: Caller, title: str, mode: Mode, kb_ids: Sequence[str]) -> Conversation:
        title = " ".join(title.split())
        if len(title) > MAX_TITLE_CHARS:
            raise InvalidArgument(f"at most {MAX_TITLE_CHARS} characters", field="conversation.title")
        kb_ids = await require_existing(self.knowledge_bases, knowledge_base_ids(kb_ids, "conversation.kb_ids"))
        return await self.store.create_conversation(caller.tenant_id, caller.user_id, title, mode, kb_ids)

    async def get(self, caller: Caller, conversation_id: str) -> Conversation:
        found = await self.store.conversation(caller.user_id, conversation_id) if conversation_id else None
        if found is None:
            raise NotFound(f"conversation {conversation_id!r} not found")
        return found

    async def list(self, caller: Caller, page_size: int, page_token: str) -> Page:
        size = paging.page_size(page_size)
        items = await self.store.list_conversations(caller.user_id, size + 1, paging.decode_token(page_token))
        return paging.page_of(items, size, lambda c: (c.updated_at, c.id))

    async def delete(self, caller: Caller, conversation_id: str) -> None:
        if not await self.store.delete_conversation(caller.user_id, conversation_id):
            raise NotFound(f"conversation {conversation_id!r} not found")

    async def messages(self, caller: Caller, conversation_id: str, page_size: int, page_token: str) -> Page:
        size = paging.page_size(page_size)
        after = paging.decode_token(page_token)
        conversation = await self.get(caller, conversation_id)
        items = await self.store.messages(conversation.id, size + 1, after)
        return paging.page_of(items, size, lambda m: (m.created_at, m.id))

    async def send(self, caller: Caller, conversation_id: str, content: str, kb_ids: Sequence[str] = (),
                   use_rerank: bool = False, idempotency_key: str = "") -> AsyncIterator[Message | str]:
        """The stored user message, the answer in pieces, then the stored answer."""
        content = content.strip()
        if not content:
            raise InvalidArgument("is required", field="content")
        if len(content) > MAX_CONTENT_CHARS:
            raise InvalidArgument(f"at most {MAX_CONTENT_CHARS} characters", field="content")
        if len(idempotency_key) > MAX_KEY_CHARS:
            raise InvalidArgument(f"at most {MAX_KEY_CHARS} characters", field="idempotency_key")
        kb_ids = knowledge_base_ids(kb_ids)
        conversation = await self.get(caller, conversation_id)
        kb_ids = await require_existing(self.knowledge_bases, kb_ids)
        answerer = self.answerers.get(conversation.mode)
        if answerer is None:
            raise FailedPrecondition(f"{conversation.mode.value} conversations cannot be answered here yet")
        try:
            user_message = await self.store.add_user_message(conversation, content, idempotency_key)
        except DuplicateSend as duplicate:
            user_message = self._check_retry(duplicate.send, conversation, content)
            if duplicate.send.answer is not None:
                for event in (user_message, duplicate.send.answer.content, duplicate.send.answer):
                    yield event
                return
        events: asyncio.Queue[Message | str | BaseException] = asyncio.Queue()
        task = asyncio.create_task(self._answer(answerer, conversation, user_message, kb_ids, use_rerank, events))
        self._answering.add(task)
        task.add_done_callback(self._answering.discard)
        yield user_message
        while True:
            event = await events.get()
            if isinstance(event, BaseException):
                raise event
            yield event
            if isinstance(event, Message):
                return

    def _check_retry(self, earlier: Send, conversation: Conversation, content: str) -> Message:
        """The user message of an earlier send with the same key, if this is a retry of it."""
        message = earlier.user_message
        if message.conversation_id != conversation.id or message.content != content:
            raise InvalidArgument("was used for another message", field="idempotency_key")
        running_until = earlier.created_at + timedelta(seconds=self.config.answer_timeout_seconds)
        if earlier.answer is None and datetime.now(timezone.utc) < running_until:
            raise Aborted("the first send with this idempotency key is still being answered; retry shortly")
        # Answered, or left unanswered by a crash long enough ago: answer it now.
        return message

    async def _answer(self, answerer: Answerer, conversation: Conversation, user_message: Message,
                      kb_ids: tuple[str, ...], use_rerank: bool, events: asyncio.Queue) -> None:
        try:
            # A conversation that had no messages when this one came has no history to read.
            history = (await self.store.recent_messages(conversation.id, user_message, self.config.history_messages)
                       if conversation.message_count else [])
            result: AnswerResult | None = None
            async with asyncio.timeout(self.config.answer_timeout_seconds):
                async for event in answerer.stream(user_message.content, kb_ids or conversation.kb_ids, history,
                                                   use_rerank):
                    if isinstance(event, AnswerResult):
                        result = event
                    else:
                        events.put_nowait(event)
            if result is None:
                raise RuntimeError("the answer stream ended without its result")
            events.put_nowait(await self.store.add_answer(user_message, result.text, result.sources, result.metrics))
        except TimeoutError:
            await self._give_up(user_message, events, Unavailable(
                f"no answer within {self.config.answer_timeout_seconds:.0f} s; nothing was kept, send it again"))
        except BaseException as error:
            await self._give_up(user_message, events, error)
            if not isinstance(error, Exception):
                raise

    async def _give_up(self, user_message: Message, events: asyncio.Queue, error: BaseException) -> None:
        """Removes the unanswered message, so that a retry with its key starts afresh, then reports."""
        log.warning("message %s could not be answered: %r", user_message.id, error)
        forgotten = await self._forget(user_message)
        events.put_nowait(error if isinstance(error, Exception) else RuntimeError("answering was cancelled"))
        if not forgotten and isinstance(error, Exception):
            # The database is what failed: keep trying after the caller has its answer. Until the
            # message goes, a retry with its key is told the first is still being answered.
            delay, deadline = 0.2, time.monotonic() + self.config.answer_timeout_seconds
            while not await self._forget(user_message) and time.monotonic() < deadline:
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def _forget(self, user_message: Message) -> bool:
        try:
            await self.store.forget(user_message)
        except Exception as error:
            log.warning("could not remove unanswered message %s yet: %r", user_message.id, error)
            return False
        return True
