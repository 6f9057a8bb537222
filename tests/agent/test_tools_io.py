"""The tools that reach out: knowledge_base against a real rag_engine in the
caller's tenant, http_get against a local web server, allow-list and all."""

from __future__ import annotations

import time
from urllib.parse import urlsplit

import pytest
from starlette.applications import Starlette
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse
from starlette.routing import Route

from meshkit.auth import Principal, set_principal
from meshkit.channels import create_channel
from meshkit.settings import MeshSettings
from sagemesh.rag_engine.v1 import rag_engine_pb2 as rag_pb
from services.agent.retriever_grpc import GrpcRetriever
from services.agent.tools import ToolContext
from services.agent.tools.http_get import MAX_BODY_BYTES, http_get_tool
from services.agent.tools.knowledge_base import knowledge_base_tool
from services.agent.tools.registry import ToolCallError, ToolRegistry
from tests.conftest import serving_asgi
from tests.fixtures.mesh import rag_engine_serving


def as_user_of(tokens, tenant: str) -> None:
    """Makes this task act for a user of `tenant`, as a request handler would."""
    token = tokens.metadata(tenant)[0][1].removeprefix("Bearer ")
    set_principal(Principal(f"user-{tenant}", tenant, "u@example.com", "member", "s1", time.time() + 600, token))


async def test_knowledge_base_searches_the_callers_tenant_only(tmp_path, keys_dir, tokens):
    async with rag_engine_serving(tmp_path, keys_dir, tokens) as rag:
        for tenant, text in [("acme", "Acme's revenue grew 12 percent in the third quarter."),
                             ("globex", "Globex revenue grew 40 percent in the third quarter.")]:
            await rag.stub.IndexChunks(rag_pb.IndexChunksRequest(
                tenant_id=tenant, kb_id="kb-reports", document_id=f"d-{tenant}",
                chunks=[rag_pb.Chunk(chunk_id="c1", title="Q3 report", text=text)]))
        async with create_channel(rag.address, MeshSettings(_env_file=None)) as channel:
            registry = ToolRegistry([knowledge_base_tool(GrpcRetriever(channel))])
            as_user_of(tokens, "acme")
            try:
                found = await registry.call("knowledge_base", {"query": "revenue growth third quarter"},
                                            ToolContext(kb_ids=("kb-reports",)))
                elsewhere = await registry.call("knowledge_base", {"query": "revenue growth"},
                                                ToolContext(kb_ids=("kb-other",)))
            finally:
                set_principal(None)
    assert [r["document_id"] for r in found["results"]] == ["d-acme"]
    assert "12 percent" in found["results"][0]["content"] and found["results"][0]["title"] == "Q3 report"
    assert elsewhere["results"] == []


def web_app() -> Starlette:
    async def page(request):
        return HTMLResponse("<html><head><script>var x = 'hidden';</script></head>"
                            "<body><h1>Rates</h1><p>The EUR/CHF rate is 0.94.</p></body></html>")

    return Starlette(routes=[
        Route("/rates", page),
        Route("/moved", lambda request: RedirectResponse("/rates")),
        Route("/away", lambda request: RedirectResponse("http://example.com/")),
        Route("/huge", lambda request: PlainTextResponse("x" * (MAX_BODY_BYTES * 2))),
    ])


async def test_http_get_fetches_allowed_hosts_and_nothing_else():
    async with serving_asgi(web_app()) as url:
        # The local server is reachable only because the test allows its network (test_http_get.py refuses it).
        registry = ToolRegistry([http_get_tool(["127.0.0.1"], [urlsplit(url).port], ["127.0.0.1/32"])])
        page = await registry.call("http_get", {"url": f"{url}/moved"})
        assert page["status"] == 200 and page["url"] == f"{url}/rates"
        assert page["text"] == "Rates The EUR/CHF rate is 0.94." and not page["truncated"]
        huge = await registry.call("http_get", {"url": f"{url}/huge"})
        assert huge["truncated"] and len(huge["text"]) <= MAX_BODY_BYTES
        for target, reason in [(f"{url}/away", "example.com is not on this server's allow-list"),
                               ("http://localhost:1/", "localhost is not on"),
                               ("file:///etc/passwd", "not an http(s) URL")]:
            with pytest.raises(ToolCallError) as refused:
                await registry.call("http_get", {"url": target})
            assert refused.value.kind == "refused" and reason in refused.value.message


async def test_http_get_is_off_without_an_allow_list():
    registry = ToolRegistry([http_get_tool([], [80, 443])])
    with pytest.raises(ToolCallError) as refused:
        await registry.call("http_get", {"url": "http://127.0.0.1/"})
    assert refused.value.kind == "disabled"
