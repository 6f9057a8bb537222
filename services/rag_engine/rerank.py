"""Rerankers behind one interface: rerank_cross_encoder.py runs a model in
process, rerank_http.py calls a rerank service (TEI, Cohere-style)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from services.rag_engine.settings import RagEngineSettings


class Reranker(Protocol):
    name: str

    async def score(self, query: str, passages: Sequence[str]) -> list[float]:
        """Relevance of each passage to the query, in input order; higher is
        better. Passages arrive best first by the first-stage ranking."""

    async def close(self) -> None: ...


def load_reranker(settings: RagEngineSettings) -> Reranker | None:
    if settings.reranker == "cross-encoder":
        if settings.reranker_model_dir is None:
            raise ValueError("SAGEMESH_RERANKER=cross-encoder needs SAGEMESH_RERANKER_MODEL_DIR")
        from services.rag_engine.rerank_cross_encoder import CrossEncoderReranker

        return CrossEncoderReranker(settings.reranker_model_dir, threads=settings.inference_threads)
    if settings.reranker == "http":
        if not settings.reranker_url:
            raise ValueError("SAGEMESH_RERANKER=http needs SAGEMESH_RERANKER_URL")
        from services.rag_engine.rerank_http import HttpReranker

        return HttpReranker(
            settings.reranker_url, api=settings.reranker_api, api_key=settings.reranker_api_key or None,
            model=settings.reranker_api_model or None, timeout=settings.reranker_timeout_seconds,
        )
    return None
