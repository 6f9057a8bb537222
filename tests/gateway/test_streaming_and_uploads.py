"""Server streams (NDJSON and SSE) and client-streaming uploads (multipart and NDJSON)."""

from __future__ import annotations

import hashlib
import json
import os
import time

import httpx
import pytest

from meshkit.settings import MeshSettings
from tests.gateway.conftest import MAX_UPLOAD_BYTES, echo_gateway_app, serve_gateway, stop_gateway


async def test_server_stream_as_ndjson(gateway):
    async with gateway.client.stream("POST", "/v1/expand", json={"count": 3}) as reply:
        assert reply.status_code == 200
        assert reply.headers["content-type"].startswith("application/json")
        lines = [json.loads(line) async for line in reply.aiter_lines() if line]
    assert lines == [{"result": {"index": i}} for i in range(3)]


async def test_a_stream_failing_midway_ends_with_an_error_object(gateway):
    async with gateway.client.stream("POST", "/v1/expand", json={"count": 2, "failCode": 14}) as reply:
        assert reply.status_code == 200
        lines = [json.loads(line) async for line in reply.aiter_lines() if line]
    assert lines[:2] == [{"result": {"index": 0}}, {"result": {"index": 1}}]
    assert lines[2] == {"error": {"code": 14, "message": "expansion failed midway", "details": []}}


async def test_a_stream_failing_before_its_first_message_is_an_http_error(gateway):
    reply = await gateway.client.post("/v1/expand", json={"count": 0, "failCode": 5})
    assert reply.status_code == 404
    assert reply.json()["message"] == "expansion failed midway"


async def test_server_stream_as_server_sent_events(gateway):
    async with gateway.client.stream(
        "POST", "/v1/expand", json={"count": 2, "failCode": 13}, headers={"Accept": "text/event-stream"}
    ) as reply:
        assert reply.headers["content-type"].startswith("text/event-stream")
        assert reply.headers["cache-control"] == "no-cache"
        body = "".join([chunk async for chunk in reply.aiter_text()])
    events = [event for event in body.split("\n\n") if event]
    assert events[0] == 'data: {"result":{"index":0}}'
    assert events[1] == 'data: {"result":{"index":1}}'
    assert events[2].startswith("event: error\ndata: ")
    assert json.loads(events[2].split("data: ", 1)[1])["error"]["code"] == 13


async def test_results_arrive_as_they_are_produced(gateway):
    # Each item is flushed on its own: the first is read before the last is made.
    async with gateway.client.stream("POST", "/v1/expand", json={"count": 3, "delaySeconds": 0.3}) as reply:
        lines = reply.aiter_lines()
        first = await anext(lines)
        read_first_at = time.monotonic()
        rest = [line async for line in lines if line]
        finished_at = time.monotonic()
    assert json.loads(first) == {"result": {"index": 0}}
    assert len(rest) == 2 and finished_at - read_first_at > 0.45


async def test_a_stream_outlives_the_unary_default_deadline_unless_the_client_sets_one(echo_modules, echo_address):
    # Unary calls get the mesh's default deadline (1 s here); a stream gets the stream deadline.
    settings = MeshSettings(_env_file=None, default_deadline_seconds=1)
    app = echo_gateway_app(echo_modules, {"echo": echo_address}, settings, stream_deadline=30)
    server, task, url = await serve_gateway(app)
    try:
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            slow = {"count": 4, "delaySeconds": 0.5}
            whole = [json.loads(line) for line in (await client.post("/v1/expand", json=slow)).text.splitlines()]
            assert whole == [{"result": {"index": i}} for i in range(4)]
            cut = (await client.post("/v1/expand", json=slow, headers={"Grpc-Timeout": "1200m"})).text.splitlines()
            assert json.loads(cut[-1])["error"]["code"] == 4  # DEADLINE_EXCEEDED, as the client asked
    finally:
        await stop_gateway(server, task)


async def test_multipart_upload_of_a_multi_megabyte_file_streams_through(gateway):
    content = os.urandom(5 * 1024 * 1024 + 123)
    reply = await gateway.client.post(
        "/v1/buckets/photos/files",
        data={"note": "holiday", "meta.content_type": "image/x-test"},
        files={"file": ("beach.bin", content, "application/octet-stream")},
    )
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["meta"] == {"bucket": "photos", "filename": "beach.bin", "contentType": "image/x-test", "note": "holiday"}
    assert body["size"] == str(len(content))
    assert body["sha256"] == hashlib.sha256(content).hexdigest()
    assert body["chunks"] > 10  # sent in pieces, not as one message


async def test_multipart_file_part_supplies_filename_and_type(gateway):
    reply = await gateway.client.post(
        "/v1/buckets/docs/files", files={"file": ("notes.md", b"# hi\n", "text/markdown")}
    )
    assert reply.json()["meta"] == {"bucket": "docs", "filename": "notes.md", "contentType": "text/markdown", "note": ""}


@pytest.mark.parametrize(
    ("data", "files", "status", "phrase"),
    [
        ({"note": "only fields"}, None, 400, "no file part"),
        (None, {"file": ("big.bin", b"x" * (MAX_UPLOAD_BYTES + 1), "application/octet-stream")}, 413, "limit"),
    ],
    ids=["no-file", "too-large"],
)
async def test_bad_uploads(gateway, data, files, status, phrase):
    if files is None:
        # httpx sends a urlencoded body without files; force multipart with an empty part list.
        reply = await gateway.client.post(
            "/v1/buckets/b/files",
            content=b'--XyZ\r\nContent-Disposition: form-data; name="note"\r\n\r\nonly fields\r\n--XyZ--\r\n',
            headers={"content-type": "multipart/form-data; boundary=XyZ"},
        )
    else:
        reply = await gateway.client.post("/v1/buckets/b/files", data=data, files=files)
    assert reply.status_code == status, reply.text
    assert phrase in reply.json()["message"]


async def test_fields_after_the_file_are_refused(gateway):
    body = (
        b'--XyZ\r\nContent-Disposition: form-data; name="file"; filename="a.txt"\r\n\r\nhello\r\n'
        b'--XyZ\r\nContent-Disposition: form-data; name="note"\r\n\r\nlate\r\n--XyZ--\r\n'
    )
    reply = await gateway.client.post(
        "/v1/buckets/b/files", content=body, headers={"content-type": "multipart/form-data; boundary=XyZ"}
    )
    assert reply.status_code == 400
    assert "before the file" in reply.json()["message"]


async def test_client_stream_as_ndjson(gateway):
    payload = b"\n".join([
        json.dumps({"meta": {"filename": "a.txt"}}).encode(),
        json.dumps({"data": "aGVsbG8g"}).encode(),  # "hello "
        json.dumps({"data": "d29ybGQ="}).encode(),  # "world"
    ])
    reply = await gateway.client.post(
        "/v1/buckets/b/files", content=payload, headers={"content-type": "application/x-ndjson"}
    )
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["meta"]["bucket"] == "b" and body["meta"]["filename"] == "a.txt"
    assert body["sha256"] == hashlib.sha256(b"hello world").hexdigest()
    assert body["chunks"] == 2
