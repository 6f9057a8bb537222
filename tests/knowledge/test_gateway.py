"""The README's walk-through over REST: create a base, upload a PDF and a
Markdown file as multipart, watch them reach indexed, find their content and
ask a question about it."""

from __future__ import annotations

import json

import httpx
import pytest

from gateway.server import build
from gateway.settings import GatewaySettings
from tests.gateway.conftest import serve_gateway, stop_gateway
from tests.knowledge.test_service import MARKDOWN, pdf_bytes

TENANT = "rest-tenant"


@pytest.fixture
async def rest(knowledge, rag_engine):
    settings = GatewaySettings(_env_file=None, knowledge_addr=knowledge.address, rag_engine_addr=rag_engine.address,
                               gateway_services=["knowledge", "rag_engine"])
    server, task, url = await serve_gateway(build(settings))
    headers = dict(knowledge.auth(TENANT))
    headers["Authorization"] = headers.pop("authorization")
    async with httpx.AsyncClient(base_url=url, timeout=60, headers=headers) as client:
        yield client
    await stop_gateway(server, task)


async def test_create_upload_watch_and_retrieve_over_rest(rest):
    created = await rest.post("/api/v1/knowledge/bases", json={"name": "rest-handbook", "displayName": "Handbook"})
    assert created.status_code == 200, created.text
    kb_id = created.json()["id"]

    pdf = pdf_bytes(["Expense policy.", "Meals on business trips are reimbursed up to 45 euros a day."])
    documents = {}
    for filename, content, mime in [("expenses.pdf", pdf, "application/pdf"),
                                    ("travel.md", MARKDOWN, "text/markdown")]:
        uploaded = await rest.post(f"/api/v1/knowledge/bases/{kb_id}/documents", data={"metadata[team]": "finance"},
                                   files={"file": (filename, content, mime)})
        assert uploaded.status_code == 200, uploaded.text
        assert uploaded.json()["status"] == "DOCUMENT_STATUS_PENDING"
        documents[filename] = uploaded.json()["documentId"]

    for document_id in documents.values():
        async with rest.stream("GET", f"/api/v1/knowledge/documents/{document_id}/status:watch") as stream:
            statuses = [json.loads(line)["result"]["status"] async for line in stream.aiter_lines() if line]
        assert statuses[-1]["status"] == "DOCUMENT_STATUS_INDEXED", statuses[-1]
        assert statuses[-1]["chunkCount"] == statuses[-1]["vectorCount"] >= 1

    listed = (await rest.get(f"/api/v1/knowledge/bases/{kb_id}/documents")).json()["documents"]
    assert {d["filename"] for d in listed} == set(documents)
    assert all(d["metadata"] == {"team": "finance"} and d["contentType"] in ("application/pdf", "text/markdown")
               for d in listed)

    retrieved = await rest.post("/api/v1/rag/retrieve", json={"query": "how much are meals reimbursed per day",
                                                              "kbIds": [kb_id], "topK": 3})
    assert retrieved.status_code == 200, retrieved.text
    top = retrieved.json()["results"][0]
    assert top["documentId"] == documents["expenses.pdf"] and "45 euros" in top["content"]
    assert top["page"] == 2 and top["metadata"] == {"team": "finance"}

    asked = await rest.post("/api/v1/rag/query", json={"query": "How much are meals reimbursed per day?",
                                                       "kbIds": [kb_id]})
    assert asked.status_code == 200, asked.text
    answer = asked.json()
    assert "45 euros a day. [1]" in answer["answer"]
    assert answer["sources"][0]["documentId"] == documents["expenses.pdf"] and answer["sources"][0]["page"] == 2
    async with rest.stream("POST", "/api/v1/rag/query:stream", json={"query": "Which class may train travellers book?",
                                                                      "kbIds": [kb_id]}) as stream:
        events = [json.loads(line)["result"] async for line in stream.aiter_lines() if line]
    assert "first class" in "".join(e.get("answerDelta", "") for e in events)
    assert "first class" in events[-1]["completed"]["answer"]

    refused = await rest.post(f"/api/v1/knowledge/bases/{kb_id}/documents",
                              files={"file": ("deck.pptx", b"PK\x03\x04", "application/octet-stream")})
    assert refused.status_code == 400 and ".pdf" in refused.json()["message"]
