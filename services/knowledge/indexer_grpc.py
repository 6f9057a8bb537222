"""ChunkIndexer over gRPC to the rag_engine."""

from __future__ import annotations

from collections.abc import Sequence

import grpc

from sagemesh.rag_engine.v1 import rag_engine_pb2 as pb
from sagemesh.rag_engine.v1 import rag_engine_pb2_grpc
from services.knowledge.chunking import ChunkText
from services.knowledge.indexer import IndexRejected, IndexUnavailable

# Worth another attempt later; any other status is a bug or a bad request.
TRANSIENT = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED,
                       grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.ABORTED})


def chunk_id(document_id: str, position: int) -> str:
    """Stable across runs: indexing the document again replaces its chunks."""
    return f"{document_id}:{position}"


class GrpcChunkIndexer:
    def __init__(self, channel: grpc.aio.Channel, batch_size: int, timeout_seconds: float) -> None:
        self.stub = rag_engine_pb2_grpc.RagEngineServiceStub(channel)
        self.batch_size = batch_size
        self.timeout = timeout_seconds

    async def _call(self, method, request):
        try:
            return await method(request, timeout=self.timeout)
        except grpc.aio.AioRpcError as error:
            message = f"rag_engine: {error.code().name}: {error.details()}"
            if error.code() in TRANSIENT:
                raise IndexUnavailable(message) from error
            raise IndexRejected(message) from error

    async def index(self, tenant_id: str, kb_id: str, document_id: str, chunks: Sequence[ChunkText],
                    title: str, metadata: dict[str, str], filename: str) -> int:
        vectors = 0
        for start in range(0, len(chunks), self.batch_size):
            reply = await self._call(self.stub.IndexChunks, pb.IndexChunksRequest(
                tenant_id=tenant_id, kb_id=kb_id, document_id=document_id,
                # Chunks left by an earlier run (a crash mid-way, a reparse that
                # cut the text differently) must not outlive this one.
                replace_document=start == 0,
                chunks=[pb.Chunk(chunk_id=chunk_id(document_id, c.position), text=c.text, title=title,
                                 headings=list(c.headings), page=c.page, position=c.position, metadata=metadata,
                                 filename=filename, location=c.location)
                        for c in chunks[start:start + self.batch_size]],
            ))
            vectors = reply.vector_count
        return vectors

    async def delete_document(self, tenant_id: str, kb_id: str, document_id: str) -> None:
        await self._call(self.stub.DeleteDocumentChunks, pb.DeleteDocumentChunksRequest(
            tenant_id=tenant_id, kb_id=kb_id, document_id=document_id))

    async def delete_knowledge_base(self, tenant_id: str, kb_id: str) -> None:
        await self._call(self.stub.DeleteKnowledgeBaseChunks, pb.DeleteKnowledgeBaseChunksRequest(
            tenant_id=tenant_id, kb_id=kb_id))
