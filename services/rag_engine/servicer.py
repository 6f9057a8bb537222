"""RagEngineService over gRPC: translates protobuf to the domain and back."""

from __future__ import annotations

from google.protobuf import struct_pb2

from meshkit.auth import current_principal
from meshkit.errors import InvalidArgument
from sagemesh.rag_engine.v1 import rag_engine_pb2 as pb
from sagemesh.rag_engine.v1 import rag_engine_pb2_grpc
from services.rag_engine import filters as f
from services.rag_engine.answering import Answer, Answerer, QueryOptions, cited_numbers
from services.rag_engine.domain import Chunk, RankedChunk, Scope, Timings
from services.rag_engine.engine import RagEngine
from services.rag_engine.generation import Turn


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
        position=message.position, metadata=dict(message.metadata), filename=message.filename,
        location=message.location,
    )


def result_message(ranked: RankedChunk) -> pb.RetrievedChunk:
    chunk = ranked.chunk
    return pb.RetrievedChunk(
        chunk_id=chunk.chunk_id, document_id=chunk.document_id, kb_id=chunk.kb_id, title=chunk.title,
        content=chunk.text, page=chunk.page, headings=list(chunk.headings), score=ranked.score,
        vector_rank=ranked.vector_rank, bm25_rank=ranked.bm25_rank, rerank_rank=ranked.rerank_rank,
        metadata=chunk.metadata, filename=chunk.filename, location=chunk.location,
    )


def timings_message(timings: Timings) -> pb.RetrievalTimings:
    return pb.RetrievalTimings(**vars(timings))


_ROLES = {pb.TURN_ROLE_USER: "user", pb.TURN_ROLE_ASSISTANT: "assistant"}


def _scope(kb_ids) -> Scope:
    # The tenant is the caller's, whatever the request says.
    return Scope(current_principal().tenant_id, tuple(dict.fromkeys(kb_ids)))


def _weights(request) -> tuple[float, float]:
    return (request.weights.vector, request.weights.bm25) if request.HasField("weights") else (1.0, 1.0)


def query_options(request: pb.QueryRequest | pb.StreamQueryRequest) -> QueryOptions:
    history = []
    for position, turn in enumerate(request.history):
        if turn.role not in _ROLES:
            raise InvalidArgument(f"history[{position}].role must be TURN_ROLE_USER or TURN_ROLE_ASSISTANT",
                                  field="history")
        history.append(Turn(_ROLES[turn.role], turn.content))
    generation = request.generation
    if generation.max_tokens < 0 or not 0 <= generation.temperature <= 2:
        raise InvalidArgument("max_tokens must not be negative, temperature between 0 and 2", field="generation")
    return QueryOptions(
        top_k=request.top_k, filters=filters_from(request.filters), weights=_weights(request),
        use_rerank=request.use_rerank, history=history, model=generation.model,
        temperature=generation.temperature, max_tokens=generation.max_tokens,
    )


def answer_message(answer: Answer) -> pb.QueryResponse:
    metrics = answer.metrics
    cited = cited_numbers(answer.text)
    return pb.QueryResponse(
        answer=answer.text,
        sources=[pb.Source(document_id=s.ranked.chunk.document_id, chunk_id=s.ranked.chunk.chunk_id,
                           kb_id=s.ranked.chunk.kb_id, title=s.ranked.chunk.title, content=s.text,
                           score=s.ranked.score, page=s.ranked.chunk.page, cited=s.number in cited,
                           filename=s.ranked.chunk.filename, location=s.ranked.chunk.location)
                 for s in answer.sources],
        metrics=pb.AnswerMetrics(
            retrieval_latency_ms=metrics.retrieval_ms, rerank_latency_ms=metrics.rerank_ms,
            generation_latency_ms=metrics.generation_ms, total_latency_ms=metrics.total_ms,
            prompt_tokens=metrics.prompt_tokens, completion_tokens=metrics.completion_tokens,
            estimated_cost_usd=metrics.cost_usd, cache_hit=metrics.cache_hit, generator=metrics.generator,
            retrieval=timings_message(metrics.retrieval),
        ),
        features_used=answer.features,
    )


class RagEngineServicer(rag_engine_pb2_grpc.RagEngineServiceServicer):
    def __init__(self, engine: RagEngine, answerer: Answerer) -> None:
        self.engine = engine
        self.answerer = answerer

    async def IndexChunks(self, request: pb.IndexChunksRequest, context) -> pb.IndexChunksResponse:
        chunks = [chunk_from(c, request.tenant_id, request.kb_id, request.document_id) for c in request.chunks]
        indexed, vectors = await self.engine.index(request.tenant_id, request.kb_id, request.document_id, chunks,
                                                   replace=request.replace_document)
        return pb.IndexChunksResponse(indexed_count=indexed, vector_count=vectors)

    async def DeleteDocumentChunks(self, request, context) -> pb.DeleteDocumentChunksResponse:
        deleted = await self.engine.delete_document(request.tenant_id, request.kb_id, request.document_id)
        return pb.DeleteDocumentChunksResponse(deleted_count=deleted)

    async def DeleteKnowledgeBaseChunks(self, request, context) -> pb.DeleteKnowledgeBaseChunksResponse:
        deleted = await self.engine.delete_knowledge_base(request.tenant_id, request.kb_id)
        return pb.DeleteKnowledgeBaseChunksResponse(deleted_count=deleted)

    async def Retrieve(self, request: pb.RetrieveRequest, context) -> pb.RetrieveResponse:
        results, timings = await self.engine.retrieve(
            _scope(request.kb_ids), request.query, request.top_k, filters_from(request.filters), _weights(request),
            request.use_rerank,
        )
        return pb.RetrieveResponse(results=[result_message(r) for r in results], timings=timings_message(timings))

    async def Query(self, request: pb.QueryRequest, context) -> pb.QueryResponse:
        return answer_message(await self.answerer.answer(_scope(request.kb_ids), request.query,
                                                         query_options(request), not request.bypass_cache))

    async def StreamQuery(self, request: pb.StreamQueryRequest, context):
        async for event in self.answerer.stream(_scope(request.kb_ids), request.query, query_options(request),
                                                not request.bypass_cache):
            if isinstance(event, Answer):
                yield pb.StreamQueryResponse(completed=answer_message(event))
            else:
                yield pb.StreamQueryResponse(answer_delta=event)
