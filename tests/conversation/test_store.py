"""The conversation store on each database backend: idempotency keys under
the race between a retry and the forgetting of the send it retries."""

from __future__ import annotations

import uuid

import pytest

from meshkit import db
from services.conversation.domain import Mode
from services.conversation.server import MIGRATIONS
from services.conversation.store import DuplicateSend
from services.conversation.store_sql import SqlConversationStore
from tests.conftest import DATABASE_BACKENDS


@pytest.fixture
def user() -> str:
    # The PostgreSQL database lives for the whole session: each test is a user of its own there.
    return str(uuid.uuid4())


@pytest.fixture(params=DATABASE_BACKENDS)
async def store(request, database_url_for):
    engine = db.create_engine(database_url_for(request.param))
    await db.migrate(engine, MIGRATIONS, version_table="alembic_version_conversation")
    yield SqlConversationStore(engine)
    await engine.dispose()


async def test_a_key_in_use_returns_its_send_with_the_answer_once_there_is_one(store, user):
    conversation = await store.create_conversation("t1", user, "", Mode.RAG, ())
    question = await store.add_user_message(conversation, "How much for meals?", "key-1")
    with pytest.raises(DuplicateSend) as unanswered:
        await store.add_user_message(conversation, "How much for meals?", "key-1")
    assert unanswered.value.send.user_message == question and unanswered.value.send.answer is None
    answer = await store.add_answer(question, "45 euros a day. [1]", [{"chunkId": "c1"}], {"generator": "test"})
    with pytest.raises(DuplicateSend) as answered:
        await store.add_user_message(conversation, "How much for meals?", "key-1")
    assert answered.value.send.user_message == question and answered.value.send.answer == answer
    messages = await store.messages(conversation.id, 10, None)
    assert [m.content for m in messages] == ["How much for meals?", "45 euros a day. [1]"]
    assert (await store.conversation(user, conversation.id)).message_count == 2


async def test_a_key_whose_send_is_forgotten_meanwhile_is_taken_afresh(store, user):
    conversation = await store.create_conversation("t1", user, "", Mode.RAG, ())
    first = await store.add_user_message(conversation, "How much for meals?", "key-1")
    read_send = store.send

    async def forgotten_between_insert_and_read(user_id, key):
        # The unanswered first send gives up (chats._give_up) after the retry's insert failed.
        await store.forget(first)
        return await read_send(user_id, key)

    store.send = forgotten_between_insert_and_read
    retry = await store.add_user_message(conversation, "How much for meals?", "key-1")
    store.send = read_send
    assert retry.id != first.id
    assert (await store.send(user, "key-1")).user_message == retry
    assert [m.id for m in await store.messages(conversation.id, 10, None)] == [retry.id]
