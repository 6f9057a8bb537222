"""Embeddings from an OpenAI-compatible /v1/embeddings endpoint (OpenAI,
Azure OpenAI, vLLM, TEI, Ollama, LiteLLM...)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

import httpx
import numpy as np

from meshkit.errors import Unavailable
from services.rag_engine.embedding import normalised

log = logging.getLogger(__name__)


class EmbeddingResponseError(RuntimeError):
    """The endpoint answered something unusable. Not a ServiceError: the
    caller gets INTERNAL, the details go to the log."""


class OpenAIEmbedder:
    def __init__(
        self, url: str | None, model: str, dimension: int, *, api_key: str = "",
        batch_size: int = 64, timeout_seconds: float = 30.0,
    ) -> None:
        if not url or not model or dimension <= 0:
            raise ValueError(
                "the openai embedder needs SAGEMESH_EMBEDDING_URL, SAGEMESH_EMBEDDING_API_MODEL "
                "and SAGEMESH_EMBEDDING_DIMENSION"
            )
        url = url.rstrip("/")
        self.url = url if url.endswith("/embeddings") else f"{url}/embeddings"
        self.name = f"openai:{model}"
        self.model = model
        self.dimension = dimension
        self.batch_size = batch_size
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.AsyncClient(headers=headers, timeout=timeout_seconds)

    async def _embed(self, texts: list[str]) -> np.ndarray:
        try:
            response = await self._client.post(self.url, json={"model": self.model, "input": texts})
        except httpx.TransportError as error:
            log.warning("embedding endpoint %s unreachable: %r", self.url, error)
            raise Unavailable("the embedding service is unavailable") from error
        if response.status_code >= 500 or response.status_code == 429:
            log.warning("embedding endpoint %s answered %s: %.500s", self.url, response.status_code, response.text)
            raise Unavailable("the embedding service is unavailable")
        if response.status_code != 200:
            raise EmbeddingResponseError(f"{self.url} answered {response.status_code}: {response.text[:500]}")
        try:
            # Items carry their index; the order of the list is not promised.
            items = sorted(response.json()["data"], key=lambda item: item["index"])
            vectors = np.array([item["embedding"] for item in items], dtype=np.float32)
        except (ValueError, KeyError, TypeError) as error:
            raise EmbeddingResponseError(f"{self.url} answered an unreadable body: {response.text[:500]}") from error
        if vectors.shape != (len(texts), self.dimension):
            raise EmbeddingResponseError(
                f"{self.url} returned vectors of shape {vectors.shape}, expected {(len(texts), self.dimension)}"
            )
        return normalised(vectors)

    async def embed_documents(self, texts: Sequence[str]) -> list[list[float]]:
        starts = range(0, len(texts), self.batch_size)
        batches = await asyncio.gather(*(self._embed(list(texts[s:s + self.batch_size])) for s in starts))
        return [vector for batch in batches for vector in batch.tolist()]

    async def embed_query(self, text: str) -> list[float]:
        return (await self._embed([text]))[0].tolist()

    async def close(self) -> None:
        await self._client.aclose()
