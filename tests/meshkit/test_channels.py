"""Client channels: the retry policy, default deadlines, and what each call
carries to the next hop. The server here is a bare grpc.aio server whose
handler misbehaves on purpose."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest

from meshkit import context
from meshkit.channels import MethodPolicy, create_channel
from meshkit.settings import MeshSettings
from meshkit.auth import Principal, set_principal
from sagemesh.identity.v1 import identity_pb2 as pb
from sagemesh.identity.v1 import identity_pb2_grpc
from sagemesh.knowledge.v1 import knowledge_pb2 as knowledge_pb
from sagemesh.knowledge.v1 import knowledge_pb2_grpc

SERVICE = "sagemesh.identity.v1.IdentityService"
# grpc-timeout is rounded up to its wire unit, so a server may see a hair more
# time than the client set; far less than any default that would be wrong.
WIRE_ROUNDING = 0.01


class ScriptedIdentity(identity_pb2_grpc.IdentityServiceServicer):
    """Fails with UNAVAILABLE `failures` times, then answers; records calls."""

    def __init__(self, failures: int = 0, delay: float = 0.0) -> None:
        self.failures = failures
        self.delay = delay
        self.attempts = 0
        self.metadata: list[dict[str, str]] = []
        self.deadlines: list[float | None] = []

    async def GetMe(self, request, ctx):
        self.attempts += 1
        self.metadata.append(dict(ctx.invocation_metadata()))
        self.deadlines.append(ctx.time_remaining())
        if self.attempts <= self.failures:
            await ctx.abort(grpc.StatusCode.UNAVAILABLE, "try again")
        await asyncio.sleep(self.delay)
        return pb.GetMeResponse(user=pb.User(id="u1"))


@pytest.fixture
async def serve():
    servers = []

    async def start(servicer) -> str:
        server = grpc.aio.server()
        identity_pb2_grpc.add_IdentityServiceServicer_to_server(servicer, server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        servers.append(server)
        return f"127.0.0.1:{port}"

    yield start
    for server in servers:
        await server.stop(0)


def settings(**overrides) -> MeshSettings:
    return MeshSettings(_env_file=None, retry_initial_backoff_seconds=0.01, **overrides)


async def test_unavailable_twice_then_success_is_retried(serve):
    servicer = ScriptedIdentity(failures=2)
    async with create_channel(await serve(servicer), settings()) as channel:
        reply = await identity_pb2_grpc.IdentityServiceStub(channel).GetMe(pb.GetMeRequest())
    assert reply.user.id == "u1"
    assert servicer.attempts == 3


async def test_retries_stop_at_max_attempts(serve):
    servicer = ScriptedIdentity(failures=100)
    async with create_channel(await serve(servicer), settings(retry_max_attempts=3)) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await identity_pb2_grpc.IdentityServiceStub(channel).GetMe(pb.GetMeRequest())
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert servicer.attempts == 3


async def test_retries_are_throttled_while_a_peer_keeps_failing(serve):
    # Without throttling, ten calls to a peer that is down would be forty attempts.
    servicer = ScriptedIdentity(failures=1000)
    attempts_per_call = []
    async with create_channel(await serve(servicer), settings(retry_max_attempts=4)) as channel:
        for _ in range(10):
            before = servicer.attempts
            with pytest.raises(grpc.aio.AioRpcError):
                await identity_pb2_grpc.IdentityServiceStub(channel).GetMe(pb.GetMeRequest())
            attempts_per_call.append(servicer.attempts - before)
    assert attempts_per_call[0] == 4 and attempts_per_call[-5:] == [1] * 5, attempts_per_call


async def test_one_attempt_means_no_retries_not_a_broken_channel(serve):
    # gRPC refuses a retry policy of fewer than two attempts, and the channel with it.
    servicer = ScriptedIdentity(failures=1)
    async with create_channel(await serve(servicer), settings(retry_max_attempts=1)) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await identity_pb2_grpc.IdentityServiceStub(channel).GetMe(pb.GetMeRequest())
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE and caught.value.details() == "try again"
    assert servicer.attempts == 1


async def test_a_method_can_opt_out_of_retries(serve):
    servicer = ScriptedIdentity(failures=1)
    no_retry = (MethodPolicy(SERVICE, "GetMe", retry=False),)
    async with create_channel(await serve(servicer), settings(), no_retry) as channel:
        with pytest.raises(grpc.aio.AioRpcError):
            await identity_pb2_grpc.IdentityServiceStub(channel).GetMe(pb.GetMeRequest())
    assert servicer.attempts == 1


async def test_every_call_gets_the_default_deadline(serve):
    servicer = ScriptedIdentity(delay=5)
    async with create_channel(await serve(servicer), settings(default_deadline_seconds=0.3)) as channel:
        # Connect first: the deadline under test is the call's, not the handshake's.
        await asyncio.wait_for(channel.channel_ready(), 10)
        started = time.monotonic()
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await identity_pb2_grpc.IdentityServiceStub(channel).GetMe(pb.GetMeRequest())
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert time.monotonic() - started < 2
    assert servicer.deadlines[0] is not None and servicer.deadlines[0] <= 0.3 + WIRE_ROUNDING


async def test_an_incoming_deadline_caps_outgoing_calls_and_context_is_forwarded(serve):
    servicer = ScriptedIdentity()
    async with create_channel(await serve(servicer), settings(default_deadline_seconds=30)) as channel:
        request_token = context.request_id.set("req-123")
        deadline_token = context.deadline.set(time.monotonic() + 1.0)
        try:
            await identity_pb2_grpc.IdentityServiceStub(channel).GetMe(pb.GetMeRequest())
        finally:
            context.request_id.reset(request_token)
            context.deadline.reset(deadline_token)
    assert servicer.deadlines[0] is not None and servicer.deadlines[0] <= 1.0 + WIRE_ROUNDING
    assert servicer.metadata[0]["x-request-id"] == "req-123"


class RecordingKnowledge(knowledge_pb2_grpc.KnowledgeServiceServicer):
    """Streaming RPCs of both directions that record what each call carried."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, str], float | None]] = []

    def _record(self, name: str, ctx) -> None:
        self.calls.append((name, dict(ctx.invocation_metadata()), ctx.time_remaining()))

    async def WatchDocumentStatus(self, request, ctx):
        self._record("server-stream", ctx)
        yield knowledge_pb.WatchDocumentStatusResponse()

    async def UploadDocument(self, request_iterator, ctx):
        self._record("client-stream", ctx)
        async for _ in request_iterator:
            pass
        return knowledge_pb.UploadDocumentResponse()


