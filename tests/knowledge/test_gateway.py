"""The README's walk-through over REST: create a base, upload a PDF and a
Markdown file as multipart, watch them reach indexed, find their content and
ask a question about it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from gateway.server import build
from gateway.settings import GatewaySettings
from tests.conftest import free_port
from tests.gateway.conftest import serve_gateway, stop_gateway
from tests.gateway.test_upload_limits import send_head_and_stall
from tests.knowledge.conftest import ROOT, knowledge_serving, knowledge_settings
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
                              files={"file": ("deck.key", b"PK\x03\x04", "application/octet-stream")})
    assert refused.status_code == 400 and ".pdf" in refused.json()["message"]


def kept_files(knowledge) -> set[Path]:
    """Every file the knowledge service keeps for uploads, staged ones included."""
    return {path for path in knowledge.settings.blob_root.rglob("*") if path.is_file()}


@pytest.fixture
async def strict_rest(knowledge, rag_engine):
    """A gateway whose upload limits are below the knowledge service's (1 MiB), so that it is the one refusing."""
    settings = GatewaySettings(_env_file=None, knowledge_addr=knowledge.address, rag_engine_addr=rag_engine.address,
                               gateway_services=["knowledge", "rag_engine"], max_upload_bytes=256 * 1024,
                               max_upload_fields=4, stream_idle_timeout_seconds=1.0)
    server, task, url = await serve_gateway(build(settings))
    headers = dict(knowledge.auth(TENANT))
    headers["Authorization"] = headers.pop("authorization")
    async with httpx.AsyncClient(base_url=url, timeout=60, headers=headers) as client:
        yield client, url, headers
    await stop_gateway(server, task)


async def test_uploads_the_gateway_refuses_leave_nothing_behind(strict_rest, knowledge):
    client, url, headers = strict_rest
    kb_id = (await client.post("/api/v1/knowledge/bases", json={"name": "refused-uploads"})).json()["id"]
    path = f"/api/v1/knowledge/bases/{kb_id}/documents"
    before = kept_files(knowledge)

    async def body():  # no Content-Length: refused as the bytes arrive, after the metadata went to the service
        yield b'--XyZ\r\nContent-Disposition: form-data; name="file"; filename="big.md"\r\n\r\n'
        for _ in range(8):
            yield b"# words\n" * 8192
        yield b"\r\n--XyZ--\r\n"
    too_large = await client.post(path, content=body(), headers={"content-type": "multipart/form-data; boundary=XyZ"})
    assert too_large.status_code == 413 and "262144-byte limit" in too_large.json()["message"]

    many_fields = await client.post(path, data={f"metadata[k{i}]": "v" for i in range(5)},
                                    files={"file": ("a.md", MARKDOWN, "text/markdown")})
    assert many_fields.status_code == 413 and "more than 4 form fields" in many_fields.json()["message"]

    stalled = b'--XyZ\r\nContent-Disposition: form-data; name="file"; filename="a.md"\r\n\r\n# half a file'
    status_line, refusal, _ = await send_head_and_stall(url, path, stalled, {"authorization": headers["Authorization"]})
    assert status_line.startswith(b"HTTP/1.1 408") and "no bytes of the upload" in refusal["message"]

    listed = await client.get(f"/api/v1/knowledge/bases/{kb_id}/documents")
    assert listed.status_code == 200 and listed.json()["documents"] == []
    deadline = time.monotonic() + 5  # a cancelled upload's staged file goes as the service sees the cancellation
    while kept_files(knowledge) != before and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    assert kept_files(knowledge) == before


def resident_kib(pid: int, field: str) -> int:
    """VmRSS (resident now) or VmHWM (the most it has been) of a process, in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} for {pid}")


async def test_a_100_mb_upload_raises_the_gateways_resident_memory_by_less_than_64_mb(
        tmp_path, keys_dir, tokens, rag_engine):
    limit = 128 * 1024 * 1024
    # Ingestion off: the test is about the gateway; a 100 MB document would keep the service busy for long.
    settings = knowledge_settings(tmp_path / "knowledge", keys_dir, rag_engine.address, max_upload_bytes=limit,
                                  ingest_concurrency=0)
    async with knowledge_serving(settings, tokens) as knowledge:
        port = free_port()
        env = {**{k: v for k, v in os.environ.items() if not k.startswith("SAGEMESH_")},
               "SAGEMESH_HTTP_PORT": str(port), "SAGEMESH_GATEWAY_SERVICES": '["knowledge"]',
               "SAGEMESH_KNOWLEDGE_ADDR": knowledge.address, "SAGEMESH_JWT_KEYS_DIR": str(keys_dir),
               "SAGEMESH_MAX_UPLOAD_BYTES": str(limit), "SAGEMESH_METRICS_PORT": str(free_port()),
               "SAGEMESH_LOG_LEVEL": "WARNING"}
        gateway = subprocess.Popen([sys.executable, "-m", "gateway.server"], cwd=ROOT, env=env)
        headers = {"Authorization": dict(knowledge.auth(TENANT))["authorization"]}
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=300, headers=headers) as client:
                deadline = time.monotonic() + 60
                while True:
                    with contextlib.suppress(httpx.TransportError):
                        if (await client.get("/readyz")).status_code == 200:
                            break
                    assert gateway.poll() is None and time.monotonic() < deadline, "the gateway did not start"
                    await asyncio.sleep(0.2)
                kb_id = (await client.post("/api/v1/knowledge/bases", json={"name": "big"})).json()["id"]
                path = f"/api/v1/knowledge/bases/{kb_id}/documents"
                # A small upload first, so that what a first upload loads is in the baseline.
                warm = await client.post(path, files={"file": ("small.md", MARKDOWN, "text/markdown")})
                assert warm.status_code == 200, warm.text
                baseline = resident_kib(gateway.pid, "VmRSS")
                size, piece = 100 * 1024 * 1024, (b"lorem ipsum dolor sit amet\n" * 40_000)[:1024 * 1024]

                async def body():
                    yield b'--XyZ\r\nContent-Disposition: form-data; name="file"; filename="big.md"\r\n\r\n'
                    for _ in range(size // len(piece)):
                        yield piece
                    yield b"\r\n--XyZ--\r\n"
                uploaded = await client.post(path, content=body(),
                                             headers={"content-type": "multipart/form-data; boundary=XyZ"})
                assert uploaded.status_code == 200, uploaded.text
                peak = resident_kib(gateway.pid, "VmHWM")
                document = await client.get(f"/api/v1/knowledge/documents/{uploaded.json()['documentId']}")
                assert document.json()["sizeBytes"] == str(size)
        finally:
            gateway.terminate()
            gateway.wait(timeout=30)
    assert (peak - baseline) / 1024 < 64, f"resident memory rose by {(peak - baseline) / 1024:.0f} MiB"
