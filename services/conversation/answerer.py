"""What conversation needs to answer a message. answerer_rag.py asks the
rag_engine; the agent service will answer agent-mode conversations."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Protocol

from services.conversation.domain import AnswerResult, Message


class Answerer(Protocol):
    def stream(self, question: str, kb_ids: Sequence[str], history: Sequence[Message],
               use_rerank: bool) -> AsyncIterator[str | AnswerResult]:
        """The answer in pieces, then the whole AnswerResult. Raises meshkit
        errors (Unavailable when the answering service cannot be reached)."""
