"""Client headers reach backends only from an allow-list (issue 19, item 5)."""

from __future__ import annotations

import uuid

import pytest
from pydantic import ValidationError

from gateway.settings import GatewaySettings
from tests.gateway.conftest import gateway_client

PASSWORD = "correct horse battery staple"


@pytest.fixture
async def identity_gateway(identity):
    async with gateway_client(identity_addr=identity.server.address, gateway_services=["identity"]) as client:
        yield client


async def signed_in(client) -> tuple[str, str]:
    email = f"meta-{uuid.uuid4().hex[:8]}@example.com"
    assert (await client.post("/api/v1/auth/register", json={"email": email, "password": PASSWORD})).status_code == 200
    login = await client.post("/api/v1/auth/login", json={"email": email, "password": PASSWORD})
    return email, f"Bearer {login.json()['accessToken']}"


async def test_a_second_authorization_never_answers_as_its_user(identity_gateway):
    client = identity_gateway
    (first_email, first), (second_email, second) = await signed_in(client), await signed_in(client)
    smuggled = await client.get("/api/v1/users/me", headers={"Authorization": first,
                                                             "Grpc-Metadata-Authorization": second})
    assert smuggled.status_code == 400
    assert "grpc-metadata-authorization" in smuggled.json()["message"]
    assert second_email not in smuggled.text
    doubled = await client.get("/api/v1/users/me", headers=[("Authorization", first), ("Authorization", second)])
    assert doubled.status_code == 400 and "more than one authorization header" in doubled.json()["message"]
    assert second_email not in doubled.text
    alone = await client.get("/api/v1/users/me", headers={"Authorization": first})
    assert alone.status_code == 200 and alone.json()["email"] == first_email


@pytest.mark.parametrize("key", ["authorization", "x-forwarded-for", "x-envoy-retry-on", "x-envoy-upstream-rq-timeout-ms",
                                 "x-canary", "x-request-id", "grpc-timeout", "tenant-hint"])
async def test_a_key_off_the_allow_list_is_400_naming_it(gateway, key):
    reply = await gateway.client.get("/v1/echo/abc", headers={f"Grpc-Metadata-{key}": "1"})
    assert reply.status_code == 400, reply.text
    assert reply.json()["code"] == 3
    assert f"grpc-metadata-{key}" in reply.json()["message"]


async def test_allowed_keys_are_forwarded(gateway):
    reply = await gateway.client.get("/v1/echo/abc", headers={"Grpc-Metadata-X-Client-Version": "cli/1.2"})
    assert reply.status_code == 200
    assert reply.json()["metadata"]["x-client-version"] == "cli/1.2"


@pytest.mark.parametrize("key", ["authorization", "x-forwarded-for", "x-envoy-max-retries", "x-canary", "grpc-status"])
def test_the_allow_list_cannot_name_a_key_the_mesh_trusts(key):
    with pytest.raises(ValidationError, match=key):
        GatewaySettings(_env_file=None, forwarded_metadata=["x-correlation-id", key])
