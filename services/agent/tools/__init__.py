"""Tools the agent can call. Each tool is one module declaring a Tool: its
name, a description the planner reads, a JSON Schema of its input, and what
runs it: a coroutine, or for CPU-bound work a function the registry runs in a
sandbox. registry.py validates, times and guards the calls."""

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
    # A tool that awaits (I/O) gives `run`; one that computes gives `compute` instead: a module-level
    # function of the input alone (it, its result and its ToolErrors picklable), which the registry
    # runs in a worker process under CPU-time and memory limits, killed at the timeout. On the event
    # loop, code that never awaits cannot be interrupted and would stall every other call.
    run: Callable[[dict[str, Any], ToolContext], Awaitable[Any]] | None = None
    compute: Callable[[dict[str, Any]], Any] | None = None
    # Longest one call may take.
    timeout_seconds: float = 10.0
    enabled: bool = True
    examples: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if (self.run is None) == (self.compute is None):
            raise ValueError(f"the tool {self.name!r} needs either run or compute, not both or neither")

    @property
    def sandboxed(self) -> bool:
        return self.compute is not None