async def test_streaming_calls_carry_the_deadline_request_id_token_and_routing_headers_too():
    servicer = RecordingKnowledge()
    server = grpc.aio.server()
    knowledge_pb2_grpc.add_KnowledgeServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    tokens = (context.request_id.set("req-stream"), context.deadline.set(time.monotonic() + 2.0),
              context.routing.set((("x-canary", "true"),)))
    set_principal(Principal("u1", "t1", "u@example.com", "member", "s1", time.time() + 60, "tok-1"))
    try:
        async with create_channel(f"127.0.0.1:{port}", settings(default_deadline_seconds=30)) as channel:
            stub = knowledge_pb2_grpc.KnowledgeServiceStub(channel)
            _ = [r async for r in stub.WatchDocumentStatus(knowledge_pb.WatchDocumentStatusRequest())]
            await stub.UploadDocument(iter([knowledge_pb.UploadDocumentRequest(data=b"x")]))
    finally:
        set_principal(None)
        context.request_id.reset(tokens[0])
        context.deadline.reset(tokens[1])
        context.routing.reset(tokens[2])
        await server.stop(0)
    assert [name for name, _, _ in servicer.calls] == ["server-stream", "client-stream"]
    for _, metadata, remaining in servicer.calls:
        assert metadata["x-request-id"] == "req-stream" and metadata["authorization"] == "Bearer tok-1"
        assert metadata["x-canary"] == "true"  # Istio routes every hop of a canary request by it
        assert remaining is not None and remaining <= 2.0 + WIRE_ROUNDING
