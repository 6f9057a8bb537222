"""RevocationSource over gRPC: identity's ListRevokedSessions."""

from __future__ import annotations

from collections.abc import Sequence

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from meshkit.revocations import Revocation
from sagemesh.identity.v1 import identity_pb2 as pb
from sagemesh.identity.v1 import identity_pb2_grpc


def _seconds(stamp: Timestamp) -> float:
    return stamp.ToNanoseconds() / 1e9


class IdentityRevocations:
    def __init__(self, channel: grpc.aio.Channel, timeout_seconds: float) -> None:
        self.stub = identity_pb2_grpc.IdentityServiceStub(channel)
        # A poll that cannot finish before the next one is due is given up, not queued.
        self.timeout_seconds = timeout_seconds

    async def revoked_since(self, since: float | None) -> tuple[Sequence[Revocation], bool]:
        request = pb.ListRevokedSessionsRequest()
        if since is not None:
            request.revoked_after.FromNanoseconds(int(since * 1e9))
        try:
            reply = await self.stub.ListRevokedSessions(request, timeout=self.timeout_seconds)
        except grpc.aio.AioRpcError as error:
            # For the log line, in a line: gRPC's own text spans several.
            raise ConnectionError(f"{error.code().name}: {error.details()}") from None
        page = [Revocation(s.session_id, _seconds(s.revoked_at), _seconds(s.tokens_expire_at))
                for s in reply.sessions]
        return page, 0 < reply.limit <= len(page)
