"""The knowledge service over real gRPC, beside a real rag_engine (Milvus Lite,
tantivy, the local embedding model) that it indexes into."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import pytest

from meshkit.channels import create_channel
from meshkit.server import MeshServer
from sagemesh.knowledge.v1 import knowledge_pb2 as pb
from sagemesh.knowledge.v1 import knowledge_pb2_grpc
from sagemesh.rag_engine.v1 import rag_engine_pb2 as rag_pb
from sagemesh.rag_engine.v1 import rag_engine_pb2_grpc
from services.identity.domain import Role, User
from services.identity.tokens import AccessTokenIssuer, load_signing_key
from services.knowledge import server as knowledge_server
from services.knowledge.settings import KnowledgeSettings
from services.rag_engine import server as rag_engine_server
from services.rag_engine.settings import RagEngineSettings

PIECE = 16 * 1024
FINISHED = (pb.DOCUMENT_STATUS_INDEXED, pb.DOCUMENT_STATUS_FAILED)


class Tokens:
    """Signs access tokens as identity would, with keys both services trust."""

    def __init__(self, keys_dir: Path) -> None:
        settings = KnowledgeSettings(_env_file=None, jwt_keys_dir=keys_dir)
        kid, key = load_signing_key(keys_dir, None)
        self.issuer = AccessTokenIssuer(kid, key, settings.jwt_issuer, settings.jwt_audience, 3600)

    def metadata(self, tenant: str) -> list[tuple[str, str]]:
        user = User(f"user-{tenant}", tenant, tenant, f"{tenant}@example.com", tenant, Role.MEMBER,
                    datetime.now(timezone.utc))
        return [("authorization", f"Bearer {self.issuer.issue(user, 'session', time.time())}")]


@pytest.fixture(scope="session")
def keys_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("jwt")


@pytest.fixture(scope="session")
def tokens(keys_dir) -> Tokens:
    return Tokens(keys_dir)


@dataclass
class RagEngineUnderTest:
    address: str
    stub: rag_engine_pb2_grpc.RagEngineServiceStub
    tokens: Tokens

    async def retrieve(self, tenant: str, query: str, kb_ids: list[str], top_k: int = 5) -> rag_pb.RetrieveResponse:
        return await self.stub.Retrieve(rag_pb.RetrieveRequest(query=query, kb_ids=kb_ids, top_k=top_k),
                                        metadata=self.tokens.metadata(tenant))

    async def vectors_of(self, tenant: str, kb_id: str, document_id: str) -> int:
        """What the index holds for the document now (indexing nothing reports it)."""
        reply = await self.stub.IndexChunks(rag_pb.IndexChunksRequest(
            tenant_id=tenant, kb_id=kb_id, document_id=document_id))
        return reply.vector_count


@asynccontextmanager
async def rag_engine_serving(data_dir: Path, keys_dir: Path, tokens: Tokens,
                             port: int = 0) -> AsyncIterator[RagEngineUnderTest]:
    settings = RagEngineSettings(_env_file=None, data_dir=data_dir, jwt_keys_dir=keys_dir, listen_port=port)
    server = MeshServer(await rag_engine_server.build(settings), settings)
    await server.start()
    channel = create_channel(server.address, settings)
    try:
        yield RagEngineUnderTest(server.address, rag_engine_pb2_grpc.RagEngineServiceStub(channel), tokens)
    finally:
        await channel.close()
        await server.stop(grace=0)


@pytest.fixture(scope="module")
async def rag_engine(tmp_path_factory, keys_dir, tokens) -> AsyncIterator[RagEngineUnderTest]:
    async with rag_engine_serving(tmp_path_factory.mktemp("rag"), keys_dir, tokens) as under_test:
        yield under_test


@dataclass
class KnowledgeUnderTest:
    stub: knowledge_pb2_grpc.KnowledgeServiceStub
    tokens: Tokens
    settings: KnowledgeSettings
    address: str

    def auth(self, tenant: str) -> list[tuple[str, str]]:
        return self.tokens.metadata(tenant)

    async def create_base(self, tenant: str, name: str, **fields) -> pb.KnowledgeBase:
        reply = await self.stub.CreateKnowledgeBase(
            pb.CreateKnowledgeBaseRequest(knowledge_base=pb.KnowledgeBase(name=name, **fields)),
            metadata=self.auth(tenant))
        return reply.knowledge_base

    async def upload(self, tenant: str, kb_id: str, filename: str, content: bytes, content_type: str = "",
                     metadata: dict[str, str] | None = None) -> pb.UploadDocumentResponse:
        def requests():
            yield pb.UploadDocumentRequest(metadata=pb.DocumentMetadata(
                kb_id=kb_id, filename=filename, content_type=content_type, metadata=metadata or {}))
            for start in range(0, len(content), PIECE):
                yield pb.UploadDocumentRequest(data=content[start:start + PIECE])

        return await self.stub.UploadDocument(requests(), metadata=self.auth(tenant))

    async def status(self, tenant: str, document_id: str) -> pb.GetDocumentStatusResponse:
        return await self.stub.GetDocumentStatus(pb.GetDocumentStatusRequest(document_id=document_id),
                                                 metadata=self.auth(tenant))

    async def watch(self, tenant: str, document_id: str, timeout: float = 60) -> list[pb.GetDocumentStatusResponse]:
        """Every status the watch stream reports, until it ends."""
        call = self.stub.WatchDocumentStatus(pb.WatchDocumentStatusRequest(document_id=document_id),
                                             metadata=self.auth(tenant), timeout=timeout)
        return [update.status async for update in call]

    async def finished(self, tenant: str, document_id: str, timeout: float = 60) -> pb.GetDocumentStatusResponse:
        return (await self.watch(tenant, document_id, timeout))[-1]


def knowledge_settings(data_dir: Path, keys_dir: Path, rag_engine_addr: str, **fields) -> KnowledgeSettings:
    return KnowledgeSettings(
        _env_file=None, data_dir=data_dir, jwt_keys_dir=keys_dir, listen_port=0, rag_engine_addr=rag_engine_addr,
        ingest_poll_seconds=0.2, worker_name="test-worker", **fields,
    )


@asynccontextmanager
async def knowledge_serving(settings: KnowledgeSettings, tokens: Tokens) -> AsyncIterator[KnowledgeUnderTest]:
    server = MeshServer(await knowledge_server.build(settings), settings)
    await server.start()
    channel = create_channel(server.address, settings)
    try:
        yield KnowledgeUnderTest(knowledge_pb2_grpc.KnowledgeServiceStub(channel), tokens, settings, server.address)
    finally:
        await channel.close()
        await server.stop(grace=0)


@pytest.fixture(scope="module")
async def knowledge(tmp_path_factory, keys_dir, tokens, rag_engine) -> AsyncIterator[KnowledgeUnderTest]:
    settings = knowledge_settings(tmp_path_factory.mktemp("knowledge"), keys_dir, rag_engine.address,
                                  max_upload_bytes=1024 * 1024)
    async with knowledge_serving(settings, tokens) as under_test:
        yield under_test


async def eventually(check, timeout: float = 30, interval: float = 0.1):
    """Calls `check` until it returns something truthy; fails after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"not true within {timeout} s: {check.__name__}")
        await asyncio.sleep(interval)
