"""CacheStore in Redis, shared by every rag_engine replica."""

from __future__ import annotations

import json
from collections.abc import Sequence

import redis.asyncio as redis

PREFIX = "sagemesh:rag:"


class RedisCacheStore:
    def __init__(self, url: str, timeout_seconds: float = 0.5) -> None:
        # A slow cache must not slow answers: it gives up quickly and misses.
        self.client = redis.from_url(url, socket_timeout=timeout_seconds, socket_connect_timeout=timeout_seconds,
                                     decode_responses=True)

    async def get(self, key: str) -> str | None:
        return await self.client.get(PREFIX + key)

    async def put(self, key: str, value: str, ttl: float) -> None:
        await self.client.set(PREFIX + key, value, px=int(ttl * 1000))

    async def generations(self, names: Sequence[str]) -> list[int]:
        values = await self.client.mget([f"{PREFIX}generation:{name}" for name in names])
        return [int(value or 0) for value in values]

    async def bump(self, names: Sequence[str]) -> None:
        async with self.client.pipeline(transaction=True) as pipe:
            for name in names:
                pipe.incr(f"{PREFIX}generation:{name}")
            await pipe.execute()

    async def recent(self, bucket: str) -> list[tuple[str, list[float]]]:
        return [tuple(json.loads(entry)) for entry in await self.client.lrange(PREFIX + bucket, 0, -1)]

    async def remember(self, bucket: str, key: str, vector: list[float], keep: int, ttl: float) -> None:
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.lpush(PREFIX + bucket, json.dumps([key, vector]))
            pipe.ltrim(PREFIX + bucket, 0, keep - 1)
            pipe.pexpire(PREFIX + bucket, int(ttl * 1000))
            await pipe.execute()

    async def close(self) -> None:
        await self.client.aclose()
