"""The knowledge service over real gRPC, beside a real rag_engine (Milvus Lite,
tantivy, the local embedding model) that it indexes into."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from meshkit.channels import create_channel
from meshkit.health import wait_until_serving
from meshkit.server import MeshServer
from sagemesh.knowledge.v1 import knowledge_pb2 as pb
from sagemesh.knowledge.v1 import knowledge_pb2_grpc
from services.knowledge import server as knowledge_server
from services.knowledge.settings import KnowledgeSettings
from tests.conftest import free_port
from tests.fixtures.mesh import RagEngineUnderTest, Tokens, rag_engine_serving

ROOT = Path(__file__).resolve().parents[2]
PIECE = 16 * 1024
FINISHED = (pb.DOCUMENT_STATUS_INDEXED, pb.DOCUMENT_STATUS_FAILED)


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


@asynccontextmanager
async def knowledge_process(data_dir: Path, keys_dir: Path, rag_engine_addr: str, tokens, **settings: str):
    """The knowledge service in a process of its own, which the test can kill; `settings` are
    more SAGEMESH_* variables, by their lowercase names."""
    port = free_port()
    env = {**os.environ, "SAGEMESH_DATA_DIR": str(data_dir), "SAGEMESH_JWT_KEYS_DIR": str(keys_dir),
           "SAGEMESH_LISTEN_PORT": str(port), "SAGEMESH_RAG_ENGINE_ADDR": rag_engine_addr,
           "SAGEMESH_WORKER_NAME": "killable-worker", "SAGEMESH_INGEST_POLL_SECONDS": "0.2",
           # No /metrics: its default port may be taken by another knowledge service on the machine.
           "SAGEMESH_METRICS_PORT": "0",
           "SAGEMESH_LOG_LEVEL": "WARNING", **{f"SAGEMESH_{name.upper()}": value for name, value in settings.items()}}
    process = subprocess.Popen([sys.executable, "-m", "services.knowledge.server"], cwd=ROOT, env=env)
    client_settings = knowledge_settings(data_dir, keys_dir, rag_engine_addr)
    channel = create_channel(f"127.0.0.1:{port}", client_settings)
    try:
        assert await wait_until_serving(channel, lambda: process.poll() is None, 60), "knowledge did not start"
        yield (KnowledgeUnderTest(knowledge_pb2_grpc.KnowledgeServiceStub(channel), tokens, client_settings,
                                  f"127.0.0.1:{port}"), process)
    finally:
        await channel.close()
        if process.poll() is None:
            process.terminate()
            process.wait(timeout=30)


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
