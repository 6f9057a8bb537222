"""Conversations, their messages, and what an answer brings back."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


class Mode(enum.Enum):
    RAG = "rag"
    AGENT = "agent"


class Role(enum.Enum):
    USER = "user"
    ASSISTANT = "assistant"


@dataclass(frozen=True)
class Conversation:
    id: str
    tenant_id: str
    user_id: str
    title: str
    mode: Mode
    kb_ids: tuple[str, ...]
    created_at: datetime
    updated_at: datetime
    message_count: int = 0


@dataclass(frozen=True)
class Message:
    id: str
    conversation_id: str
    role: Role
    content: str
    created_at: datetime
    parent_id: str = ""
    # The answer's sources and metrics in the rag_engine's JSON form; kept as
    # they came, shown as they were.
    sources: list[dict[str, Any]] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class AnswerResult:
    text: str
    sources: list[dict[str, Any]]
    metrics: dict[str, Any]
