"""Answerer over gRPC to the agent service, for agent-mode conversations: the
message is the task, the run's final result is the answer."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

import grpc

from sagemesh.agent.v1 import agent_pb2 as pb
from sagemesh.agent.v1 import agent_pb2_grpc
from services.conversation.answerer_rag import passed_on
from services.conversation.domain import AnswerResult, Message


class AgentAnswerer:
    def __init__(self, channel: grpc.aio.Channel, timeout_seconds: float) -> None:
        self.stub = agent_pb2_grpc.AgentServiceStub(channel)
        self.timeout = timeout_seconds

    async def stream(self, question: str, kb_ids: Sequence[str], history: Sequence[Message],
                     use_rerank: bool) -> AsyncIterator[str | AnswerResult]:
        try:
            async for event in self.stub.StreamExecute(pb.StreamExecuteRequest(task=question, kb_ids=list(kb_ids)),
                                                        timeout=self.timeout):
                if event.WhichOneof("event") != "completed":
                    continue
                run = event.completed
                text = run.final_result if run.status == pb.RUN_STATUS_COMPLETED else \
                    f"The agent could not finish this task: {run.status_reason}"
                yield text
                yield AnswerResult(text, [], {"generator": "agent", "totalLatencyMs": run.stats.duration_ms})
        except grpc.aio.AioRpcError as error:
            raise passed_on(error, "agent") from error
