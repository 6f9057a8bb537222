"""What services that take knowledge-base ids (conversation, agent) need to
know of them: that each exists in the caller's tenant.
knowledge_bases_grpc.py asks the knowledge service."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from meshkit.errors import NotFound


class KnowledgeBases(Protocol):
    async def missing(self, kb_ids: Sequence[str]) -> list[str]:
        """The ids among `kb_ids` that are no knowledge base of the caller's tenant.
        Raises meshkit errors (Unavailable when the knowledge service cannot be reached)."""


async def require_existing(bases: KnowledgeBases, kb_ids: tuple[str, ...]) -> tuple[str, ...]:
    """`kb_ids` when all exist, else NotFound naming the missing ones. Another
    tenant's base is as missing as one that never was: nothing tells them apart."""
    if kb_ids and (missing := await bases.missing(kb_ids)):
        raise NotFound(f"knowledge base {', '.join(repr(k) for k in missing)} not found")
    return kb_ids
