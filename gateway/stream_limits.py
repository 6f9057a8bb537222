"""How many streaming requests (answers and status watches streamed back,
uploads streamed in) one caller may have open at once: per user when its token
verifies, per client address otherwise. A gRPC server's max_concurrent_rpcs is
shared by everybody; without this one caller could hold all of it.

The open streams are counted in Redis when REDIS_URL is set, so that the limit
holds across every gateway replica, and in this process otherwise. In Redis
each open stream is a lease in a sorted set that the gateway renews while the
stream lasts, so a replica that dies without closing its streams frees them
within LEASE_SECONDS. If Redis cannot be reached the stream goes ahead, as with
the rate limits: the limit protects the services, it must not take the API down.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from typing import Protocol

import redis.asyncio as redis

from gateway.rate_limits import Caller, identify
from meshkit.auth import TokenVerifier

log = logging.getLogger(__name__)

# How long a replica's stream counts in Redis without being renewed (it renews a third as often).
LEASE_SECONDS = 30.0

# Drops the expired leases, then adds this one if the caller has room: one round trip, atomic.
_OPEN = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[4])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return 1
"""


class OpenStreams(Protocol):
    async def open(self, key: str, limit: int) -> str | None:
        """A new stream's id, or None when the caller already has `limit` open."""

    async def close(self, key: str, stream_id: str) -> None: ...

    async def renew(self, key: str, stream_id: str) -> None: ...


class LocalOpenStreams:
    """This process's streams; a gateway replica on its own."""

    def __init__(self) -> None:
        self._open: Counter[str] = Counter()

    async def open(self, key: str, limit: int) -> str | None:
        if self._open[key] >= limit:
            return None
        self._open[key] += 1
        return key

    async def close(self, key: str, stream_id: str) -> None:
        self._open[key] -= 1
        if self._open[key] <= 0:
            del self._open[key]

    async def renew(self, key: str, stream_id: str) -> None:
        pass


class RedisOpenStreams:
    """Every replica's streams, as leases in a sorted set per caller (score: when the lease ends)."""

    def __init__(self, redis_url: str) -> None:
        self.client = redis.Redis.from_url(redis_url)
        self._open = self.client.register_script(_OPEN)

    @staticmethod
    def _key(key: str) -> str:
        return f"sagemesh-streams:{key}"

    async def open(self, key: str, limit: int) -> str | None:
        stream_id, now = uuid.uuid4().hex, time.time()
        admitted = await self._open(keys=[self._key(key)],
                                    args=[now, limit, now + LEASE_SECONDS, stream_id, int(LEASE_SECONDS * 1000)])
        return stream_id if admitted else None

    async def close(self, key: str, stream_id: str) -> None:
        await self.client.zrem(self._key(key), stream_id)

    async def renew(self, key: str, stream_id: str) -> None:
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.zadd(self._key(key), {stream_id: time.time() + LEASE_SECONDS}, xx=True)
            pipe.pexpire(self._key(key), int(LEASE_SECONDS * 1000))
            await pipe.execute()


def open_streams_for(redis_url: str | None) -> OpenStreams:
    return RedisOpenStreams(redis_url) if redis_url else LocalOpenStreams()


class StreamLimiter:
    def __init__(self, limit: int, streams: OpenStreams, verifier: TokenVerifier | None) -> None:
        self.limit = limit
        self.streams = streams
        self.verifier = verifier

    def caller(self, authorization: str | None, address: str) -> Caller:
        return identify(self.verifier, authorization, address)

    def refusal(self, caller: Caller) -> str:
        whose = "user" if caller.user_id else "client address"
        return f"too many streams at once: at most {self.limit} per {whose}; end one before starting another"

    @contextlib.asynccontextmanager
    async def stream(self, caller: Caller) -> AsyncIterator[bool]:
        """Holds one of the caller's streams while the block runs; yields False when it has none left."""
        key = f"user:{caller.user_id}" if caller.user_id else f"address:{caller.address}"
        try:
            stream_id = await self.streams.open(key, self.limit)
        except redis.RedisError as error:
            log.warning("stream limit not checked: its storage failed: %s", error)
            yield True
            return
        if stream_id is None:
            yield False
            return
        renewing = asyncio.create_task(self._renew(key, stream_id))
        try:
            yield True
        finally:
            renewing.cancel()
            try:
                await self.streams.close(key, stream_id)
            except redis.RedisError as error:  # its lease runs out instead
                log.warning("stream not closed in the stream limit's storage: %s", error)

    async def _renew(self, key: str, stream_id: str) -> None:
        while True:
            await asyncio.sleep(LEASE_SECONDS / 3)
            try:
                await self.streams.renew(key, stream_id)
            except redis.RedisError as error:
                log.warning("stream lease not renewed: %s", error)
