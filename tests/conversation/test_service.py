"""Conversations over real gRPC: grounded answers stored with their sources,
follow-ups, streaming, idempotent retries, and users kept apart."""

from __future__ import annotations

import re

import grpc
import pytest

from sagemesh.conversation.v1 import conversation_pb2 as pb
from tests.conftest import free_port
from tests.conversation.conftest import conversation_serving

ANN, BOB = "user-ann", "user-bob"


async def test_a_question_gets_a_grounded_answer_that_is_stored_with_its_sources(conversations):
    conversation = await conversations.create(ANN, kb_ids=[conversations.kb_id])
    assert conversation.mode == pb.CONVERSATION_MODE_UNSPECIFIED or conversation.mode == pb.CONVERSATION_MODE_RAG
    reply = await conversations.send(ANN, conversation.id, "How much are meals reimbursed on business trips?")
    answer, asked = reply.message, reply.user_message
    assert asked.role == pb.MESSAGE_ROLE_USER and answer.role == pb.MESSAGE_ROLE_ASSISTANT
    assert answer.parent_id == asked.id and "45 euros" in answer.content
    cited = [answer.sources[int(n) - 1] for n in re.findall(r"\[(\d+)\]", answer.content)]
    assert cited and {s.chunk_id for s in cited} == {"h3"} and cited[0].document_id == "d-handbook"
    assert answer.metrics.generator == "extractive" and answer.metrics.total_latency_ms > 0

    stored = await conversations.stub.ListMessages(pb.ListMessagesRequest(conversation_id=conversation.id),
                                                   metadata=conversations.auth(ANN))
    assert [m.id for m in stored.messages] == [asked.id, answer.id]
    assert stored.messages[1].sources == answer.sources
    again = await conversations.stub.GetConversation(pb.GetConversationRequest(conversation_id=conversation.id),
                                                     metadata=conversations.auth(ANN))
    assert again.conversation.message_count == 2
    assert again.conversation.title == "How much are meals reimbursed on business trips?"


async def test_a_follow_up_is_answered_with_the_earlier_turn_in_mind(conversations):
    conversation = await conversations.create(ANN, title="Zurich trip")
    await conversations.send(ANN, conversation.id, "Is there a hotel budget for Zurich?")
    follow_up = await conversations.send(ANN, conversation.id, "How much is it?")
    assert "240 francs" in follow_up.message.content
    fresh = await conversations.create(ANN)
    alone = await conversations.send(ANN, fresh.id, "How much is it?")
    assert "240 francs" not in alone.message.content


async def test_stream_message_sends_the_user_message_the_pieces_and_the_stored_answer(conversations):
    conversation = await conversations.create(ANN)
    call = conversations.stub.StreamMessage(
        pb.StreamMessageRequest(conversation_id=conversation.id, content="Who may book first class on trains?"),
        metadata=conversations.auth(ANN))
    events = [event async for event in call]
    kinds = [event.WhichOneof("event") for event in events]
    assert kinds[0] == "user_message" and kinds[-1] == "message" and set(kinds[1:-1]) == {"answer_delta"}
    answer = events[-1].message
    assert "".join(e.answer_delta for e in events[1:-1]).strip() == answer.content
    assert "first class" in answer.content and answer.parent_id == events[0].user_message.id


@pytest.mark.parametrize("via", ["field", "header"])
async def test_a_retried_send_with_its_idempotency_key_returns_the_first_result(conversations, via):
    conversation = await conversations.create(ANN)
    key = f"retry-{via}"

    async def send(content: str):
        request = pb.SendMessageRequest(conversation_id=conversation.id, content=content,
                                        idempotency_key=key if via == "field" else "")
        metadata = conversations.auth(ANN) + ([("idempotency-key", key)] if via == "header" else [])
        return await conversations.stub.SendMessage(request, metadata=metadata)

    first = await send("What is the hotel budget in Zurich?")
    second = await send("What is the hotel budget in Zurich?")
    assert (second.user_message.id, second.message.id) == (first.user_message.id, first.message.id)
    assert second.message.content == first.message.content
    stored = await conversations.stub.ListMessages(pb.ListMessagesRequest(conversation_id=conversation.id),
                                                   metadata=conversations.auth(ANN))
    assert len(stored.messages) == 2
    with pytest.raises(grpc.aio.AioRpcError) as reused:
        await send("Something else entirely")
    assert reused.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "idempotency_key" in reused.value.details()


