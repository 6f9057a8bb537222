"""The conversation service over real gRPC, answering through a real
rag_engine, its knowledge bases checked by a real knowledge service."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from meshkit.channels import create_channel
from meshkit.server import MeshServer
from sagemesh.conversation.v1 import conversation_pb2 as pb
from sagemesh.conversation.v1 import conversation_pb2_grpc
from sagemesh.rag_engine.v1 import rag_engine_pb2 as rag_pb
from services.conversation import server as conversation_server
from services.conversation.settings import ConversationSettings
from tests.conftest import free_port
from tests.fixtures.mesh import RagEngineUnderTest, Tokens, rag_engine_serving
from tests.knowledge.conftest import knowledge_serving, knowledge_settings

TENANT = "acme"
HANDBOOK = [
    ("h1", "Travel policy", "Employees may book first class on train journeys longer than four hours."),
    ("h2", "Travel policy", "The nightly hotel budget in Zurich is 240 francs."),
    ("h3", "Expenses", "Meals on business trips are reimbursed up to 45 euros a day."),
]


@pytest.fixture(scope="module")
async def rag_engine(tmp_path_factory, keys_dir, tokens) -> AsyncIterator[RagEngineUnderTest]:
    async with rag_engine_serving(tmp_path_factory.mktemp("rag"), keys_dir, tokens) as under_test:
        yield under_test


@pytest.fixture(scope="module")
async def handbook(tmp_path_factory, keys_dir, tokens, rag_engine) -> AsyncIterator[tuple[str, str]]:
    """The knowledge service, with acme's handbook base (its chunks indexed straight into the
    rag_engine); yields (the knowledge service's address, the base's id)."""
    settings = knowledge_settings(tmp_path_factory.mktemp("knowledge"), keys_dir, rag_engine.address)
    async with knowledge_serving(settings, tokens) as knowledge:
        kb = await knowledge.create_base(TENANT, "handbook")
        await rag_engine.stub.IndexChunks(rag_pb.IndexChunksRequest(
            tenant_id=TENANT, kb_id=kb.id, document_id="d-handbook",
            chunks=[rag_pb.Chunk(chunk_id=cid, title=title, text=text, position=i)
                    for i, (cid, title, text) in enumerate(HANDBOOK)],
        ))
        yield knowledge.address, kb.id


@dataclass
class ConversationUnderTest:
    stub: conversation_pb2_grpc.ConversationServiceStub
    tokens: Tokens
    address: str
    # acme's handbook base, when the knowledge service runs.
    kb_id: str = ""

    def auth(self, user: str, tenant: str = TENANT) -> list[tuple[str, str]]:
        return self.tokens.metadata(tenant, user_id=user)

    async def create(self, user: str, **fields) -> pb.Conversation:
        reply = await self.stub.CreateConversation(
            pb.CreateConversationRequest(conversation=pb.Conversation(**fields)), metadata=self.auth(user))
        return reply.conversation

    async def send(self, user: str, conversation_id: str, content: str, **fields) -> pb.SendMessageResponse:
        return await self.stub.SendMessage(
            pb.SendMessageRequest(conversation_id=conversation_id, content=content, **fields),
            metadata=self.auth(user))


@asynccontextmanager
async def conversation_serving(data_dir: Path, keys_dir: Path, tokens: Tokens, rag_engine_addr: str,
                               knowledge_addr: str = "", kb_id: str = "", **fields) -> AsyncIterator[ConversationUnderTest]:
    settings = ConversationSettings(_env_file=None, data_dir=data_dir, jwt_keys_dir=keys_dir, listen_port=0,
                                    rag_engine_addr=rag_engine_addr,
                                    knowledge_addr=knowledge_addr or f"127.0.0.1:{free_port()}", **fields)
    server = MeshServer(await conversation_server.build(settings), settings)
    await server.start()
    channel = create_channel(server.address, settings)
    try:
        yield ConversationUnderTest(conversation_pb2_grpc.ConversationServiceStub(channel), tokens, server.address,
                                    kb_id)
    finally:
        await channel.close()
        await server.stop(grace=5)


@pytest.fixture(scope="module")
async def conversations(tmp_path_factory, keys_dir, tokens, rag_engine, handbook) -> AsyncIterator[ConversationUnderTest]:
    knowledge_addr, kb_id = handbook
    async with conversation_serving(tmp_path_factory.mktemp("conversation"), keys_dir, tokens,
                                    rag_engine.address, knowledge_addr, kb_id) as under_test:
        yield under_test
