"""Embeddings from an OpenAI-compatible /v1/embeddings endpoint (OpenAI,
Azure OpenAI, vLLM, TEI, Ollama, LiteLLM...)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import httpx
import numpy as np

from services.rag_engine.embedding import normalised
from meshkit.model_http import post_json

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
        body = await post_json(self._client, self.url, {"model": self.model, "input": texts}, "embedding service",
                               EmbeddingResponseError)
        try:
            # Items carry their index; the order of the list is not promised.
            items = sorted(body["data"], key=lambda item: item["index"])
            vectors = np.array([item["embedding"] for item in items], dtype=np.float32)
        except (ValueError, KeyError, TypeError) as error:
            raise EmbeddingResponseError(f"{self.url} answered an unreadable body: {str(body)[:500]}") from error
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
