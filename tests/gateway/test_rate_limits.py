"""The gateway's rate limits: per user and tenant from a verified token, per
address without one, per account and address for logins, per address for
registrations; 429 with
Retry-After; shared through Redis by every replica; and a Redis outage lets
requests through rather than refusing them all."""

from __future__ import annotations

import uuid
from contextlib import asynccontextmanager

import httpx
import pytest
import redis.asyncio as redis

from gateway.rate_limits import RateLimitConfig, RateLimiter, storage_for
from meshkit.server import token_verifier
from meshkit.settings import MeshSettings
from tests.conftest import free_port
from tests.gateway.conftest import echo_gateway_app, gateway_client, serve_gateway, stop_gateway

REDIS_URL = "redis://127.0.0.1:6379/0"


@asynccontextmanager
async def limited_gateway(echo_modules, echo_address, keys_dir, config: RateLimitConfig, redis_url: str | None = None):
    settings = MeshSettings(_env_file=None, jwt_keys_dir=keys_dir)
    app = echo_gateway_app(echo_modules, {"echo": echo_address}, settings)
    app.rate_limiter = RateLimiter(config, storage_for(redis_url), token_verifier(settings))
    server, task, url = await serve_gateway(app)
    try:
        async with httpx.AsyncClient(base_url=url, timeout=10) as client:
            yield client
    finally:
        await stop_gateway(server, task)


def bearer(tokens, tenant: str, user_id: str) -> dict[str, str]:
    return {"Authorization": dict(tokens.metadata(tenant, user_id))["authorization"]}


async def statuses(client: httpx.AsyncClient, count: int, headers: dict[str, str] | None = None) -> list[int]:
    return [(await client.get("/v1/echo/x", headers=headers or {})).status_code for _ in range(count)]


async def test_each_user_has_a_limit_and_their_tenant_one_above_it(echo_modules, echo_address, keys_dir, tokens):
    config = RateLimitConfig(per_user="3/minute", per_tenant="5/minute", per_address="100/minute")
    async with limited_gateway(echo_modules, echo_address, keys_dir, config) as client:
        ann, bob, cy = (bearer(tokens, "acme", name) for name in ("ann", "bob", "cy"))
        assert await statuses(client, 3, ann) == [200, 200, 200]
        refused = await client.get("/v1/echo/x", headers=ann)
        assert refused.status_code == 429
        assert refused.json()["code"] == 8 and "3 per 1 minute" in refused.json()["message"]
        assert 1 <= int(refused.headers["retry-after"]) <= 60
        # Bob has his own limit, but shares the tenant's: 3 + 2 = 5 for acme.
        assert await statuses(client, 3, bob) == [200, 200, 429]
        assert await statuses(client, 1, cy) == [429]
        assert await statuses(client, 1, bearer(tokens, "globex", "dee")) == [200]


async def test_requests_without_a_valid_token_count_against_their_address(echo_modules, echo_address, keys_dir):
    config = RateLimitConfig(per_address="2/minute")
    async with limited_gateway(echo_modules, echo_address, keys_dir, config) as client:
        forged = {"Authorization": "Bearer eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0."}
        assert await statuses(client, 1) + await statuses(client, 2, forged) == [200, 200, 429]


async def test_replicas_share_their_counts_through_redis(echo_modules, echo_address, keys_dir, tokens):
    config = RateLimitConfig(per_user="3/minute")
    user = bearer(tokens, "acme", f"user-{uuid.uuid4().hex}")
    async with limited_gateway(echo_modules, echo_address, keys_dir, config, REDIS_URL) as first, \
            limited_gateway(echo_modules, echo_address, keys_dir, config, REDIS_URL) as second:
        assert await statuses(first, 2, user) + await statuses(second, 1, user) == [200, 200, 200]
        assert await statuses(second, 1, user) + await statuses(first, 1, user) == [429, 429]
    client = redis.from_url(REDIS_URL)
    assert await client.keys("sagemesh-ratelimit*"), "the counts were kept in Redis"
    await client.aclose()


async def test_a_redis_outage_lets_requests_through(echo_modules, echo_address, keys_dir, tokens):
    config = RateLimitConfig(per_user="1/minute")
    down = f"redis://127.0.0.1:{free_port()}/0"
    async with limited_gateway(echo_modules, echo_address, keys_dir, config, down) as client:
        assert await statuses(client, 3, bearer(tokens, "acme", "eve")) == [200, 200, 200]


@pytest.fixture
async def identity_gateway(identity):
    async with gateway_client(identity_addr=identity.server.address, gateway_services=["identity"],
                              jwt_keys_dir=identity.settings.keys_dir, login_limit_per_account="3/minute",
                              login_limit_per_address="5/minute",
                              registration_limit_per_address="3/minute") as client:
        yield client


async def test_logins_are_limited_per_account_and_per_address(identity_gateway):
    client = identity_gateway
    email, other = (f"{name}-{uuid.uuid4().hex[:8]}@example.com" for name in ("fay", "gil"))
    password = "correct horse battery staple"
    for address in (email, other):
        assert (await client.post("/api/v1/auth/register", json={"email": address, "password": password})).is_success
    guesses = [(await client.post("/api/v1/auth/login", json={"email": email, "password": f"guess {i}"})).status_code
               for i in range(3)]
    assert guesses == [401, 401, 401]
    # The account is closed to logins for the window, even with the right password.
    refused = await client.post("/api/v1/auth/login", json={"email": email.upper(), "password": password})
    assert refused.status_code == 429 and int(refused.headers["retry-after"]) >= 1
    # Another account from the same address may log in, until the address's own limit.
    assert (await client.post("/api/v1/auth/login", json={"email": other, "password": password})).status_code == 200
    assert (await client.post("/api/v1/auth/login", json={"email": other, "password": password})).status_code == 429


async def test_registrations_are_limited_per_address(identity_gateway):
    emails = [f"reg-{i}-{uuid.uuid4().hex[:8]}@example.com" for i in range(4)]
    answers = [await identity_gateway.post("/api/v1/auth/register", json={
        "email": email, "password": "correct horse battery staple"}) for email in emails]
    assert [a.status_code for a in answers] == [200, 200, 200, 429]
    assert int(answers[-1].headers["retry-after"]) >= 1 and "3 per 1 minute" in answers[-1].json()["message"]
