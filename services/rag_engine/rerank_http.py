"""A reranker behind HTTP: Hugging Face text-embeddings-inference (TEI) or a
Cohere-style /v1/rerank (Cohere, Jina, Infinity, vLLM). Either response shape
is accepted whichever API was asked."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from typing import Any, Literal

import httpx

from meshkit.model_http import post_json

_PATHS = {"tei": "/rerank", "cohere": "/v1/rerank"}


class RerankResponseError(RuntimeError):
    """The rerank service answered something unusable. Deliberately not a
    ServiceError: the caller gets INTERNAL, the details go to the log."""


class HttpReranker:
    def __init__(
        self,
        url: str,
        *,
        api: Literal["tei", "cohere"] = "tei",
        api_key: str | None = None,
        model: str | None = None,
        timeout: float = 10.0,
        batch_size: int = 32,
        name: str | None = None,
    ) -> None:
        """`url` is a base URL, or the full URL of the endpoint when it ends in
        /rerank. `batch_size` caps texts per request: TEI refuses more than its
        --max-client-batch-size (32 by default)."""
        if api not in _PATHS:
            raise ValueError(f"api must be one of {sorted(_PATHS)}")
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        url = url.rstrip("/")
        self.url = url if url.endswith("/rerank") else url + _PATHS[api]
        self.api = api
        self.model = model
        self.batch_size = batch_size
        self.name = name or f"http:{model or self.url}"
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.AsyncClient(headers=headers, timeout=timeout)

    async def score(self, query: str, passages: Sequence[str]) -> list[float]:
        starts = range(0, len(passages), self.batch_size)
        batches = await asyncio.gather(
            *(self._score_batch(query, list(passages[s : s + self.batch_size])) for s in starts)
        )
        return [score for batch in batches for score in batch]

    async def _score_batch(self, query: str, texts: list[str]) -> list[float]:
        if self.api == "tei":
            payload: dict[str, Any] = {"query": query, "texts": texts, "raw_scores": False}
        else:
            payload = {"query": query, "documents": texts, "top_n": len(texts)}
            if self.model:
                payload["model"] = self.model
        body = await post_json(self._client, self.url, payload, "reranker", RerankResponseError)
        try:
            return _scores(body, len(texts))
        except (ValueError, TypeError, KeyError) as error:
            raise RerankResponseError(f"reranker {self.url} answered malformed JSON ({error}): {str(body)[:500]}") from error

    async def close(self) -> None:
        await self._client.aclose()


def _scores(body: Any, count: int) -> list[float]:
    """Scores in input order from [{index, score}] (TEI) or
    {results: [{index, relevance_score}]} (Cohere). Either may come sorted by
    score; indices left out (a top_n cut) score -inf."""
    items = body["results"] if isinstance(body, dict) else body
    if not isinstance(items, list):
        raise TypeError("expected a list of results")
    scores = [-math.inf] * count
    for item in items:
        index = item["index"]
        score = item["score"] if "score" in item else item["relevance_score"]
        if not isinstance(index, int) or not 0 <= index < count:
            raise ValueError(f"index {index!r} out of range")
        if not isinstance(score, int | float) or isinstance(score, bool):
            raise TypeError(f"score {score!r} is not a number")
        scores[index] = float(score)
    return scores
