"""What the client adds to every call: the mesh's deadline when the caller
sets none, the caller's access token, renewed when it expires, and patience
with a busy mesh (sagemesh_sdk.busy)."""

from __future__ import annotations

import grpc

from meshkit.channel_policy import ChannelPolicy, call_details, rewriting_interceptors
from meshkit.errors import ACCESS_TOKEN_EXPIRED
from meshkit.topology import PUBLIC_METHODS
from sagemesh_sdk.busy import Busy, BusyGate
from sagemesh_sdk.session import Session

AUTHORIZATION = "authorization"


def _wants_session_token(details: grpc.aio.ClientCallDetails) -> bool:
    # grpc.aio hands interceptors the method's path encoded.
    method = details.method.decode() if isinstance(details.method, bytes) else details.method
    # A caller that sends its own authorization manages its token itself.
    return method not in PUBLIC_METHODS and AUTHORIZATION not in (details.metadata or ())


def _expired(error: grpc.aio.AioRpcError) -> bool:
    return error.code() == grpc.StatusCode.UNAUTHENTICATED and error.details() == ACCESS_TOKEN_EXPIRED


class _RenewOnExpiry(grpc.aio.UnaryUnaryClientInterceptor):
    """Makes a unary call refused because its access token had expired again,
    once, with a renewed token. (A stream cannot be replayed; it is covered by
    the renewal before the token expires, which every call gets.)"""

    def __init__(self, session: Session) -> None:
        self.session = session

    async def intercept_unary_unary(self, continuation, details, request):
        sent = self.session.tokens.access_token
        call = await continuation(details, request)
        if not (self.session.renewable and _wants_session_token(details)):
            return call
        try:
            await call
        except grpc.aio.AioRpcError as error:
            if not _expired(error):
                return call
            await self.session.renew(sent)
            return await continuation(details, request)
        return call


def busy_of(error: Exception) -> Busy | None:
    """A refusal because the mesh is busy (a server shedding load, a bound on password checks);
    gRPC's own RESOURCE_EXHAUSTED for a message over the size limit is not one."""
    if not isinstance(error, grpc.aio.AioRpcError) or error.code() != grpc.StatusCode.RESOURCE_EXHAUSTED:
        return None
    if "larger than max" in (error.details() or ""):
        return None
    retry_after = dict(error.trailing_metadata() or ()).get("retry-after")
    try:
        return Busy(float(retry_after) if retry_after else None)
    except ValueError:
        return Busy()


class _WaitWhenBusy(grpc.aio.UnaryUnaryClientInterceptor):
    """Makes a unary call refused as busy again, after the wait the gate says (a stream cannot be
    replayed: its caller decides)."""

    def __init__(self, gate: BusyGate) -> None:
        self.gate = gate

    async def intercept_unary_unary(self, continuation, details, request):
        async def attempt():
            call = await continuation(details, request)
            await call  # raises the call's error
            return call

        return await self.gate.call(attempt, busy_of)


def client_interceptors(session: Session, policy: ChannelPolicy,
                        gate: BusyGate | None = None) -> list[grpc.aio.ClientInterceptor]:
    async def deadline_and_token(details: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
        metadata = grpc.aio.Metadata(*(details.metadata or ()))
        if _wants_session_token(details) and (token := await session.token()):
            metadata[AUTHORIZATION] = f"Bearer {token}"
        return call_details(details, policy.timeout_of(details), metadata)

    # Waiting outermost and renewal next, so that every call made again gets the current token.
    waiting = [_WaitWhenBusy(gate)] if gate is not None else []
    return [*waiting, _RenewOnExpiry(session), *rewriting_interceptors(deadline_and_token)]
