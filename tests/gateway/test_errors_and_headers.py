"""Status mapping, gateway-made errors, and headers in both directions."""

from __future__ import annotations

import re
import time

import grpc
import httpx
import pytest

from meshkit.server import token_verifier
from meshkit.settings import MeshSettings
from tests.conftest import free_port
from tests.gateway.conftest import MAX_BODY_BYTES, echo_gateway_app, serve_gateway, stop_gateway

# grpc-gateway's HTTPStatusFromCode, code by code.
STATUS_TABLE = [
    (grpc.StatusCode.CANCELLED, 499),
    (grpc.StatusCode.UNKNOWN, 500),
    (grpc.StatusCode.INVALID_ARGUMENT, 400),
    (grpc.StatusCode.DEADLINE_EXCEEDED, 504),
    (grpc.StatusCode.NOT_FOUND, 404),
    (grpc.StatusCode.ALREADY_EXISTS, 409),
    (grpc.StatusCode.PERMISSION_DENIED, 403),
    (grpc.StatusCode.UNAUTHENTICATED, 401),
    (grpc.StatusCode.RESOURCE_EXHAUSTED, 429),
    (grpc.StatusCode.FAILED_PRECONDITION, 400),
    (grpc.StatusCode.ABORTED, 409),
    (grpc.StatusCode.OUT_OF_RANGE, 400),
    (grpc.StatusCode.UNIMPLEMENTED, 501),
    (grpc.StatusCode.INTERNAL, 500),
    (grpc.StatusCode.UNAVAILABLE, 503),
    (grpc.StatusCode.DATA_LOSS, 500),
]


@pytest.mark.parametrize(("code", "http_status"), STATUS_TABLE, ids=lambda v: getattr(v, "name", str(v)))
async def test_status_codes_map_like_grpc_gateway(gateway, code, http_status):
    reply = await gateway.client.post("/v1/fail", json={"code": code.value[0], "message": f"it was {code.name}"})
    assert reply.status_code == http_status
    assert reply.headers["content-type"] == "application/json"
    assert reply.json() == {"code": code.value[0], "message": f"it was {code.name}", "details": []}
    if http_status == 401:
        assert reply.headers["www-authenticate"] == "Bearer"


async def test_error_details_are_rendered(gateway):
    reply = await gateway.client.post("/v1/fail", json={"code": 3, "message": "title: too long", "field": "title"})
    assert reply.status_code == 400
    assert reply.json()["details"] == [{
        "@type": "type.googleapis.com/google.rpc.BadRequest",
        "fieldViolations": [{"field": "title", "description": "bad"}],
    }]


GATEWAY_ERRORS = [
    pytest.param("GET", "/v1/nowhere", {}, None, 404, "Not Found", id="unknown-route"),
    pytest.param("POST", "/v1/echo/abc", {}, b'{"name": ', 400, "malformed JSON", id="malformed-json"),
    pytest.param("POST", "/v1/echo/abc", {}, b'{"small": "many"}', 400, "small", id="wrong-type"),
    pytest.param("POST", "/v1/echo/abc", {}, b'["not", "an", "object"]', 400, "JSON object", id="not-an-object"),
    pytest.param("POST", "/v1/echo/abc", {}, b'{"name": "\xff\xfe"}', 400, "UTF-8", id="invalid-utf8"),
    pytest.param("POST", "/v1/echo/abc", {}, b"[" * 5000 + b"]" * 5000, 400, "malformed JSON", id="deeply-nested"),
    pytest.param("GET", "/v1/echo/abc", {"small": "x"}, None, 400, "small", id="bad-query-value"),
    pytest.param("GET", "/v1/echo/abc", {"flag": "maybe"}, None, 400, "boolean", id="bad-boolean"),
    # Unknown fields are ignored, an unknown enum value is not: a misspelt mode must not become the default one.
    pytest.param("POST", "/v1/echo/abc", {}, b'{"color": "COLOR_REED", "unknownField": 1}', 400, "COLOR_REED",
                 id="unknown-enum-value"),
    pytest.param("POST", "/v1/echo/abc", {}, b'{"nested": {"label": "x", "count": "lots"}}', 400, "count",
                 id="wrong-type-nested"),
    pytest.param("GET", "/v1/echo/abc", {"color": "PURPLE"}, None, 400, "PURPLE", id="unknown-enum-in-query"),
    pytest.param("POST", "/v1/echo/abc", {}, b'{"name": "' + b"x" * (MAX_BODY_BYTES + 1) + b'"}', 413, "limit", id="body-too-large"),
]


@pytest.mark.parametrize(("method", "path", "params", "body", "status", "phrase"), GATEWAY_ERRORS)
async def test_gateway_errors(gateway, method, path, params, body, status, phrase):
    reply = await gateway.client.request(
        method, path, params=params, content=body, headers={"content-type": "application/json"}
    )
    assert reply.status_code == status, reply.text
    assert phrase in reply.json()["message"]
    assert reply.json()["code"] in (3, 5, 8)


async def test_wrong_method_is_405_with_allow(gateway):
    reply = await gateway.client.patch("/v1/echo/abc", json={})
    assert reply.status_code == 405
    assert reply.headers["allow"] == "DELETE, GET, POST"


