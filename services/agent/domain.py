"""An agent run: its plan, the trace of what it did, and how it ended."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any


class Mode(enum.Enum):
    PLAN_EXECUTE = "plan_execute"
    REACT = "react"


class Status(enum.Enum):
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    # Stopped by a guard: max_steps, the deadline, or a repeated action.
    STOPPED = "stopped"


class StepType(enum.Enum):
    PLAN = "plan"
    THOUGHT = "thought"
    ACTION = "action"
    REFLECTION = "reflection"
    FINAL_ANSWER = "final_answer"


@dataclass(frozen=True)
class PlanStep:
    step: int
    description: str
    tool: str = ""
    # The tool's input, when known before the run; a step that works on
    # earlier results has its input made when it runs.
    arguments: dict[str, Any] | None = None
    # For such a step: how to make its input from earlier observations.
    derive: str = ""


@dataclass
class TraceStep:
    step: int
    type: StepType
    thought: str = ""
    action: str = ""
    action_input: dict[str, Any] = field(default_factory=dict)
    observation: str = ""
    error: str = ""
    latency_ms: float = 0.0


@dataclass
class Stats:
    steps: int = 0
    tool_calls: int = 0
    duration_ms: float = 0.0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0

    def count_model_call(self, prompt_tokens: int, completion_tokens: int, cost_usd: float) -> None:
        self.prompt_tokens += prompt_tokens
        self.completion_tokens += completion_tokens
        self.cost_usd += cost_usd


@dataclass
class Outcome:
    status: Status
    reason: str
    result: str
