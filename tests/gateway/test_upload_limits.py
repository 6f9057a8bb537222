"""Uploads' limits at the gateway: every byte of the body counts, a JSON line and
form fields have caps of their own, a trickling upload is given up, and the body
is read no faster than the backend takes it."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import time

import grpc
import httpx

from tests.gateway.conftest import MAX_BODY_BYTES, MAX_UPLOAD_BYTES, EchoServicer, echo_gateway_app, serve_gateway, \
    stop_gateway
from meshkit.settings import MeshSettings

MULTIPART = {"content-type": "multipart/form-data; boundary=XyZ"}
NDJSON = {"content-type": "application/x-ndjson"}


def field(name: str, value: bytes) -> bytes:
    return b'--XyZ\r\nContent-Disposition: form-data; name="' + name.encode() + b'"\r\n\r\n' + value + b"\r\n"


def file_part(content: bytes) -> bytes:
    return (b'--XyZ\r\nContent-Disposition: form-data; name="file"; filename="a.bin"\r\n\r\n' + content
            + b"\r\n--XyZ--\r\n")


async def refused(gateway, body: bytes, headers: dict[str, str], status: int, phrase: str) -> None:
    reply = await gateway.client.post("/v1/buckets/b/files", content=body, headers=headers)
    assert reply.status_code == status, reply.text
    assert phrase in reply.json()["message"], reply.json()


async def test_every_byte_of_a_multipart_body_counts_against_the_upload_limit(gateway):
    # The file alone is under the limit; with its framing and a field the body is over it.
    content = b"x" * (MAX_UPLOAD_BYTES - 100)
    await refused(gateway, field("note", b"n" * 200) + file_part(content), MULTIPART, 413, "byte limit")
    # Bytes after the closing boundary are no file's, and count too (streamed: no Content-Length).
    async def epilogue():
        yield file_part(b"small")
        for _ in range(MAX_UPLOAD_BYTES // 65536 + 1):
            yield b"e" * 65536
    reply = await gateway.client.post("/v1/buckets/b/files", content=epilogue(), headers=MULTIPART)
    assert reply.status_code == 413 and "byte limit" in reply.json()["message"]


async def test_a_declared_length_over_the_limit_is_refused_before_the_body_is_read(gateway):
    host, port = httpx.URL(gateway.url).host, httpx.URL(gateway.url).port
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(f"POST /v1/buckets/b/files HTTP/1.1\r\nhost: {host}\r\n"
                 f"content-type: {MULTIPART['content-type']}\r\ncontent-length: {MAX_UPLOAD_BYTES + 1}\r\n\r\n".encode())
    await writer.drain()
    status_line = await asyncio.wait_for(reader.readline(), 5)  # no byte of the body sent
    writer.close()
    assert status_line.startswith(b"HTTP/1.1 413"), status_line


async def test_form_fields_are_limited_in_number_and_size(gateway):
    # The echo gateway allows 8 fields of at most 1024 bytes.
    many = b"".join(field(f"f{i}", b"v") for i in range(9))
    await refused(gateway, many + file_part(b"data"), MULTIPART, 413, "more than 8 form fields")
    await refused(gateway, field("note", b"n" * 1025) + file_part(b"data"), MULTIPART, 413, "over 1024 bytes")
    eight = b"".join(field(f"f{i}", b"v" * 1024) for i in range(7)) + field("note", b"kept")
    reply = await gateway.client.post("/v1/buckets/b/files", content=eight + file_part(b"data"), headers=MULTIPART)
    assert reply.status_code == 200 and reply.json()["meta"]["note"] == "kept"


async def test_part_headers_are_bounded(gateway):
    header = b'--XyZ\r\nContent-Disposition: form-data; name="note"\r\nX-Pad: ' + b"p" * 10_000 + b"\r\n\r\nv\r\n"
    await refused(gateway, header + file_part(b"data"), MULTIPART, 400, "malformed multipart body")


async def test_a_json_line_over_the_json_body_limit_is_refused(gateway):
    line = json.dumps({"data": base64.b64encode(b"x" * MAX_BODY_BYTES).decode()}).encode()
    body = json.dumps({"meta": {"filename": "a.txt"}}).encode() + b"\n" + line + b"\n"
    await refused(gateway, body, NDJSON, 413, f"a line of the upload is over the {MAX_BODY_BYTES}-byte limit")


async def test_ndjson_lines_split_across_pieces_of_the_body_arrive_whole(gateway):
    pieces = [base64.b64encode(bytes([i]) * 30_000).decode() for i in range(40)]
    body = b"\n".join([json.dumps({"meta": {"filename": "a.txt"}}).encode(),
                       *(json.dumps({"data": p}).encode() for p in pieces), b""])

    async def trickle(size: int):
        for start in range(0, len(body), size):
            yield body[start:start + size]

    for size in (7, 4096, 100_000):
        reply = await gateway.client.post("/v1/buckets/b/files", content=trickle(size), headers=NDJSON)
        assert reply.status_code == 200, reply.text
        expected = b"".join(base64.b64decode(p) for p in pieces)
        assert reply.json()["chunks"] == 40 and reply.json()["sha256"] == hashlib.sha256(expected).hexdigest()


async def send_head_and_stall(url: str, path: str, body: bytes, headers: dict[str, str] | None = None):
    """Starts a chunked upload, sends `body` and then nothing (httpx would not read a reply before its body ends);
    returns the reply's status line and body, and how long it took."""
    target = httpx.URL(url)
    reader, writer = await asyncio.open_connection(target.host, target.port)
    head = "".join(f"{k}: {v}\r\n" for k, v in {**MULTIPART, **(headers or {})}.items())
    writer.write(f"POST {path} HTTP/1.1\r\nhost: {target.host}\r\ntransfer-encoding: chunked\r\n{head}\r\n".encode()
                 + f"{len(body):x}\r\n".encode() + body + b"\r\n")
    await writer.drain()
    started = time.monotonic()
    try:
        status_line = await asyncio.wait_for(reader.readline(), 10)
        head_and_body = await asyncio.wait_for(reader.readuntil(b"}"), 5)
    finally:
        writer.close()
    return status_line, json.loads(head_and_body.split(b"\r\n\r\n", 1)[1]), time.monotonic() - started


