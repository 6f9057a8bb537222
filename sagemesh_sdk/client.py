"""The client: one object holding a channel per address, a typed stub per
service, and the caller's session."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence

import grpc

from meshkit.channel_policy import ChannelPolicy, open_channel
from meshkit.health import HealthReport, check_health
from meshkit.topology import SERVICES
from sagemesh.agent.v1 import agent_pb2_grpc
from sagemesh.conversation.v1 import conversation_pb2_grpc
from sagemesh.identity.v1 import identity_pb2, identity_pb2_grpc
from sagemesh.knowledge.v1 import knowledge_pb2_grpc
from sagemesh.rag_engine.v1 import rag_engine_pb2_grpc
from sagemesh_sdk.addresses import service_addresses
from sagemesh_sdk.busy import BusyGate, BusyRetry
from sagemesh_sdk.calls import client_interceptors
from sagemesh_sdk.session import Session, Tokens


class Client:
    """The mesh's services over gRPC (grpc.aio), one typed stub each:

        async with Client() as client:
            await client.login("ann@example.com", "correct horse battery")
            me = await client.identity.GetMe(identity_pb2.GetMeRequest())

    `address` serves every service; else `addresses` by service name, and
    SAGEMESH_<SERVICE>_ADDR or `make run`'s 127.0.0.1:50051-50055 for those it
    does not name. `token` is an access token to send as it is, or the Tokens
    of an earlier login (renewed when they expire). `tls` is True for the
    system's roots or the ChannelCredentials to use; plaintext otherwise.
    `policy` is the mesh's own unless given; `interceptors` run after the
    client's own (tracing, say). A unary call refused as busy
    (RESOURCE_EXHAUSTED) is made again after a backoff, as `busy` says
    (sagemesh_sdk.busy; None: never). Make it inside the event loop that uses it:
    grpc.aio channels belong to one loop.

    Failed calls raise grpc.aio.AioRpcError, with .code() and .details().
    """

    def __init__(
        self,
        address: str | None = None,
        *,
        addresses: Mapping[str, str] | None = None,
        token: str | Tokens = "",
        tls: bool | grpc.ChannelCredentials = False,
        policy: ChannelPolicy = ChannelPolicy(),
        interceptors: Sequence[grpc.aio.ClientInterceptor] = (),
        busy: BusyRetry | None = BusyRetry(),
    ) -> None:
        self.addresses = service_addresses(address, addresses)
        self._session = Session(token if isinstance(token, Tokens) else Tokens(token), self._refresh)
        credentials = grpc.ssl_channel_credentials() if tls is True else tls or None
        # One gate for the whole client: when the mesh says it is busy, every call waits.
        self.busy_gate = BusyGate(busy) if busy is not None else None
        every_call = [*client_interceptors(self._session, policy, self.busy_gate), *interceptors]
        # One channel per distinct address: behind one ingress, every stub shares it.
        self._channels = {target: open_channel(target, policy, every_call, credentials=credentials)
                          for target in dict.fromkeys(self.addresses.values())}
        channel = {name: self._channels[target] for name, target in self.addresses.items()}
        self.identity = identity_pb2_grpc.IdentityServiceStub(channel["identity"])
        self.conversation = conversation_pb2_grpc.ConversationServiceStub(channel["conversation"])
        self.knowledge = knowledge_pb2_grpc.KnowledgeServiceStub(channel["knowledge"])
        self.rag_engine = rag_engine_pb2_grpc.RagEngineServiceStub(channel["rag_engine"])
        self.agent = agent_pb2_grpc.AgentServiceStub(channel["agent"])
        self._channel_of = channel

    @property
    def tokens(self) -> Tokens:
        """What calls carry now; read it after calls to keep a renewed pair (refresh tokens rotate)."""
        return self._session.tokens

    @tokens.setter
    def tokens(self, tokens: Tokens) -> None:
        self._session.tokens = tokens

    async def login(self, email: str, password: str, tenant_name: str = "") -> identity_pb2.LoginResponse:
        """Logs in: later calls carry the access token, renewed with the refresh token as it expires."""
        reply = await self.identity.Login(
            identity_pb2.LoginRequest(email=email, password=password, tenant_name=tenant_name))
        self.tokens = Tokens.issued(reply)
        return reply

    async def logout(self) -> None:
        """Ends the session at identity (its refresh tokens stop working) and forgets the tokens."""
        if self.tokens.refresh_token:
            await self.identity.Logout(identity_pb2.LogoutRequest(refresh_token=self.tokens.refresh_token))
        self.tokens = Tokens()

    async def health(self, timeout: float = 2.0) -> dict[str, HealthReport]:
        """Each service's grpc.health.v1 status and the version that answered, by service name.

        Each is asked for by its gRPC service name, so behind one address (an
        ingress, which sends every health check to the same backend) only that
        backend reports SERVING and the rest NOT_FOUND: ask the gateway's
        GET /api/v1/health there instead."""
        names = list(SERVICES)
        reports = await asyncio.gather(*(
            check_health(self._channel_of[name], SERVICES[name].grpc_service, timeout) for name in names))
        return dict(zip(names, reports))

    async def _refresh(self, request: identity_pb2.RefreshTokenRequest) -> identity_pb2.RefreshTokenResponse:
        return await self.identity.RefreshToken(request)

    async def close(self) -> None:
        await asyncio.gather(*(channel.close() for channel in self._channels.values()))

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()
