"""What conversation needs to know of knowledge bases: that the ones a
conversation names exist in the caller's tenant. knowledge_bases_grpc.py asks
the knowledge service."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol


class KnowledgeBases(Protocol):
    async def missing(self, kb_ids: Sequence[str]) -> list[str]:
        """The ids among `kb_ids` that are no knowledge base of the caller's tenant.
        Raises meshkit errors (Unavailable when the knowledge service cannot be reached)."""
