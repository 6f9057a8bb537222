"""MeshServer: what every service gets from the shared bootstrap."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timezone

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from meshkit import errors
from meshkit.channels import create_channel
from meshkit.health import VERSION_METADATA, HealthReport, check_health
from meshkit.server import MeshServer, ServiceApp
from meshkit.settings import MeshSettings
from meshkit.topology import ServiceInfo
from sagemesh.identity.v1 import identity_pb2 as pb
from sagemesh.identity.v1 import identity_pb2_grpc
from sagemesh.rag_engine.v1 import rag_engine_pb2 as rag_pb
from sagemesh.rag_engine.v1 import rag_engine_pb2_grpc
from services.identity.domain import Role, User
from services.identity.tokens import AccessTokenIssuer, load_signing_key

PROBE = ServiceInfo("probe", "sagemesh.identity.v1.IdentityService", 0, 0)


class ProbeIdentity(identity_pb2_grpc.IdentityServiceServicer):
    """Register (a public RPC) raises whatever the test puts in `error`."""

    def __init__(self) -> None:
        self.error: BaseException | None = None
        self.delay = 0.0

    async def Register(self, request, ctx):
        await asyncio.sleep(self.delay)
        if self.error:
            raise self.error
        return pb.RegisterResponse(user=pb.User(email=request.email))

    async def ValidateToken(self, request, ctx):
        return pb.ValidateTokenResponse(user_id="internal-ok")

    async def GetMe(self, request, ctx):
        from meshkit.auth import current_principal

        return pb.GetMeResponse(user=pb.User(id=current_principal().user_id))


class ProbeRag(rag_engine_pb2_grpc.RagEngineServiceServicer):
    async def StreamQuery(self, request, ctx):
        for piece in ("grounded ", "answer"):
            yield rag_pb.StreamQueryResponse(answer_delta=piece)
        raise errors.NotFound("knowledge base gone")


class Probe:
    def __init__(self, tmp_path, **settings_fields) -> None:
        self.identity = ProbeIdentity()
        self.dependency_ok = True
        self.settings = MeshSettings(_env_file=None, data_dir=tmp_path, **{"listen_port": 0, **settings_fields})
        kid, key = load_signing_key(self.settings.keys_dir, None)
        self.tokens = AccessTokenIssuer(kid, key, self.settings.jwt_issuer, self.settings.jwt_audience, 60)

        async def dependency():
            if not self.dependency_ok:
                raise ConnectionError("database unreachable")

        def register(server):
            identity_pb2_grpc.add_IdentityServiceServicer_to_server(self.identity, server)
            rag_engine_pb2_grpc.add_RagEngineServiceServicer_to_server(ProbeRag(), server)

        self.server = MeshServer(
            ServiceApp(PROBE, register, health_checks={"database": dependency}), self.settings
        )

    def token(self) -> str:
        user = User("u1", "t1", "acme", "a@example.com", "A", Role.MEMBER, datetime.now(timezone.utc))
        return self.tokens.issue(user, "s1", time.time())


@pytest.fixture
async def probe(tmp_path):
    probe = Probe(tmp_path)
    await probe.server.start()
    probe.channel = create_channel(probe.server.address, probe.settings)
    probe.stub = identity_pb2_grpc.IdentityServiceStub(probe.channel)
    yield probe
    await probe.channel.close()
    await probe.server.stop(grace=0)


async def test_an_unexpected_error_is_internal_without_its_details(probe):
    probe.identity.error = RuntimeError("connection string postgres://admin:hunter2@db")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await probe.stub.Register(pb.RegisterRequest(email="x"), metadata=[("x-request-id", "req-42")])
    assert caught.value.code() == grpc.StatusCode.INTERNAL
    assert "hunter2" not in caught.value.details()
    assert "Traceback" not in caught.value.details()
    assert "req-42" in caught.value.details()


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (errors.InvalidArgument("too long", field="title"), grpc.StatusCode.INVALID_ARGUMENT),
        (errors.NotFound("no such thing"), grpc.StatusCode.NOT_FOUND),
        (errors.AlreadyExists("taken"), grpc.StatusCode.ALREADY_EXISTS),
        (errors.Unauthenticated("who are you"), grpc.StatusCode.UNAUTHENTICATED),
        (errors.PermissionDenied("not yours"), grpc.StatusCode.PERMISSION_DENIED),
        (errors.FailedPrecondition("not ready"), grpc.StatusCode.FAILED_PRECONDITION),
        (errors.ResourceExhausted("slow down"), grpc.StatusCode.RESOURCE_EXHAUSTED),
        (errors.Unavailable("later"), grpc.StatusCode.UNAVAILABLE),
    ],
)
async def test_domain_errors_become_their_status_codes(probe, error, code):
    probe.identity.error = error
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await probe.stub.Register(pb.RegisterRequest())
    assert caught.value.code() == code
    assert caught.value.details() == error.message


async def test_rpcs_need_a_token_unless_public_or_internal(probe):
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await probe.stub.GetMe(pb.GetMeRequest())
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    me = await probe.stub.GetMe(pb.GetMeRequest(), metadata=[("authorization", f"Bearer {probe.token()}")])
    assert me.user.id == "u1"
    internal = await probe.stub.ValidateToken(pb.ValidateTokenRequest())
    assert internal.user_id == "internal-ok"


async def test_streams_pass_through_the_interceptors_and_end_with_the_mapped_error(probe):
    stub = rag_engine_pb2_grpc.RagEngineServiceStub(probe.channel)
    pieces = []
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for reply in stub.StreamQuery(
            rag_pb.StreamQueryRequest(query="q"), metadata=[("authorization", f"Bearer {probe.token()}")]
        ):
            pieces.append(reply.answer_delta)
    assert pieces == ["grounded ", "answer"]
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


async def test_health_follows_the_dependencies_but_liveness_does_not(probe):
    health = health_pb2_grpc.HealthStub(probe.channel)
    request = health_pb2.HealthCheckRequest(service=PROBE.grpc_service)
    assert (await health.Check(request)).status == health_pb2.HealthCheckResponse.SERVING
    probe.dependency_ok = False
    await probe.server.health.check_once()
    assert (await health.Check(request)).status == health_pb2.HealthCheckResponse.NOT_SERVING
    assert "database" in probe.server.health.failing
    liveness = health_pb2.HealthCheckRequest(service="liveness")
    assert (await health.Check(liveness)).status == health_pb2.HealthCheckResponse.SERVING
    probe.dependency_ok = True
    await probe.server.health.check_once()
    assert (await health.Check(request)).status == health_pb2.HealthCheckResponse.SERVING


async def test_health_answers_name_the_version_that_gave_them(tmp_path):
    canary = Probe(tmp_path, service_version="1.4.0-canary")
    await canary.server.start()
    try:
        async with create_channel(canary.server.address, canary.settings) as channel:
            reports = [await check_health(channel, service) for service in ("", PROBE.grpc_service, "liveness")]
            unknown = await check_health(channel, "no.such.Service")
            watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest())
            watched = dict(await watch.initial_metadata())
            watch.cancel()
    finally:
        await canary.server.stop(grace=0)
    assert reports == [HealthReport("SERVING", "1.4.0-canary")] * 3
    assert unknown == HealthReport("NOT_FOUND")
    assert watched[VERSION_METADATA] == "1.4.0-canary"


async def test_a_port_in_use_is_refused_not_shared(tmp_path, probe):
    # With SO_REUSEPORT (gRPC's default) a second server would share the port and its connections.
    second = Probe(tmp_path / "second", listen_port=int(probe.server.address.rpartition(":")[2]))
    with pytest.raises(RuntimeError):
        await second.server.start()


async def test_reflection_lists_the_service(probe):
    stub = reflection_pb2_grpc.ServerReflectionStub(probe.channel)

    async def requests():
        yield reflection_pb2.ServerReflectionRequest(list_services="")

    async for reply in stub.ServerReflectionInfo(requests()):
        names = {s.name for s in reply.list_services_response.service}
        break
    assert {PROBE.grpc_service, "grpc.health.v1.Health"} <= names


async def test_stop_drains_in_flight_calls_and_refuses_new_ones(tmp_path):
    probe = Probe(tmp_path)
    await probe.server.start()
    probe.identity.delay = 0.5
    try:
        async with create_channel(probe.server.address, probe.settings) as channel:
            stub = identity_pb2_grpc.IdentityServiceStub(channel)
            in_flight = asyncio.ensure_future(stub.Register(pb.RegisterRequest(email="slow@example.com")))
            await asyncio.sleep(0.1)
            await probe.server.stop(grace=5)
            assert (await in_flight).user.email == "slow@example.com"
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.Register(pb.RegisterRequest(), timeout=1)
            assert caught.value.code() in (
                grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED,
            )
    finally:
        await probe.server.stop(grace=0)


async def test_calls_beyond_the_concurrency_limit_are_refused_at_once(tmp_path):
    probe = Probe(tmp_path, max_concurrent_rpcs=2)
    probe.identity.delay = 1.0
    await probe.server.start()
    try:
        async with create_channel(probe.server.address, probe.settings) as channel:
            stub = identity_pb2_grpc.IdentityServiceStub(channel)
            await asyncio.wait_for(channel.channel_ready(), 5)
            started = time.monotonic()
            calls = [asyncio.ensure_future(stub.Register(pb.RegisterRequest(email=f"{i}@example.com")))
                     for i in range(3)]
            done, _ = await asyncio.wait(calls, return_when=asyncio.FIRST_EXCEPTION)
            refused = [c.exception() for c in done if c.exception()]
            assert len(refused) == 1 and refused[0].code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert time.monotonic() - started < 0.5  # refused, not queued behind the slow ones
            served = await asyncio.gather(*(c for c in calls if not c.done() or not c.exception()))
            assert len(served) == 2
    finally:
        await probe.server.stop(grace=0)
