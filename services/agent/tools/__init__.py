"""Tools the agent can call. Each tool is one module declaring a Tool: its
name, a description the planner reads, a JSON Schema of its input, and the
coroutine that runs it. registry.py validates, times and guards the calls."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any


class ToolError(Exception):
    """A tool could not do what was asked; the message goes into the trace."""


@dataclass(frozen=True)
class ToolContext:
    """What a call knows of the run it belongs to."""

    # Knowledge bases the run may search; empty for all of the caller's tenant.
    kb_ids: tuple[str, ...] = ()


@dataclass(frozen=True)
class Tool:
    name: str
    description: str
    input_schema: dict[str, Any]
    run: Callable[[dict[str, Any], ToolContext], Awaitable[Any]]
    # Longest one call may take.
    timeout_seconds: float = 10.0
    enabled: bool = True
    examples: list[dict[str, Any]] = field(default_factory=list)
