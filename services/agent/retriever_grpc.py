"""The knowledge_base tool's Retriever over gRPC: the rag_engine's Retrieve,
called with the caller's token (meshkit.channels forwards it), so a search
never leaves the caller's tenant."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import grpc

from sagemesh.rag_engine.v1 import rag_engine_pb2 as pb
from sagemesh.rag_engine.v1 import rag_engine_pb2_grpc


class GrpcRetriever:
    def __init__(self, channel: grpc.aio.Channel) -> None:
        self.stub = rag_engine_pb2_grpc.RagEngineServiceStub(channel)

    async def retrieve(self, query: str, kb_ids: Sequence[str], top_k: int) -> list[dict[str, Any]]:
        reply = await self.stub.Retrieve(pb.RetrieveRequest(query=query, kb_ids=list(kb_ids), top_k=top_k))
        return [{"document_id": r.document_id, "chunk_id": r.chunk_id, "title": r.title, "content": r.content,
                 "filename": r.filename, "location": r.location, "page": r.page, "score": round(r.score, 6)}
                for r in reply.results]
