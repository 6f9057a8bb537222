"""The client SDK against stand-in services: where it finds them, the policy
every call gets (token, default deadline, retries), the token's renewal, TLS."""

from __future__ import annotations

import asyncio
import datetime
import itertools
import time

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from grpc_health.v1 import health_pb2_grpc

from meshkit.errors import ACCESS_TOKEN_EXPIRED
from meshkit.health import VersionedHealthServicer
from sagemesh.identity.v1 import identity_pb2 as pb
from sagemesh.identity.v1 import identity_pb2_grpc
from sagemesh.knowledge.v1 import knowledge_pb2, knowledge_pb2_grpc
from sagemesh_sdk import BusyRetry, ChannelPolicy, Client, HealthReport, Tokens
from sagemesh_sdk.addresses import service_addresses

# grpc-timeout is rounded up to its wire unit.
WIRE_ROUNDING = 0.01


class StandInIdentity(identity_pb2_grpc.IdentityServiceServicer):
    """Identity's token rules in miniature: access tokens a1, a2, ... each
    valid until it is marked expired; each refresh token good for one renewal."""

    def __init__(self) -> None:
        self.serial = itertools.count(1)
        self.live: set[str] = set()
        self.expired: set[str] = set()
        self.unspent: set[str] = set()
        self.unavailable = 0  # GetMe fails UNAVAILABLE this many times first
        self.renewals = 0
        self.seen: list[tuple[str, dict[str, str], float | None]] = []

    def record(self, name: str, ctx) -> dict[str, str]:
        metadata = dict(ctx.invocation_metadata())
        self.seen.append((name, metadata, ctx.time_remaining()))
        return metadata

    def issue(self, reply_type):
        n = next(self.serial)
        self.live.add(f"a{n}")
        self.unspent.add(f"r{n}")
        return reply_type(access_token=f"a{n}", refresh_token=f"r{n}", expires_in=900)

    async def authenticate(self, ctx, metadata: dict[str, str]) -> None:
        token = metadata.get("authorization", "").removeprefix("Bearer ")
        if token in self.expired:
            await ctx.abort(grpc.StatusCode.UNAUTHENTICATED, ACCESS_TOKEN_EXPIRED)
        if token not in self.live:
            await ctx.abort(grpc.StatusCode.UNAUTHENTICATED, "invalid access token")

    async def Login(self, request, ctx):
        self.record("Login", ctx)
        return self.issue(pb.LoginResponse)

    async def RefreshToken(self, request, ctx):
        self.record("RefreshToken", ctx)
        if request.refresh_token not in self.unspent:
            await ctx.abort(grpc.StatusCode.UNAUTHENTICATED, "refresh token already used; session revoked")
        self.unspent.remove(request.refresh_token)
        self.renewals += 1
        await asyncio.sleep(0.05)  # long enough for concurrent calls to pile up behind it
        return self.issue(pb.RefreshTokenResponse)

    async def Logout(self, request, ctx):
        self.record("Logout", ctx)
        self.unspent.discard(request.refresh_token)
        return pb.LogoutResponse()

    async def GetMe(self, request, ctx):
        metadata = self.record("GetMe", ctx)
        if self.unavailable:
            self.unavailable -= 1
            await ctx.abort(grpc.StatusCode.UNAVAILABLE, "try again")
        await self.authenticate(ctx, metadata)
        return pb.GetMeResponse(user=pb.User(id="u1"))


class StandInKnowledge(knowledge_pb2_grpc.KnowledgeServiceServicer):
    def __init__(self, identity: StandInIdentity) -> None:
        self.identity = identity

    async def WatchDocumentStatus(self, request, ctx):
        await self.identity.authenticate(ctx, self.identity.record("WatchDocumentStatus", ctx))
        yield knowledge_pb2.WatchDocumentStatusResponse()