STALLING_UPLOAD = field("note", b"n") + b'--XyZ\r\nContent-Disposition: form-data; name="file"; filename="a.md"\r\n\r\nsome'


async def test_an_upload_that_stops_sending_is_ended_with_408(echo_modules, echo_address):
    app = echo_gateway_app(echo_modules, {"echo": echo_address}, MeshSettings(_env_file=None), upload_idle_seconds=0.5)
    server, task, url = await serve_gateway(app)
    try:
        status_line, body, waited = await send_head_and_stall(url, "/v1/buckets/b/files", STALLING_UPLOAD)
    finally:
        await stop_gateway(server, task)
    assert status_line.startswith(b"HTTP/1.1 408"), status_line
    assert body["code"] == grpc.StatusCode.DEADLINE_EXCEEDED.value[0]
    assert "no bytes of the upload arrived for 0.5 s" in body["message"]
    assert 0.4 < waited < 5


class SlowCollector(EchoServicer):
    """Takes an upload at 1 MB/s and says how many bytes it has taken."""

    def __init__(self, pb) -> None:
        super().__init__(pb)
        self.taken = 0

    async def Collect(self, request_iterator, context):
        async for message in request_iterator:
            self.taken += len(message.data)
            await asyncio.sleep(len(message.data) / 1e6)
        return self.pb.CollectResponse(size=self.taken)


async def test_the_body_is_read_no_faster_than_the_backend_takes_it(echo_modules):
    pb, pb_grpc = echo_modules
    collector = SlowCollector(pb)
    backend = grpc.aio.server()
    pb_grpc.add_EchoServiceServicer_to_server(collector, backend)
    port = backend.add_insecure_port("127.0.0.1:0")
    await backend.start()
    total = 64 * 1024 * 1024
    app = echo_gateway_app(echo_modules, {"echo": f"127.0.0.1:{port}"}, MeshSettings(_env_file=None),
                           max_upload_bytes=total + 1024)
    server, task, url = await serve_gateway(app)
    sent, ahead = 0, []

    async def body():
        nonlocal sent
        yield b'--XyZ\r\nContent-Disposition: form-data; name="file"; filename="a.bin"\r\n\r\n'
        piece = b"x" * 65536
        while sent < total:
            yield piece
            sent += len(piece)
            ahead.append(sent - collector.taken)
        yield b"\r\n--XyZ--\r\n"
    try:
        async with httpx.AsyncClient(base_url=url, timeout=120) as client:
            # 64 MiB would take a minute; 3 s show whether the gateway reads faster than the backend takes.
            reply = asyncio.create_task(client.post("/v1/buckets/b/files", content=body(), headers=MULTIPART))
            await asyncio.sleep(3)
            assert collector.taken > 0
            # The client is held back: only socket, HTTP/2 window and a few pieces' worth ahead of the backend.
            assert max(ahead) < 16 * 1024 * 1024, max(ahead)
            assert sent < 24 * 1024 * 1024, sent
            reply.cancel()
    finally:
        await stop_gateway(server, task)
        await backend.stop(0)
