"""The tool calls a model asks for in one run, made under the guards every
run has: only the tools offered to it, arguments that are JSON, and never the
same call twice."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence

from meshkit.timing import ms_since
from services.agent.domain import Stats, StepType, TraceStep
from services.agent.reasoner_openai import ToolCall
from services.agent.tools import Tool, ToolContext
from services.agent.tools.registry import ToolCallError, ToolRegistry


class ModelToolCalls:
    def __init__(self, registry: ToolRegistry, offered: Sequence[Tool], context: ToolContext, stats: Stats) -> None:
        self.registry = registry
        self.offered = {tool.name for tool in offered}
        self.context = context
        self.stats = stats
        self._seen: set[str] = set()

    async def make(self, call: ToolCall) -> tuple[TraceStep, bool]:
        """The call's action step, and whether it repeated an earlier call (then it was not made)."""
        step = TraceStep(0, StepType.ACTION, action=call.name)
        started = time.perf_counter()
        if call.name not in self.offered:
            step.error = f"not_offered: {call.name!r} is not among this run's tools ({', '.join(sorted(self.offered))})"
            return step, False
        try:
            arguments = json.loads(call.arguments)
        except json.JSONDecodeError as error:
            step.error = f"invalid_input: the arguments are not JSON ({error})"
            return step, False
        step.action_input = arguments if isinstance(arguments, dict) else {"value": arguments}
        signature = f"{call.name} {json.dumps(arguments, sort_keys=True)}"
        if signature in self._seen:
            step.error = "the same action with the same input ran before"
            return step, True
        self._seen.add(signature)
        self.stats.tool_calls += 1
        try:
            result = await self.registry.call(call.name, arguments, self.context)
            step.observation = json.dumps(result, ensure_ascii=False, default=str)
        except ToolCallError as error:
            step.error = f"{error.kind}: {error.message}"
        step.latency_ms = ms_since(started)
        return step, False