@pytest.fixture
async def stand_in():
    """Both stand-ins on one plaintext server; yields (identity, address)."""
    identity = StandInIdentity()
    server = grpc.aio.server()
    identity_pb2_grpc.add_IdentityServiceServicer_to_server(identity, server)
    knowledge_pb2_grpc.add_KnowledgeServiceServicer_to_server(StandInKnowledge(identity), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield identity, f"127.0.0.1:{port}"
    await server.stop(0)


def fast_retries(**fields) -> ChannelPolicy:
    return ChannelPolicy(retry_initial_backoff_seconds=0.01, **fields)


def test_one_address_serves_every_service_else_each_its_own_or_its_variable_or_the_local_default():
    assert set(service_addresses("ingress.example.com:443").values()) == {"ingress.example.com:443"}
    found = service_addresses(addresses={"identity": "id:1"}, environ={"SAGEMESH_AGENT_ADDR": "agent:2"})
    assert found == {"identity": "id:1", "conversation": "127.0.0.1:50052", "knowledge": "127.0.0.1:50053",
                     "rag_engine": "127.0.0.1:50054", "agent": "agent:2"}
    with pytest.raises(ValueError, match="unknown services"):
        service_addresses(addresses={"identiy": "id:1"})
    with pytest.raises(ValueError, match="not both"):
        service_addresses("a:1", {"identity": "id:1"})


async def test_calls_carry_the_token_and_the_default_deadline_unless_they_say_otherwise(stand_in):
    identity, address = stand_in
    async with Client(address, token="a0", policy=ChannelPolicy(default_deadline_seconds=3)) as client:
        identity.live.add("a0")
        await client.identity.GetMe(pb.GetMeRequest())
        await client.identity.GetMe(pb.GetMeRequest(), timeout=1)
        identity.live.add("own")
        await client.identity.GetMe(pb.GetMeRequest(), metadata=[("authorization", "Bearer own")])
        await client.identity.Login(pb.LoginRequest(email="ann@example.com", password="pw"))
    (_, default, in_default), (_, _, in_own_timeout), (_, own, _), (_, login, _) = identity.seen
    assert default["authorization"] == "Bearer a0" and 2 < in_default <= 3 + WIRE_ROUNDING
    assert in_own_timeout <= 1 + WIRE_ROUNDING
    assert own["authorization"] == "Bearer own"
    assert "authorization" not in login  # public RPCs need no token, and are sent none


async def test_unavailable_is_retried_under_the_mesh_retry_policy(stand_in):
    identity, address = stand_in
    identity.live.add("a0")
    identity.unavailable = 3
    async with Client(address, token="a0", policy=fast_retries()) as client:
        assert (await client.identity.GetMe(pb.GetMeRequest())).user.id == "u1"
    assert len(identity.seen) == 4  # the mesh's four attempts
    identity.unavailable = 3
    async with Client(address, token="a0", policy=fast_retries(retry_max_attempts=2)) as client:
        with pytest.raises(grpc.aio.AioRpcError) as failed:
            await client.identity.GetMe(pb.GetMeRequest())
    assert failed.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_calls_refused_as_expired_renew_the_token_once_however_many_there_are(stand_in):
    identity, address = stand_in
    async with Client(address) as client:
        await client.login("ann@example.com", "pw")
        identity.expired.add(client.tokens.access_token)
        identity.live.clear()
        replies = await asyncio.gather(*(client.identity.GetMe(pb.GetMeRequest()) for _ in range(8)))
    assert [reply.user.id for reply in replies] == ["u1"] * 8
    # A second renewal with the same refresh token would have revoked the session.
    assert identity.renewals == 1
    assert client.tokens.access_token == "a2" and client.tokens.refresh_token == "r2"


async def test_a_token_about_to_expire_is_renewed_before_the_call_streams_included(stand_in):
    identity, address = stand_in
    identity.live.add("a0")
    identity.unspent.add("r0")
    async with Client(address, token=Tokens("a0", "r0", expires_at=time.time() + 5)) as client:
        _ = [reply async for reply in client.knowledge.WatchDocumentStatus(
            knowledge_pb2.WatchDocumentStatusRequest(document_id="d1"))]
    assert [name for name, _, _ in identity.seen] == ["RefreshToken", "WatchDocumentStatus"]
    assert identity.seen[-1][1]["authorization"] == "Bearer a1"
    assert client.tokens.expires_at > time.time() + 800


async def test_a_token_given_alone_is_never_renewed_and_an_ended_session_says_so(stand_in):
    identity, address = stand_in
    async with Client(address, token="a0") as client:
        identity.expired.add("a0")
        with pytest.raises(grpc.aio.AioRpcError) as alone:
            await client.identity.GetMe(pb.GetMeRequest())
        client.tokens = Tokens("a0", "r-spent")
        with pytest.raises(grpc.aio.AioRpcError) as ended:
            await client.identity.GetMe(pb.GetMeRequest())
    assert alone.value.details() == ACCESS_TOKEN_EXPIRED
    assert ended.value.code() == grpc.StatusCode.UNAUTHENTICATED and "session revoked" in ended.value.details()
    assert identity.renewals == 0


async def test_logout_ends_the_session_and_forgets_the_tokens(stand_in):
    identity, address = stand_in
    async with Client(address) as client:
        await client.login("ann@example.com", "pw")
        await client.logout()
        assert client.tokens == Tokens()
    assert identity.unspent == set()


def self_signed_certificate() -> tuple[bytes, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return certificate.public_bytes(serialization.Encoding.PEM), key_pem


async def test_tls_with_the_credentials_given():
    certificate, key = self_signed_certificate()
    server = grpc.aio.server()
    health_pb2_grpc.add_HealthServicer_to_server(VersionedHealthServicer("2.0.0"), server)
    port = server.add_secure_port("localhost:0", grpc.ssl_server_credentials([(key, certificate)]))
    await server.start()
    try:
        trusted = grpc.ssl_channel_credentials(root_certificates=certificate)
        async with Client(f"localhost:{port}", tls=trusted) as client:
            over_tls = await client.health()
        async with Client(f"localhost:{port}", policy=ChannelPolicy(retry_max_attempts=1)) as client:
            plaintext = await client.health(timeout=1)
    finally:
        await server.stop(0)
    # One server answers for all five services here; it knows none of them by name.
    assert set(over_tls.values()) == {HealthReport("NOT_FOUND")}
    assert all(report.status in ("UNAVAILABLE", "DEADLINE_EXCEEDED") for report in plaintext.values())


async def test_a_busy_mesh_is_waited_out_and_other_refusals_are_not(tmp_path):
    """Against the real identity service with room for one password hash at a time and none
    waiting: six registrations at once are refused RESOURCE_EXHAUSTED but for one; the client
    makes the others again after a backoff and all six succeed. A refusal that waiting cannot
    cure (ALREADY_EXISTS) is raised at once."""
    from services.identity.settings import IdentitySettings
    from tests.fixtures.identity import identity_serving

    settings = IdentitySettings(_env_file=None, data_dir=tmp_path, listen_port=0, argon2_time_cost=1,
                                argon2_memory_cost_kib=8 * 1024, argon2_parallelism=1,
                                argon2_max_concurrent_hashes=1, argon2_max_waiting_hashes=0)
    async with identity_serving(settings) as identity:
        async with Client(identity.server.address, busy=BusyRetry(base_seconds=0.05)) as patient:
            registered = await asyncio.gather(*(
                patient.identity.Register(pb.RegisterRequest(email=f"busy-{n}@example.com",
                                                             password="correct horse battery"))
                for n in range(6)))
            assert len({r.user.id for r in registered}) == 6
            started = time.monotonic()
            with pytest.raises(grpc.aio.AioRpcError) as taken:
                await patient.identity.Register(pb.RegisterRequest(email="busy-0@example.com",
                                                                   password="correct horse battery"))
            assert taken.value.code() == grpc.StatusCode.ALREADY_EXISTS and time.monotonic() - started < 1
        async with Client(identity.server.address, busy=None) as impatient:
            outcomes = await asyncio.gather(*(
                impatient.identity.Register(pb.RegisterRequest(email=f"rush-{n}@example.com",
                                                               password="correct horse battery"))
                for n in range(6)), return_exceptions=True)
            assert any(isinstance(o, grpc.aio.AioRpcError) and o.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                       for o in outcomes)
