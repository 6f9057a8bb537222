"""The OpenAPI document, the docs UI, and identity over REST end to end."""

from __future__ import annotations

import importlib.metadata
import uuid

import pytest
from google.api import annotations_pb2
from openapi_spec_validator import validate

from gateway.openapi import document
from gateway.server import service_descriptor
from meshkit.topology import SERVICES
from tests.gateway.conftest import gateway_client

PASSWORD = "correct horse battery staple"


def test_the_openapi_document_is_valid_and_lists_every_annotated_rpc():
    services = [service_descriptor(name) for name in SERVICES]
    spec = document(services)
    validate(spec)
    operations = {
        operation["operationId"]: (verb.upper(), path)
        for path, item in spec["paths"].items() for verb, operation in item.items()
    }
    for service in services:
        for method in service.methods:
            options = method.GetOptions()
            if not options.HasExtension(annotations_pb2.http):
                assert f"{service.name}_{method.name}" not in operations
                continue
            rule = options.Extensions[annotations_pb2.http]
            verb = rule.WhichOneof("pattern")
            expected_path = getattr(rule, verb).replace("{metadata.kb_id}", "{kb_id}")
            assert operations[f"{service.name}_{method.name}"] == (verb.upper(), expected_path)


def test_upload_is_described_as_multipart_and_public_rpcs_need_no_token():
    spec = document([service_descriptor(name) for name in SERVICES])
    upload = spec["paths"]["/api/v1/knowledge/bases/{kb_id}/documents"]["post"]
    form = upload["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert form["properties"]["file"] == {"type": "string", "format": "binary"}
    assert "kbId" not in form["properties"]  # it comes from the path
    assert "security" not in spec["paths"]["/api/v1/auth/login"]["post"]
    assert spec["paths"]["/api/v1/users/me"]["get"]["security"] == [{"bearerAuth": []}]


@pytest.fixture
async def identity_gateway(identity):
    async with gateway_client(identity_addr=identity.server.address, gateway_services=["identity"]) as client:
        yield client


async def test_register_login_me_and_refresh_over_rest(identity_gateway):
    client = identity_gateway
    email = f"rest-{uuid.uuid4().hex[:8]}@example.com"
    registered = await client.post("/api/v1/auth/register",
                                   json={"email": email, "password": PASSWORD, "displayName": "Rae"})
    assert registered.status_code == 200, registered.text
    assert registered.json()["user"]["email"] == email

    login = await client.post("/api/v1/auth/login", json={"email": email, "password": PASSWORD})
    assert login.status_code == 200
    tokens = login.json()
    assert {"accessToken", "refreshToken", "expiresIn", "tokenType", "user"} <= tokens.keys()

    me = await client.get("/api/v1/users/me", headers={"Authorization": f"Bearer {tokens['accessToken']}"})
    assert me.status_code == 200
    assert me.json()["email"] == email and me.json()["displayName"] == "Rae"

    refreshed = await client.post("/api/v1/auth/refresh", json={"refresh_token": tokens["refreshToken"]})
    assert refreshed.status_code == 200 and refreshed.json()["refreshToken"] != tokens["refreshToken"]

    duplicate = await client.post("/api/v1/auth/register", json={"email": email, "password": PASSWORD})
    assert duplicate.status_code == 409
    wrong = await client.post("/api/v1/auth/login", json={"email": email, "password": "nope nope nope"})
    assert wrong.status_code == 401 and wrong.headers["www-authenticate"] == "Bearer"
    anonymous = await client.get("/api/v1/users/me")
    assert anonymous.status_code == 401
    invalid = await client.post("/api/v1/auth/register", json={"email": "x", "password": PASSWORD})
    assert invalid.status_code == 400
    assert invalid.json()["details"][0]["fieldViolations"][0]["field"] == "email"


async def test_readyz_health_docs_and_openapi_are_served(identity_gateway):
    client = identity_gateway
    ready = await client.get("/readyz")
    assert ready.status_code == 200 and ready.json() == {"status": "ready"}
    health = await client.get("/api/v1/health")
    version = importlib.metadata.version("sagemesh")
    assert health.status_code == 200 and health.json() == {"status": "SERVING", "services": {
        "gateway": {"status": "SERVING", "version": version}, "identity": {"status": "SERVING", "version": version}}}
    spec = (await client.get("/openapi.json")).json()
    assert "/api/v1/auth/login" in spec["paths"]
    assert "/api/v1/conversations" not in spec["paths"]  # only the services this gateway exposes
    docs = await client.get("/docs")
    assert docs.status_code == 200 and "swagger-ui-bundle.js" in docs.text
    bundle = await client.get("/docs/swagger-ui-bundle.js")
    assert bundle.status_code == 200 and len(bundle.content) > 100_000
