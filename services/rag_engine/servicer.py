"""RagEngineService over gRPC: translates protobuf to the domain and back."""

from __future__ import annotations

from google.protobuf import struct_pb2

from meshkit.auth import current_principal
from meshkit.errors import InvalidArgument
from sagemesh.rag_engine.v1 import rag_engine_pb2 as pb
from sagemesh.rag_engine.v1 import rag_engine_pb2_grpc
from services.rag_engine import filters as f
from services.rag_engine.domain import Chunk, RankedChunk, Scope, Timings
from services.rag_engine.engine import RagEngine


def _value(value: struct_pb2.Value):
    kind = value.WhichOneof("kind")
    if kind in ("string_value", "number_value", "bool_value"):
        return f.typed(getattr(value, kind))
    raise InvalidArgument("filter values must be strings, numbers or booleans", field="filters")


def filters_from(messages) -> list[f.Filter]:
    result: list[f.Filter] = []
    for message in messages:
        field = f.check_field(message.field)
        condition = message.WhichOneof("condition")
        if condition == "equals":
            result.append(f.Equals(field, _value(message.equals)))
        elif condition == "any_of":
            if not message.any_of.values:
                raise InvalidArgument(f"any_of for {field!r} needs at least one value", field="filters")
            result.append(f.AnyOf(field, tuple(_value(v) for v in message.any_of.values)))
        elif condition == "range":
            bounds = {b: getattr(message.range, b) for b in ("gt", "gte", "lt", "lte") if message.range.HasField(b)}
            if not bounds:
                raise InvalidArgument(f"range for {field!r} needs a bound", field="filters")
            result.append(f.Range(field, **bounds))
        else:
            raise InvalidArgument(f"filter on {field!r} has no condition", field="filters")
    return result


def chunk_from(message: pb.Chunk, tenant_id: str, kb_id: str, document_id: str) -> Chunk:
    return Chunk(
        tenant_id=tenant_id, kb_id=kb_id, document_id=document_id, chunk_id=message.chunk_id,
        text=message.text, title=message.title, headings=tuple(message.headings), page=message.page,
        position=message.position, metadata=dict(message.metadata),
    )


def result_message(ranked: RankedChunk) -> pb.RetrievedChunk:
    chunk = ranked.chunk
    return pb.RetrievedChunk(
        chunk_id=chunk.chunk_id, document_id=chunk.document_id, kb_id=chunk.kb_id, title=chunk.title,
        content=chunk.text, page=chunk.page, headings=list(chunk.headings), score=ranked.score,
        vector_rank=ranked.vector_rank, bm25_rank=ranked.bm25_rank, rerank_rank=ranked.rerank_rank,
        metadata=chunk.metadata,
    )


def timings_message(timings: Timings) -> pb.RetrievalTimings:
    return pb.RetrievalTimings(**vars(timings))


class RagEngineServicer(rag_engine_pb2_grpc.RagEngineServiceServicer):
    def __init__(self, engine: RagEngine) -> None:
        self.engine = engine

    async def IndexChunks(self, request: pb.IndexChunksRequest, context) -> pb.IndexChunksResponse:
        chunks = [chunk_from(c, request.tenant_id, request.kb_id, request.document_id) for c in request.chunks]
        indexed, vectors = await self.engine.index(request.tenant_id, request.kb_id, request.document_id, chunks)
        return pb.IndexChunksResponse(indexed_count=indexed, vector_count=vectors)

    async def DeleteDocumentChunks(self, request, context) -> pb.DeleteDocumentChunksResponse:
        deleted = await self.engine.delete_document(request.tenant_id, request.kb_id, request.document_id)
        return pb.DeleteDocumentChunksResponse(deleted_count=deleted)

    async def DeleteKnowledgeBaseChunks(self, request, context) -> pb.DeleteKnowledgeBaseChunksResponse:
        deleted = await self.engine.delete_knowledge_base(request.tenant_id, request.kb_id)
        return pb.DeleteKnowledgeBaseChunksResponse(deleted_count=deleted)

    async def Retrieve(self, request: pb.RetrieveRequest, context) -> pb.RetrieveResponse:
        # The tenant is the caller's, whatever the request says.
        scope = Scope(current_principal().tenant_id, tuple(dict.fromkeys(request.kb_ids)))
        weights = (request.weights.vector, request.weights.bm25) if request.HasField("weights") else (1.0, 1.0)
        results, timings = await self.engine.retrieve(
            scope, request.query, request.top_k, filters_from(request.filters), weights, request.use_rerank
        )
        return pb.RetrieveResponse(results=[result_message(r) for r in results], timings=timings_message(timings))
