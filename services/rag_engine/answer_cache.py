"""The answer cache: a repeated question over unchanged knowledge bases gets
the answer it got before, without retrieval or generation.

Exact hits match the normalised question and every option that shapes an
answer. Each (tenant, knowledge base) has a generation counter that every
write to the base bumps, and a key holds the generations of the bases it
read, so an answer is never served once one of its bases changed; stale
entries just age out. The optional semantic cache also serves a question
whose embedding is within a cosine threshold of one answered before, in the
same scope and with the same options.

The store is behind CacheStore: answer_cache_redis.py (shared by replicas)
when REDIS_URL is set, answer_cache_memory.py (per process) otherwise. A
store that fails makes the cache miss, never the query.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
import hashlib
import json
import logging
import re
import unicodedata
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

import numpy as np

from services.rag_engine.answering import Answer, AnswerMetrics, QueryOptions, Source
from services.rag_engine.domain import Chunk, RankedChunk, Scope, Timings

log = logging.getLogger(__name__)

_SPACE = re.compile(r"\s+")
_TRAILING_MARKS = "?？.。!！ "
ALL_BASES = "*"


class CacheStore(Protocol):
    async def get(self, key: str) -> str | None: ...

    async def put(self, key: str, value: str, ttl: float) -> None: ...

    async def generations(self, names: Sequence[str]) -> list[int]:
        """The counters' values, 0 for one never bumped."""

    async def bump(self, names: Sequence[str]) -> None: ...

    async def recent(self, bucket: str) -> list[tuple[str, list[float]]]:
        """The semantic entries of a bucket, newest first: (answer key, question vector)."""

    async def remember(self, bucket: str, key: str, vector: list[float], keep: int, ttl: float) -> None: ...

    async def close(self) -> None: ...


def normalized(question: str) -> str:
    text = _SPACE.sub(" ", unicodedata.normalize("NFKC", question)).strip().lower()
    return text.rstrip(_TRAILING_MARKS)


def _digest(value: object) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


def to_json(answer: Answer) -> str:
    return json.dumps(dataclasses.asdict(answer))


def from_json(text: str) -> Answer:
    data = json.loads(text)
    sources = []
    for source in data["sources"]:
        ranked = dict(source["ranked"])
        chunk = _chunk(ranked.pop("chunk"))
        sources.append(Source(source["number"], RankedChunk(chunk, **ranked), source["text"]))
    metrics = data["metrics"]
    metrics["retrieval"] = Timings(**metrics["retrieval"])
    return Answer(data["text"], sources, AnswerMetrics(**metrics), data["features"])


def _chunk(data: dict) -> Chunk:
    return Chunk(**{**data, "headings": tuple(data["headings"])})


@dataclass(frozen=True)
class Lookup:
    """What a lookup found, and where its answer is kept on a miss. The keys
    name the bases' generations as they were before the answer was made, so
    an answer made while a base changed is never served as the newer one's."""

    answer: Answer | None
    found_by: str  # "cache", "semantic-cache", or "" on a miss
    key: str = ""
    bucket: str = ""
    # The question's embedding, when the semantic lookup made one: keeping
    # the answer reuses it.
    vector: list[float] | None = None


class AnswerCache:
    def __init__(self, store: CacheStore, ttl_seconds: float, semantic_threshold: float = 0.0,
                 embed_query: Callable[[str], Awaitable[list[float]]] | None = None,
                 semantic_entries: int = 200) -> None:
        if semantic_threshold and embed_query is None:
            raise ValueError("a semantic cache needs a query embedder")
        self.store = store
        self.ttl = ttl_seconds
        self.semantic_threshold = semantic_threshold
        self.embed_query = embed_query
        self.semantic_entries = semantic_entries

    async def changed(self, tenant_id: str, kb_id: str) -> None:
        """A base changed: no answer that read it is served again."""
        try:
            await self.store.bump([f"{tenant_id}:{kb_id}", f"{tenant_id}:{ALL_BASES}"])
        except Exception:
            # Answers over this base may be served stale until they expire.
            log.exception("the answer cache could not record a change to %s/%s", tenant_id, kb_id)

    async def _keys(self, scope: Scope, question: str, options: QueryOptions) -> tuple[str, str]:
        bases = sorted(scope.kb_ids) or [ALL_BASES]
        generations = await self.store.generations([f"{scope.tenant_id}:{kb}" for kb in bases])
        shape = dataclasses.asdict(options)
        bucket = _digest([scope.tenant_id, bases, generations, shape])
        return f"answer:{_digest([bucket, normalized(question)])}", f"similar:{bucket}"

    async def lookup(self, scope: Scope, question: str, options: QueryOptions) -> Lookup:
        try:
            key, bucket = await self._keys(scope, question, options)
            found = await self.store.get(key)
            if found is not None:
                return Lookup(from_json(found), "cache", key, bucket)
            if not self.semantic_threshold:
                return Lookup(None, "", key, bucket)
            similar, vector = await self._similar(bucket, question)
            return Lookup(similar, "semantic-cache" if similar else "", key, bucket, vector)
        except Exception:
            log.exception("the answer cache could not be read")
            return Lookup(None, "")

    async def _similar(self, bucket: str, question: str) -> tuple[Answer | None, list[float] | None]:
        """The answer to the closest earlier question, if close enough, and
        this question's embedding (None when there was nothing to compare)."""
        entries = await self.store.recent(bucket)
        if not entries:
            return None, None
        embedded = [float(x) for x in await self.embed_query(normalized(question))]
        vector = np.asarray(embedded, dtype=np.float32)
        stored = np.asarray([v for _, v in entries], dtype=np.float32)
        similarity = stored @ vector / (np.linalg.norm(stored, axis=1) * np.linalg.norm(vector) + 1e-12)
        best = int(np.argmax(similarity))
        if similarity[best] < self.semantic_threshold:
            return None, embedded
        found = await self.store.get(entries[best][0])
        return (from_json(found) if found is not None else None), embedded

    async def keep(self, lookup: Lookup, question: str, answer: Answer) -> None:
        if not lookup.key:
            return  # the lookup itself failed
        try:
            await self.store.put(lookup.key, to_json(answer), self.ttl)
            if self.semantic_threshold:
                vector = lookup.vector or [float(x) for x in await self.embed_query(normalized(question))]
                await self.store.remember(lookup.bucket, lookup.key, vector, self.semantic_entries, self.ttl)
        except Exception:
            log.exception("the answer cache could not be written")
