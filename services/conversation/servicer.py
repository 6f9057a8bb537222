"""ConversationService over gRPC: translates protobuf to the domain and back."""

from __future__ import annotations

from google.protobuf.json_format import ParseDict

from meshkit.auth import current_principal
from meshkit.protos import timestamp
from sagemesh.conversation.v1 import conversation_pb2 as pb
from sagemesh.conversation.v1 import conversation_pb2_grpc
from sagemesh.rag_engine.v1 import rag_engine_pb2 as rag_pb
from services.conversation.chats import Caller, Chats
from services.conversation.domain import Conversation, Message, Mode, Role

MODES = {Mode.RAG: pb.CONVERSATION_MODE_RAG, Mode.AGENT: pb.CONVERSATION_MODE_AGENT}
ROLES = {Role.USER: pb.MESSAGE_ROLE_USER, Role.ASSISTANT: pb.MESSAGE_ROLE_ASSISTANT}


def _caller() -> Caller:
    principal = current_principal()
    return Caller(principal.tenant_id, principal.user_id)



def conversation_message(conversation: Conversation) -> pb.Conversation:
    return pb.Conversation(
        id=conversation.id, title=conversation.title, mode=MODES[conversation.mode],
        kb_ids=list(conversation.kb_ids), message_count=conversation.message_count,
        created_at=timestamp(conversation.created_at), updated_at=timestamp(conversation.updated_at),
    )


def message_message(message: Message) -> pb.Message:
    result = pb.Message(
        id=message.id, conversation_id=message.conversation_id, role=ROLES[message.role], content=message.content,
        sources=[ParseDict(source, rag_pb.Source(), ignore_unknown_fields=True) for source in message.sources],
        parent_id=message.parent_id, created_at=timestamp(message.created_at),
    )
    if message.metrics:  # answers have metrics; a user's message has none to show
        ParseDict(message.metrics, result.metrics, ignore_unknown_fields=True)
    return result


def _idempotency_key(request, context) -> str:
    # The request field, else the Idempotency-Key header the gateway passes on.
    if request.idempotency_key:
        return request.idempotency_key
    return next((value for key, value in context.invocation_metadata() or () if key == "idempotency-key"), "")


class ConversationServicer(conversation_pb2_grpc.ConversationServiceServicer):
    def __init__(self, chats: Chats) -> None:
        self.chats = chats

    async def CreateConversation(self, request, context) -> pb.CreateConversationResponse:
        wanted = request.conversation
        mode = Mode.AGENT if wanted.mode == pb.CONVERSATION_MODE_AGENT else Mode.RAG
        created = await self.chats.create(_caller(), wanted.title, mode, list(wanted.kb_ids))
        return pb.CreateConversationResponse(conversation=conversation_message(created))

    async def GetConversation(self, request, context) -> pb.GetConversationResponse:
        found = await self.chats.get(_caller(), request.conversation_id)
        return pb.GetConversationResponse(conversation=conversation_message(found))

    async def ListConversations(self, request, context) -> pb.ListConversationsResponse:
        page = await self.chats.list(_caller(), request.page_size, request.page_token)
        return pb.ListConversationsResponse(conversations=[conversation_message(c) for c in page.items],
                                            next_page_token=page.next_page_token)

    async def DeleteConversation(self, request, context) -> pb.DeleteConversationResponse:
        await self.chats.delete(_caller(), request.conversation_id)
        return pb.DeleteConversationResponse()

    def _send(self, request, context):
        return self.chats.send(_caller(), request.conversation_id, request.content, list(request.kb_ids),
                               request.use_rerank, _idempotency_key(request, context))

    async def SendMessage(self, request, context) -> pb.SendMessageResponse:
        stored = [event async for event in self._send(request, context) if isinstance(event, Message)]
        return pb.SendMessageResponse(user_message=message_message(stored[0]), message=message_message(stored[-1]))

    async def StreamMessage(self, request, context):
        first = True
        async for event in self._send(request, context):
            if isinstance(event, str):
                yield pb.StreamMessageResponse(answer_delta=event)
            elif first:
                yield pb.StreamMessageResponse(user_message=message_message(event))
            else:
                yield pb.StreamMessageResponse(message=message_message(event))
            first = False

    async def ListMessages(self, request, context) -> pb.ListMessagesResponse:
        page = await self.chats.messages(_caller(), request.conversation_id, request.page_size, request.page_token)
        return pb.ListMessagesResponse(messages=[message_message(m) for m in page.items],
                                       next_page_token=page.next_page_token)
