"""Embedding models behind one interface."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol


class Embedder(Protocol):
    name: str
    dimension: int

    async def embed_documents(self, texts: Sequence[str]) -> list[list[float]]:
        """Unit-length vectors for passages, in order."""

    async def embed_query(self, text: str) -> list[float]:
        """A unit-length vector for a search query."""
