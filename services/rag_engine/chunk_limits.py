"""How much of a chunk record an index keeps. The limits are a Milvus
server's VARCHAR lengths (it counts UTF-8 bytes); every vector index cuts to
them, so a chunk reads the same whichever backend stored it."""

from __future__ import annotations

from dataclasses import replace

from services.rag_engine.domain import Chunk

MAX_TEXT = 65_535
MAX_TITLE = 1000
MAX_HEADINGS = 64


def clipped(text: str, limit: int) -> str:
    """text cut to at most `limit` UTF-8 bytes, never inside a character."""
    encoded = text.encode()
    return text if len(encoded) <= limit else encoded[:limit].decode(errors="ignore")


def within_limits(chunk: Chunk) -> Chunk:
    return replace(
        chunk, text=clipped(chunk.text, MAX_TEXT), title=clipped(chunk.title, MAX_TITLE),
        headings=tuple(clipped(h, MAX_TITLE) for h in chunk.headings[:MAX_HEADINGS]),
    )
