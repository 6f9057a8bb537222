"""CacheStore in this process: for one replica, or when no Redis is set."""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

from cachetools import LRUCache, TTLCache


class MemoryCacheStore:
    def __init__(self, max_answers: int = 10_000, max_buckets: int = 1_000, ttl: float = 3600) -> None:
        self._answers: TTLCache[str, str] = TTLCache(max_answers, ttl)
        self._generations: dict[str, int] = {}
        self._buckets: LRUCache[str, deque[tuple[str, list[float]]]] = LRUCache(max_buckets)

    async def get(self, key: str) -> str | None:
        return self._answers.get(key)

    async def put(self, key: str, value: str, ttl: float) -> None:
        # The cache's own TTL applies: TTLCache has one for all entries.
        self._answers[key] = value

    async def generations(self, names: Sequence[str]) -> list[int]:
        return [self._generations.get(name, 0) for name in names]

    async def bump(self, names: Sequence[str]) -> None:
        for name in names:
            self._generations[name] = self._generations.get(name, 0) + 1

    async def recent(self, bucket: str) -> list[tuple[str, list[float]]]:
        return list(self._buckets.get(bucket, ()))

    async def remember(self, bucket: str, key: str, vector: list[float], keep: int, ttl: float) -> None:
        entries = self._buckets.get(bucket)
        if entries is None:
            entries = self._buckets[bucket] = deque(maxlen=keep)
        entries.appendleft((key, vector))

    async def close(self) -> None:
        return None