async def test_request_headers_become_metadata(gateway):
    reply = await gateway.client.get(
        "/v1/echo/abc",
        headers={"Authorization": "Bearer t0ken", "Grpc-Metadata-X-Correlation-Id": "acme-7",
                 "X-Request-Id": "req-1", "X-Canary": "true"},
    )
    assert reply.status_code == 200, reply.text
    metadata = reply.json()["metadata"]
    assert "x-canary" not in metadata  # only a verified canary tester's request goes to canaries
    assert metadata["authorization"] == "Bearer t0ken"
    assert metadata["x-correlation-id"] == "acme-7"  # on SAGEMESH_FORWARDED_METADATA by default
    assert metadata["x-request-id"] == "req-1"
    assert metadata["x-forwarded-for"] == "127.0.0.1"
    assert reply.headers["x-request-id"] == "req-1"


async def test_x_canary_reaches_the_services_only_from_a_verified_canary_tester(
        echo_modules, echo_address, keys_dir, tokens):
    settings = MeshSettings(_env_file=None, jwt_keys_dir=keys_dir)
    app = echo_gateway_app(echo_modules, {"echo": echo_address}, settings, verifier=token_verifier(settings))
    server, task, url = await serve_gateway(app)
    tester, user = (dict(tokens.metadata("acme", canary_tester=is_tester))["authorization"]
                    for is_tester in (True, False))
    try:
        async with httpx.AsyncClient(base_url=url, timeout=10) as client:
            async def forwarded(authorization: str) -> str | None:
                reply = await client.get("/v1/echo/abc", headers={"Authorization": authorization, "X-Canary": "true"})
                assert reply.status_code == 200, reply.text
                return reply.json()["metadata"].get("x-canary")

            assert await forwarded(tester) == "true"  # Istio routes every hop of it to the canaries
            assert await forwarded(user) is None
            assert await forwarded(tester[:-4] + "AAAA") is None  # a forged signature
    finally:
        await stop_gateway(server, task)


async def test_a_request_id_is_made_when_missing_and_returned(gateway):
    reply = await gateway.client.get("/v1/echo/abc")
    request_id = reply.headers["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", request_id)
    assert reply.json()["metadata"]["x-request-id"] == request_id


async def test_response_metadata_comes_back_as_headers(gateway):
    reply = await gateway.client.get("/v1/echo/abc")
    assert reply.headers["grpc-metadata-x-echo"] == "yes"
    assert reply.headers["grpc-trailer-x-trailer"] == "done"


async def test_grpc_timeout_sets_the_deadline_and_a_default_applies(gateway):
    timed = (await gateway.client.get("/v1/echo/abc", headers={"Grpc-Timeout": "1500m"})).json()
    assert 0 < timed["remainingSeconds"] <= 1.51
    default = (await gateway.client.get("/v1/echo/abc")).json()
    assert 1.5 < default["remainingSeconds"] <= 7.01  # the gateway's default deadline
    bad = await gateway.client.get("/v1/echo/abc", headers={"Grpc-Timeout": "soon"})
    assert bad.status_code == 400 and "Grpc-Timeout" in bad.json()["message"]


async def test_a_backend_that_is_down_gives_503_quickly(echo_modules):
    dead = f"127.0.0.1:{free_port()}"
    settings = MeshSettings(_env_file=None, retry_initial_backoff_seconds=0.01)
    server, task, url = await serve_gateway(echo_gateway_app(echo_modules, {"echo": dead}, settings))
    try:
        async with httpx.AsyncClient(base_url=url, timeout=10) as client:
            started = time.monotonic()
            reply = await client.get("/v1/echo/abc")
            assert time.monotonic() - started < 3
            assert reply.status_code == 503
            assert reply.json()["message"] == "the echo service is unavailable; try again shortly"
            assert (await client.get("/readyz")).status_code == 200  # the gateway itself is ready
            assert (await client.get("/healthz")).status_code == 200
    finally:
        await stop_gateway(server, task)


async def test_the_health_report_names_what_fails_and_the_gateway_itself(gateway):
    reply = await gateway.client.get("/api/v1/health")
    assert reply.status_code == 503
    assert reply.json() == {"status": "NOT_SERVING", "services": {
        "gateway": {"status": "SERVING", "version": ""},  # this test's Gateway is given no version
        "echo": {"status": "UNIMPLEMENTED", "version": ""}}}


@pytest.mark.parametrize(
    "headers",
    [{"authorization": b"Bearer caf\xe9"}, {"grpc-metadata-x-correlation-id": b"\xe9t\xe9"}],
    ids=["authorization", "grpc-metadata"],
)
async def test_header_values_grpc_cannot_carry_are_400_not_500(gateway, headers):
    reply = await gateway.client.get("/v1/echo/abc", headers=headers)
    assert reply.status_code == 400
    assert "cannot carry" in reply.json()["message"]


async def test_an_unusable_request_id_is_replaced(gateway):
    reply = await gateway.client.get("/v1/echo/abc", headers={"x-request-id": b"caf\xe9"})
    assert reply.status_code == 200
    assert re.fullmatch(r"[0-9a-f]{32}", reply.headers["x-request-id"])
