"""KnowledgeBases over gRPC to the knowledge service, with the caller's access
token (meshkit.channels), so that another tenant's base is as missing as one
that never was."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import grpc

from meshkit import errors
from sagemesh.knowledge.v1 import knowledge_pb2 as pb
from sagemesh.knowledge.v1 import knowledge_pb2_grpc


class GrpcKnowledgeBases:
    def __init__(self, channel: grpc.aio.Channel) -> None:
        self.stub = knowledge_pb2_grpc.KnowledgeServiceStub(channel)

    async def _exists(self, kb_id: str) -> bool:
        try:
            await self.stub.GetKnowledgeBase(pb.GetKnowledgeBaseRequest(kb_id=kb_id))
        except grpc.aio.AioRpcError as error:
            if error.code() == grpc.StatusCode.NOT_FOUND:
                return False
            raise errors.Unavailable(f"the knowledge service could not check the knowledge bases: "
                                     f"{error.code().name}") from None
        return True

    async def missing(self, kb_ids: Sequence[str]) -> list[str]:
        found = await asyncio.gather(*(self._exists(kb_id) for kb_id in kb_ids))
        return [kb_id for kb_id, exists in zip(kb_ids, found) if not exists]
