"""Query strings are read before authentication: linear in their size, and bounded (issue 19, item 2)."""

from __future__ import annotations

import time

import httpx
import pytest

from gateway.query import QueryLimits
from meshkit.settings import MeshSettings
from tests.gateway.conftest import echo_gateway_app, serve_gateway, stop_gateway

SIXTY_KB_DOTTED = "a." * 30_000 + "b"


async def timed_get(client: httpx.AsyncClient, url: str) -> tuple[httpx.Response, float]:
    started = time.perf_counter()
    reply = await client.get(url)
    return reply, time.perf_counter() - started


async def test_a_60_kb_name_is_refused_in_under_50_ms(gateway):
    await gateway.client.get("/v1/echo/warm")  # the connection is made once, outside the timing
    reply, seconds = await timed_get(gateway.client, f"/v1/echo/abc?{SIXTY_KB_DOTTED}=1")
    assert reply.status_code == 400
    assert reply.json()["code"] == 3 and "limit" in reply.json()["message"]
    assert seconds < 0.05


async def test_field_paths_are_split_in_linear_time(echo_modules, echo_address):
    # Limits raised out of the way: the tokenizer alone must not cost the event loop.
    roomy = QueryLimits(max_bytes=1 << 20, max_parameters=1000, max_name_length=1 << 20, max_name_depth=1 << 20)
    app = echo_gateway_app(echo_modules, {"echo": echo_address}, MeshSettings(_env_file=None), query_limits=roomy)
    server, task, url = await serve_gateway(app)
    try:
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            await client.get("/v1/echo/warm")
            reply, seconds = await timed_get(client, f"/v1/echo/abc?{SIXTY_KB_DOTTED}=1&labels[a.b.c]=x")
            assert reply.status_code == 200  # an unknown name is ignored
            assert reply.json()["request"]["labels"] == {"a.b.c": "x"}  # a map key keeps its dots
            assert seconds < 0.05
    finally:
        await stop_gateway(server, task)


@pytest.mark.parametrize(("query", "phrase"), [
    pytest.param("name=" + "x" * 9000, "8192-byte limit", id="query-too-long"),
    pytest.param("&".join(f"p{n}=1" for n in range(101)), "more than 100 query parameters", id="too-many"),
    pytest.param("n" * 257 + "=1", "256-character limit", id="name-too-long"),
    pytest.param("a.b.c.d.e.f.g.h.i=1", "deeper than 8", id="name-too-deep"),
    pytest.param("name=one&name=two", "'name' given more than once", id="single-field-twice"),
    pytest.param("nested.label=one&nested.label=two", "'nested.label' given more than once", id="nested-twice"),
    pytest.param("labels[k]=one&labels[k]=two", "given more than once", id="map-key-twice"),
])
async def test_queries_over_the_limits_are_400_saying_which(gateway, query, phrase):
    reply = await gateway.client.get(f"/v1/echo/abc?{query}")
    assert reply.status_code == 400, reply.text
    assert reply.json()["code"] == 3
    assert phrase in reply.json()["message"]


async def test_queries_within_the_limits_are_served(gateway):
    tags = "&".join(f"tags=t{n}" for n in range(20))
    reply = await gateway.client.get(f"/v1/echo/abc?{tags}&labels[a]=1&labels[b]=2&nested.label=x&name=n")
    assert reply.status_code == 200, reply.text
    request = reply.json()["request"]
    assert request["tags"] == [f"t{n}" for n in range(20)]  # a repeated field takes repeated parameters
    assert request["labels"] == {"a": "1", "b": "2"}
    assert request["nested"]["label"] == "x" and request["name"] == "n"
