"""The identity service over a real gRPC channel, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import datetime, timezone

import grpc
import jwt
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status
from prometheus_client import REGISTRY

from sagemesh.identity.v1 import identity_pb2 as pb
from services.identity.domain import Role, User
from services.identity.settings import IdentitySettings
from services.identity.tokens import AccessTokenIssuer, load_signing_key
from tests.fixtures.identity import PASSWORD, identity_serving


def new_email() -> str:
    return f"user-{uuid.uuid4().hex[:10]}@example.com"


def bearer(token: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {token}")]


async def rpc_error(call) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return caught.value


async def test_register_login_me_refresh_and_reuse_revokes_the_family(identity):
    stub = identity.stub
    email = new_email()
    registered = await stub.Register(
        pb.RegisterRequest(email=email, password=PASSWORD, display_name="Ada")
    )
    assert registered.user.email == email and registered.user.id

    login = await stub.Login(pb.LoginRequest(email=email, password=PASSWORD))
    assert login.token_type == "Bearer"
    assert login.expires_in == identity.settings.access_token_ttl_seconds
    assert login.user.id == registered.user.id

    me = await stub.GetMe(pb.GetMeRequest(), metadata=bearer(login.access_token))
    assert (me.user.id, me.user.display_name, me.user.tenant_name) == (
        registered.user.id, "Ada", "default",
    )

    rotated = await stub.RefreshToken(pb.RefreshTokenRequest(refresh_token=login.refresh_token))
    assert rotated.refresh_token != login.refresh_token
    me_again = await stub.GetMe(pb.GetMeRequest(), metadata=bearer(rotated.access_token))
    assert me_again.user.id == registered.user.id

    # Replaying the spent token is taken as theft: the whole family dies...
    reuse = await rpc_error(stub.RefreshToken(pb.RefreshTokenRequest(refresh_token=login.refresh_token)))
    assert reuse.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "already used" in reuse.details()
    # ...including the legitimate successor,
    successor = await rpc_error(
        stub.RefreshToken(pb.RefreshTokenRequest(refresh_token=rotated.refresh_token))
    )
    assert successor.code() == grpc.StatusCode.UNAUTHENTICATED
    # and the session's access tokens fail validation before they expire.
    validation = await rpc_error(
        stub.ValidateToken(pb.ValidateTokenRequest(access_token=rotated.access_token))
    )
    assert validation.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_validate_token_reports_the_caller(identity):
    email = new_email()
    login = await identity.register_and_login(email)
    validated = await identity.stub.ValidateToken(
        pb.ValidateTokenRequest(access_token=login.access_token)
    )
    assert validated.user_id == login.user.id
    assert validated.tenant_id == login.user.tenant_id
    assert validated.email == email
    assert validated.session_id
    assert validated.expires_at.seconds > 0


async def test_logout_revokes_the_session(identity):
    login = await identity.register_and_login(new_email())
    await identity.stub.Logout(pb.LogoutRequest(refresh_token=login.refresh_token))
    refresh = await rpc_error(
        identity.stub.RefreshToken(pb.RefreshTokenRequest(refresh_token=login.refresh_token))
    )
    assert refresh.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "revoked" in refresh.details()
    validation = await rpc_error(
        identity.stub.ValidateToken(pb.ValidateTokenRequest(access_token=login.access_token))
    )
    assert validation.code() == grpc.StatusCode.UNAUTHENTICATED
    # Identity's own interceptor refuses the token at once; the other services learn it below.
    me = await rpc_error(identity.stub.GetMe(pb.GetMeRequest(), metadata=bearer(login.access_token)))
    assert me.code() == grpc.StatusCode.UNAUTHENTICATED and "log in again" in me.details()


async def test_revoked_sessions_are_listed_while_their_tokens_may_live(identity, monkeypatch):
    first, second, kept = [await identity.register_and_login(new_email()) for _ in range(3)]
    before = time.time()
    for login in (first, second):
        await identity.stub.Logout(pb.LogoutRequest(refresh_token=login.refresh_token))
    # A reused refresh token revokes its session as logout does.
    await identity.stub.RefreshToken(pb.RefreshTokenRequest(refresh_token=kept.refresh_token))
    await rpc_error(identity.stub.RefreshToken(pb.RefreshTokenRequest(refresh_token=kept.refresh_token)))

    def session_of(login) -> str:
        return jwt.decode(login.access_token, options={"verify_signature": False})["sid"]

    listed = await identity.stub.ListRevokedSessions(pb.ListRevokedSessionsRequest())
    ours = [s for s in listed.sessions if s.session_id in {session_of(x) for x in (first, second, kept)}]
    assert [s.session_id for s in ours] == [session_of(first), session_of(second), session_of(kept)]
    ttl = identity.settings.access_token_ttl_seconds
    for revoked in ours:
        assert before - 1 <= revoked.revoked_at.ToNanoseconds() / 1e9 <= time.time()
        assert revoked.tokens_expire_at.ToNanoseconds() - revoked.revoked_at.ToNanoseconds() == ttl * 10**9
    later = pb.ListRevokedSessionsRequest()
    later.revoked_after.CopyFrom(ours[1].revoked_at)
    assert [s.session_id for s in (await identity.stub.ListRevokedSessions(later)).sessions][-2:] == \
        [session_of(second), session_of(kept)]
    # Once every token of theirs has expired, they are no longer listed.
    monkeypatch.setattr(time, "time", lambda: before + ttl + 60)
    assert not (await identity.stub.ListRevokedSessions(pb.ListRevokedSessionsRequest())).sessions


async def test_concurrent_duplicate_registration_creates_one_user(identity):
    email = new_email()
    attempts = await asyncio.gather(
        *(
            identity.stub.Register(pb.RegisterRequest(email=email, password=PASSWORD))
            for _ in range(8)
        ),
        return_exceptions=True,
    )
    created = [a for a in attempts if isinstance(a, pb.RegisterResponse)]
    refused = [a for a in attempts if isinstance(a, grpc.aio.AioRpcError)]
    assert len(created) == 1
    assert [e.code() for e in refused] == [grpc.StatusCode.ALREADY_EXISTS] * 7
    assert await identity.count_users(email) == 1


async def test_email_is_unique_per_tenant_ignoring_case(identity):
    email = new_email()
    await identity.stub.Register(pb.RegisterRequest(email=email, password=PASSWORD))
    duplicate = await rpc_error(
        identity.stub.Register(pb.RegisterRequest(email=email.upper(), password=PASSWORD))
    )
    assert duplicate.code() == grpc.StatusCode.ALREADY_EXISTS
    # The same address may hold an account in another tenant.
    tenant = f"team-{uuid.uuid4().hex[:8]}"
    other = await identity.stub.Register(
        pb.RegisterRequest(email=email, password=PASSWORD, tenant_name=tenant)
    )
    assert other.user.tenant_name == tenant


async def test_creating_a_tenant_makes_its_admin_and_its_name_is_taken(identity):
    tenant = f"acme-{uuid.uuid4().hex[:8]}"
    founder = await identity.stub.Register(
        pb.RegisterRequest(email=new_email(), password=PASSWORD, tenant_name=tenant)
    )
    assert founder.user.role == pb.ROLE_ADMIN
    taken = await rpc_error(
        identity.stub.Register(
            pb.RegisterRequest(email=new_email(), password=PASSWORD, tenant_name=tenant)
        )
    )
    assert taken.code() == grpc.StatusCode.ALREADY_EXISTS
    assert tenant in taken.details()
    login = await identity.stub.Login(
        pb.LoginRequest(email=founder.user.email, password=PASSWORD, tenant_name=tenant)
    )
    assert login.user.tenant_id == founder.user.tenant_id


def field_violations(error: grpc.aio.AioRpcError) -> dict[str, str]:
    status = rpc_status.from_call(error)
    violations = {}
    for detail in status.details:
        bad_request = error_details_pb2.BadRequest()
        if detail.Unpack(bad_request):
            violations.update({v.field: v.description for v in bad_request.field_violations})
    return violations


@pytest.mark.parametrize(
    ("request_fields", "field", "phrase"),
    [
        ({"email": "not-an-email", "password": PASSWORD}, "email", "@"),
        ({"email": "", "password": PASSWORD}, "email", ""),
        ({"email": "a@example.com", "password": "short1"}, "password", "at least 8"),
        ({"email": "a@example.com", "password": "x" * 129}, "password", "at most 128"),
        ({"email": "a@example.com", "password": "password123"}, "password", "easy to guess"),
        ({"email": "a@example.com", "password": "aaaaaaaaaa"}, "password", "easy to guess"),
        ({"email": "a@example.com", "password": PASSWORD, "tenant_name": "Bad Name!"}, "tenant_name", "lowercase"),
        ({"email": "a@example.com", "password": PASSWORD, "display_name": "x" * 101}, "display_name", "at most 100"),
    ],
)
async def test_bad_registration_input_names_the_field(identity, request_fields, field, phrase):
    error = await rpc_error(identity.stub.Register(pb.RegisterRequest(**request_fields)))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details().startswith(f"{field}:")
    assert phrase in field_violations(error)[field]
    assert await identity.count_users("a@example.com") == 0


async def test_wrong_password_and_unknown_email_look_the_same(identity):
    email = new_email()
    await identity.stub.Register(pb.RegisterRequest(email=email, password=PASSWORD))
    wrong_password = await rpc_error(
        identity.stub.Login(pb.LoginRequest(email=email, password="not the password"))
    )
    unknown_email = await rpc_error(
        identity.stub.Login(pb.LoginRequest(email=new_email(), password=PASSWORD))
    )
    malformed_email = await rpc_error(
        identity.stub.Login(pb.LoginRequest(email="nonsense", password=PASSWORD))
    )
    for error in (wrong_password, unknown_email, malformed_email):
        assert error.code() == grpc.StatusCode.UNAUTHENTICATED
        assert error.details() == wrong_password.details()


async def test_get_me_without_or_with_a_tampered_token_is_unauthenticated(identity):
    login = await identity.register_and_login(new_email())
    header, payload, signature = login.access_token.split(".")
    flipped = ("A" if signature[0] != "A" else "B") + signature[1:]
    for metadata in ([], bearer(f"{header}.{payload}.{flipped}"), bearer("garbage"),
                     [("authorization", f"Basic {login.access_token}")]):
        error = await rpc_error(identity.stub.GetMe(pb.GetMeRequest(), metadata=metadata))
        assert error.code() == grpc.StatusCode.UNAUTHENTICATED, metadata


async def test_an_unknown_refresh_token_is_unauthenticated(identity):
    error = await rpc_error(
        identity.stub.RefreshToken(pb.RefreshTokenRequest(refresh_token="made-up"))
    )
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_health_reports_serving(identity):
    health = health_pb2_grpc.HealthStub(identity.channel)
    for service in ("", "sagemesh.identity.v1.IdentityService"):
        reply = await health.Check(health_pb2.HealthCheckRequest(service=service))
        assert reply.status == health_pb2.HealthCheckResponse.SERVING



async def test_an_expired_access_token_is_unauthenticated(identity):
    login = await identity.register_and_login(new_email())
    kid, key = load_signing_key(identity.settings.keys_dir, None)
    issuer = AccessTokenIssuer(
        kid, key, identity.settings.jwt_issuer, identity.settings.jwt_audience, ttl_seconds=60
    )
    user = User(
        login.user.id, login.user.tenant_id, login.user.tenant_name, login.user.email,
        login.user.display_name, Role.MEMBER, datetime.now(timezone.utc),
    )
    # Signed by the service's own key, but issued two minutes ago for one.
    expired = issuer.issue(user, "s1", time.time() - 120)
    error = await rpc_error(identity.stub.GetMe(pb.GetMeRequest(), metadata=bearer(expired)))
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "expired" in error.details()
    fresh = issuer.issue(user, "s1", time.time())
    me = await identity.stub.GetMe(pb.GetMeRequest(), metadata=bearer(fresh))
    assert me.user.id == login.user.id


async def test_passwords_are_stored_as_argon2id_hashes(identity):
    email = new_email()
    await identity.stub.Register(pb.RegisterRequest(email=email, password=PASSWORD))
    stored = await identity.password_hash(email)
    assert stored.startswith("$argon2id$")
    assert PASSWORD not in stored


@pytest.fixture
async def one_hash_at_a_time(tmp_path):
    """Identity with a production-weight hash and room for one hash running and one waiting."""
    settings = IdentitySettings(_env_file=None, data_dir=tmp_path, listen_port=0, argon2_time_cost=3,
                                argon2_memory_cost_kib=64 * 1024, argon2_parallelism=1,
                                argon2_max_concurrent_hashes=1, argon2_max_waiting_hashes=1)
    async with identity_serving(settings) as serving:
        yield serving.stub


def password_checks_refused() -> float:
    return REGISTRY.get_sample_value("sagemesh_identity_password_checks_refused_total") or 0.0


async def test_password_hashes_beyond_the_bound_are_refused_at_once_not_queued(one_hash_at_a_time):
    stub = one_hash_at_a_time
    refused_before = password_checks_refused()
    calls = [stub.Register(pb.RegisterRequest(email=new_email(), password=PASSWORD)) for _ in range(6)]
    outcomes = await asyncio.gather(*calls, return_exceptions=True)
    refused = [o for o in outcomes if isinstance(o, grpc.aio.AioRpcError)]
    assert 2 <= 6 - len(refused) < 6, outcomes
    assert all(o.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "retry" in o.details() for o in refused)
    assert password_checks_refused() - refused_before == len(refused)
    assert REGISTRY.get_sample_value("sagemesh_identity_password_checks_in_flight") == 0


async def test_a_registration_that_must_fail_is_refused_before_its_password_is_hashed(one_hash_at_a_time):
    stub = one_hash_at_a_time
    email = new_email()
    await stub.Register(pb.RegisterRequest(email=email, password=PASSWORD))
    await stub.Register(pb.RegisterRequest(email=new_email(), password=PASSWORD, tenant_name="taken-team"))
    # Were these hashed first, six at once would overflow one running and one waiting.
    duplicates = [stub.Register(pb.RegisterRequest(email=email, password=PASSWORD)) for _ in range(3)] + \
        [stub.Register(pb.RegisterRequest(email=new_email(), password=PASSWORD, tenant_name="taken-team"))
         for _ in range(3)]
    refused_before = password_checks_refused()
    outcomes = await asyncio.gather(*duplicates, return_exceptions=True)
    assert {o.code() for o in outcomes} == {grpc.StatusCode.ALREADY_EXISTS}
    assert password_checks_refused() == refused_before


async def test_only_the_named_canary_testers_tokens_say_so(tmp_path):
    settings = IdentitySettings(_env_file=None, data_dir=tmp_path, listen_port=0, argon2_time_cost=1,
                                argon2_memory_cost_kib=8 * 1024, argon2_parallelism=1,
                                canary_testers=["Tess@Example.com"])
    claims = {}
    async with identity_serving(settings) as identity:
        for email in ("tess@example.com", "ursula@example.com"):
            await identity.stub.Register(pb.RegisterRequest(email=email, password=PASSWORD))
            login = await identity.stub.Login(pb.LoginRequest(email=email, password=PASSWORD))
            claims[email] = jwt.decode(login.access_token, options={"verify_signature": False})
    assert claims["tess@example.com"]["canary_tester"] is True
    assert "canary_tester" not in claims["ursula@example.com"]
