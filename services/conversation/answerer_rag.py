"""Answerer over gRPC to the rag_engine's StreamQuery. The caller's access
token and deadline go along (meshkit.channels), so the rag_engine searches
the caller's tenant."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

import grpc
from google.protobuf.json_format import MessageToDict

from meshkit import errors
from sagemesh.rag_engine.v1 import rag_engine_pb2 as pb
from sagemesh.rag_engine.v1 import rag_engine_pb2_grpc
from services.conversation.domain import AnswerResult, Message, Role

_TURN_ROLES = {Role.USER: pb.TURN_ROLE_USER, Role.ASSISTANT: pb.TURN_ROLE_ASSISTANT}
# The rag_engine's refusals that are the caller's to fix keep their kind.
_PASSED_ON = {
    grpc.StatusCode.INVALID_ARGUMENT: errors.InvalidArgument,
    grpc.StatusCode.FAILED_PRECONDITION: errors.FailedPrecondition,
    grpc.StatusCode.NOT_FOUND: errors.NotFound,
    grpc.StatusCode.PERMISSION_DENIED: errors.PermissionDenied,
    grpc.StatusCode.UNAUTHENTICATED: errors.Unauthenticated,
    grpc.StatusCode.RESOURCE_EXHAUSTED: errors.ResourceExhausted,
}


class RagAnswerer:
    def __init__(self, channel: grpc.aio.Channel, timeout_seconds: float) -> None:
        self.stub = rag_engine_pb2_grpc.RagEngineServiceStub(channel)
        self.timeout = timeout_seconds

    async def stream(self, question: str, kb_ids: Sequence[str], history: Sequence[Message],
                     use_rerank: bool) -> AsyncIterator[str | AnswerResult]:
        request = pb.StreamQueryRequest(
            query=question, kb_ids=list(kb_ids), use_rerank=use_rerank,
            history=[pb.ConversationTurn(role=_TURN_ROLES[m.role], content=m.content) for m in history],
        )
        try:
            async for event in self.stub.StreamQuery(request, timeout=self.timeout):
                if event.WhichOneof("event") == "answer_delta":
                    yield event.answer_delta
                else:
                    done = event.completed
                    yield AnswerResult(done.answer, [MessageToDict(s) for s in done.sources],
                                       MessageToDict(done.metrics))
        except grpc.aio.AioRpcError as error:
            raise passed_on(error, "rag_engine") from error


def passed_on(error: grpc.aio.AioRpcError, service: str) -> errors.ServiceError:
    """The answering service's failure as this service reports it."""
    kind = _PASSED_ON.get(error.code())
    if kind is None:
        return errors.Unavailable(f"the {service} could not answer ({error.code().name})")
    return kind(error.details() or error.code().name)
