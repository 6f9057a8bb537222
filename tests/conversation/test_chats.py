"""The answering of a message outlives the request that asked for it. The
answerer here is a stand-in that writes slowly, so the request can leave
mid-answer; the store is the real SQL one."""

from __future__ import annotations

import asyncio

import pytest

from meshkit import db
from services.conversation.chats import Caller, Chats, ChatsConfig
from services.conversation.domain import AnswerResult, Message, Mode, Role
from services.conversation.server import MIGRATIONS
from services.conversation.store_sql import SqlConversationStore
from tests.fixtures.mesh import NoKnowledgeBasesStandIn

CALLER = Caller("t1", "u1")


class SlowStandInAnswerer:
    """Writes its answer a piece every 50 ms; records what it was given."""

    def __init__(self) -> None:
        self.histories: list[list[str]] = []

    async def stream(self, question, kb_ids, history, use_rerank):
        self.histories.append([m.content for m in history])
        for piece in ("The ", "answer ", "to ", question):
            await asyncio.sleep(0.05)
            yield piece
        yield AnswerResult(f"The answer to {question}", [{"chunkId": "c1"}], {"generator": "stand-in"})


@pytest.fixture
async def chats(tmp_path):
    engine = db.create_engine(f"sqlite:///{tmp_path / 'conversation.db'}")
    await db.migrate(engine, MIGRATIONS, version_table="alembic_version_conversation")
    answerer = SlowStandInAnswerer()
    yield Chats(SqlConversationStore(engine), {Mode.RAG: answerer}, NoKnowledgeBasesStandIn(),
                ChatsConfig(history_messages=2)), answerer
    await engine.dispose()


async def test_an_answer_is_stored_though_the_request_left_mid_answer(chats):
    chats, _ = chats
    conversation = await chats.create(CALLER, "", Mode.RAG, [])
    events = chats.send(CALLER, conversation.id, "life?")
    user_message = await anext(events)
    assert isinstance(user_message, Message) and await anext(events) == "The "
    await events.aclose()  # the client is gone
    await chats.close()  # waits for the answers still being written
    page = await chats.messages(CALLER, conversation.id, 10, "")
    assert [(m.role, m.content) for m in page.items] == [(Role.USER, "life?"),
                                                        (Role.ASSISTANT, "The answer to life?")]
    assert page.items[1].sources == [{"chunkId": "c1"}] and page.items[1].parent_id == user_message.id


async def test_the_answerer_gets_the_newest_earlier_messages_as_history(chats):
    chats, answerer = chats
    conversation = await chats.create(CALLER, "", Mode.RAG, [])
    for question in ("one?", "two?"):
        _ = [event async for event in chats.send(CALLER, conversation.id, question)]
    assert answerer.histories == [[], ["one?", "The answer to one?"]]
    _ = [event async for event in chats.send(CALLER, conversation.id, "three?")]
    assert answerer.histories[-1] == ["two?", "The answer to two?"]