async def test_one_user_never_sees_anothers_conversation(conversations):
    mine = await conversations.create(ANN, title="private")
    theirs = conversations.auth(BOB)
    for call, request in [
        (conversations.stub.GetConversation, pb.GetConversationRequest(conversation_id=mine.id)),
        (conversations.stub.ListMessages, pb.ListMessagesRequest(conversation_id=mine.id)),
        (conversations.stub.SendMessage, pb.SendMessageRequest(conversation_id=mine.id, content="hello")),
        (conversations.stub.DeleteConversation, pb.DeleteConversationRequest(conversation_id=mine.id)),
    ]:
        with pytest.raises(grpc.aio.AioRpcError) as hidden:
            await call(request, metadata=theirs)
        assert hidden.value.code() == grpc.StatusCode.NOT_FOUND
    listed = await conversations.stub.ListConversations(pb.ListConversationsRequest(), metadata=theirs)
    assert mine.id not in {c.id for c in listed.conversations}


async def test_conversations_list_newest_first_in_pages_and_can_be_deleted(conversations):
    user = "user-lister"
    made = [(await conversations.create(user, title=f"c{i}")).id for i in range(5)]
    seen, token = [], ""
    while True:
        page = await conversations.stub.ListConversations(pb.ListConversationsRequest(page_size=2, page_token=token),
                                                          metadata=conversations.auth(user))
        seen += [c.id for c in page.conversations]
        token = page.next_page_token
        if not token:
            break
    assert seen == made[::-1]
    await conversations.stub.DeleteConversation(pb.DeleteConversationRequest(conversation_id=made[0]),
                                                metadata=conversations.auth(user))
    with pytest.raises(grpc.aio.AioRpcError) as gone:
        await conversations.stub.GetConversation(pb.GetConversationRequest(conversation_id=made[0]),
                                                 metadata=conversations.auth(user))
    assert gone.value.code() == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize("content, code", [("   ", grpc.StatusCode.INVALID_ARGUMENT),
                                           ("x" * 8001, grpc.StatusCode.INVALID_ARGUMENT)])
async def test_bad_messages_are_refused(conversations, content, code):
    conversation = await conversations.create(ANN)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await conversations.send(ANN, conversation.id, content)
    assert refused.value.code() == code


async def test_an_unreachable_rag_engine_leaves_nothing_half_written(tmp_path, keys_dir, tokens):
    async with conversation_serving(tmp_path, keys_dir, tokens, f"127.0.0.1:{free_port()}",
                                    retry_max_backoff_seconds=0.2) as conversations:
        conversation = await conversations.create(ANN)
        with pytest.raises(grpc.aio.AioRpcError) as failed:
            await conversations.send(ANN, conversation.id, "Anyone there?", idempotency_key="k1")
        assert failed.value.code() == grpc.StatusCode.UNAVAILABLE
        stored = await conversations.stub.ListMessages(pb.ListMessagesRequest(conversation_id=conversation.id),
                                                       metadata=conversations.auth(ANN))
        assert list(stored.messages) == []
        # The key was freed with the message: the retry is answered afresh (and fails the same way).
        with pytest.raises(grpc.aio.AioRpcError) as again:
            await conversations.send(ANN, conversation.id, "Anyone there?", idempotency_key="k1")
        assert again.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_a_knowledge_base_that_is_not_the_callers_is_not_found(conversations):
    for tenant_kb in ("no-such-base", conversations.kb_id):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await conversations.stub.CreateConversation(
                pb.CreateConversationRequest(conversation=pb.Conversation(kb_ids=[tenant_kb])),
                metadata=conversations.auth(BOB, tenant="globex"))
        assert refused.value.code() == grpc.StatusCode.NOT_FOUND and tenant_kb in refused.value.details()
    own = await conversations.create(ANN)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await conversations.send(ANN, own.id, "Anything?", kb_ids=["no-such-base"])
    assert refused.value.code() == grpc.StatusCode.NOT_FOUND
    listed = await conversations.stub.ListMessages(pb.ListMessagesRequest(conversation_id=own.id),
                                                   metadata=conversations.auth(ANN))
    assert list(listed.messages) == []  # nothing stored for a refused send
