"""Streams one caller may hold at once (per user, per address without a token;
shared through Redis, failing open), and streams given up when their client
stops reading or sending."""

from __future__ import annotations

import asyncio
import socket
import time
import uuid
from contextlib import AsyncExitStack, asynccontextmanager

import httpx
import redis.asyncio as redis

from gateway.stream_limits import LocalOpenStreams, RedisOpenStreams, StreamLimiter
from meshkit.server import token_verifier
from meshkit.settings import MeshSettings
from tests.conftest import free_port
from tests.gateway.conftest import echo_gateway_app, serve_gateway, stop_gateway
from tests.gateway.test_rate_limits import REDIS_URL, bearer
from tests.gateway.test_upload_limits import STALLING_UPLOAD, send_head_and_stall

SLOW = {"count": 3, "delaySeconds": 1.0}


@asynccontextmanager
async def stream_limited_gateway(echo_modules, echo_address, keys_dir, limit: int, streams=None, **options):
    settings = MeshSettings(_env_file=None, jwt_keys_dir=keys_dir)
    app = echo_gateway_app(echo_modules, {"echo": echo_address}, settings, **options,
                           stream_limiter=StreamLimiter(limit, streams or LocalOpenStreams(), token_verifier(settings)))
    server, task, url = await serve_gateway(app)
    try:
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            yield client
    finally:
        await stop_gateway(server, task)


async def open_stream(held: AsyncExitStack, client: httpx.AsyncClient, headers=None) -> httpx.Response:
    """Starts a slow stream and keeps it open until `held` closes; a refusal is read whole."""
    reply = await held.enter_async_context(client.stream("POST", "/v1/expand", json=SLOW, headers=headers or {}))
    if reply.status_code != 200:
        await reply.aread()
    return reply


async def admitted_soon(client: httpx.AsyncClient, headers=None, within: float = 5) -> int:
    """The status of a stream started once the gateway has seen the last one's client go (it learns it in a moment)."""
    deadline, status = time.monotonic() + within, 429
    while status == 429 and time.monotonic() < deadline:
        async with AsyncExitStack() as held:
            status = (await open_stream(held, client, headers)).status_code
        if status == 429:
            await asyncio.sleep(0.1)
    return status


async def test_each_user_may_hold_a_few_streams_at_once(echo_modules, echo_address, keys_dir, tokens):
    async with stream_limited_gateway(echo_modules, echo_address, keys_dir, 2) as client:
        ann, bob = bearer(tokens, "acme", "ann"), bearer(tokens, "acme", "bob")
        async with AsyncExitStack() as first:
            assert [(await open_stream(first, client, ann)).status_code for _ in range(2)] == [200, 200]
            async with AsyncExitStack() as third:
                refused = await open_stream(third, client, ann)
                assert refused.status_code == 429 and refused.json()["code"] == 8
                assert refused.json()["message"] == ("too many streams at once: at most 2 per user; "
                                                     "end one before starting another")
                assert (await open_stream(third, client, bob)).status_code == 200
            # Unary calls are not streams.
            assert (await client.get("/v1/echo/x", headers=ann)).status_code == 200
        # Ended streams give their place back.
        assert await admitted_soon(client, ann) == 200


async def test_a_trickling_upload_holds_its_addresss_stream_until_it_is_given_up(echo_modules, echo_address, keys_dir):
    async with stream_limited_gateway(echo_modules, echo_address, keys_dir, 1, upload_idle_seconds=1.0) as client:
        upload = asyncio.create_task(send_head_and_stall(str(client.base_url), "/v1/buckets/b/files", STALLING_UPLOAD))
        await asyncio.sleep(0.3)
        forged = {"Authorization": "Bearer not-a-token"}
        async with AsyncExitStack() as held:
            refused = await open_stream(held, client, forged)
            assert refused.status_code == 429 and "per client address" in refused.json()["message"]
        status_line, _, _ = await upload
        assert status_line.startswith(b"HTTP/1.1 408")
        assert await admitted_soon(client) == 200


async def test_replicas_share_the_limit_through_redis(echo_modules, echo_address, keys_dir, tokens):
    user_id = f"user-{uuid.uuid4().hex}"
    user = bearer(tokens, "acme", user_id)
    async with stream_limited_gateway(echo_modules, echo_address, keys_dir, 1, RedisOpenStreams(REDIS_URL)) as one, \
            stream_limited_gateway(echo_modules, echo_address, keys_dir, 1, RedisOpenStreams(REDIS_URL)) as two:
        key = f"sagemesh-streams:user:{user_id}"
        store = redis.from_url(REDIS_URL)
        async with AsyncExitStack() as held:
            assert (await open_stream(held, one, user)).status_code == 200
            assert (await open_stream(held, two, user)).status_code == 429
            assert await store.zcard(key) == 1, "the open stream is a lease in Redis"
        assert await admitted_soon(two, user) == 200
        deadline = time.monotonic() + 5
        while await store.zcard(key) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert await store.zcard(key) == 0, "every stream closed its lease"
        await store.aclose()


async def test_a_redis_outage_lets_streams_through(echo_modules, echo_address, keys_dir, tokens):
    down = RedisOpenStreams(f"redis://127.0.0.1:{free_port()}/0")
    async with stream_limited_gateway(echo_modules, echo_address, keys_dir, 1, down) as client:
        async with AsyncExitStack() as held:
            user = bearer(tokens, "acme", "eve")
            assert [(await open_stream(held, client, user)).status_code for _ in range(2)] == [200, 200]


async def test_a_stream_whose_client_stops_reading_is_ended(echo_modules, echo_address, keys_dir):
    async with stream_limited_gateway(echo_modules, echo_address, keys_dir, 1, send_timeout=0.5) as client:
        url = httpx.URL(str(client.base_url))
        sink = socket.socket()
        sink.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sink.connect((url.host, url.port))
        reader, writer = await asyncio.open_connection(sock=sink)
        body = b'{"count": 100000000}'
        writer.write(b"POST /v1/expand HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                     b"content-length: %d\r\n\r\n%s" % (len(body), body))
        await writer.drain()
        await asyncio.sleep(0.2)
        async with AsyncExitStack() as held:
            assert (await open_stream(held, client)).status_code == 429  # the sink's stream holds the address's one
        # The sink reads nothing; once the gateway has waited 0.5 s to send, it ends the stream and frees its place.
        assert await admitted_soon(client, within=20) == 200
        # The connection was closed: what the socket holds can be read to its end.
        while await asyncio.wait_for(reader.read(1 << 20), 5):
            pass
        writer.close()
