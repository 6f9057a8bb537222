"""ReAct with a reasoning model: the model thinks, calls tools through native
tool calling, reads what they return, and repeats until it answers, under the
same guards as every run (max_steps, the deadline, no repeated action)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Sequence

from services.agent.domain import Outcome, Stats, Status, StepType, TraceStep
from services.agent.executor import Event, Limits
from services.agent.reasoner_openai import ChatReasoner
from services.agent.tools import Tool, ToolContext
from services.agent.tools.registry import ToolCallError, ToolRegistry

SYSTEM = """\
You carry out the user's task step by step with the tools you are given. Before each tool call, say \
briefly why you make it. Use knowledge_base for facts in the user's documents and calculator for any \
arithmetic, never mental math. When you have the result, answer with it and stop calling tools. If the \
tools cannot do the task, say so plainly."""


def _ms_since(started: float) -> float:
    return (time.perf_counter() - started) * 1000


async def react(task: str, reasoner: ChatReasoner, registry: ToolRegistry, tools: Sequence[Tool], limits: Limits,
                context: ToolContext) -> AsyncIterator[Event]:
    """Each trace step as it happens, then (outcome, stats)."""
    started = time.perf_counter()
    trace: list[TraceStep] = []
    stats = Stats()
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": task}]
    seen: set[str] = set()
    outcome = None
    last_answer = ""
    try:
        async with asyncio.timeout(limits.deadline_seconds):
            while outcome is None:
                if stats.tool_calls >= limits.max_steps:
                    outcome = Outcome(Status.STOPPED, f"max_steps ({limits.max_steps}) reached", last_answer)
                    break
                turn = await reasoner.next(messages, tools)
                stats.prompt_tokens += turn.prompt_tokens
                stats.completion_tokens += turn.completion_tokens
                messages.append(turn.as_message())
                if not turn.tool_calls:
                    step = TraceStep(len(trace) + 1, StepType.FINAL_ANSWER, thought=turn.content)
                    trace.append(step)
                    yield step
                    outcome = Outcome(Status.COMPLETED, f"{turn.model} answered", turn.content)
                    break
                if turn.content:
                    last_answer = turn.content
                    step = TraceStep(len(trace) + 1, StepType.THOUGHT, thought=turn.content)
                    trace.append(step)
                    yield step
                for call in turn.tool_calls:
                    step, repeated = await _act(call, registry, context, seen, stats)
                    step.step = len(trace) + 1
                    trace.append(step)
                    yield step
                    messages.append({"role": "tool", "tool_call_id": call.id,
                                     "content": step.observation or f"error: {step.error}"})
                    if repeated:
                        outcome = Outcome(Status.STOPPED, f"the model repeated an earlier action ({call.name})",
                                          last_answer)
                        break
    except TimeoutError:
        outcome = Outcome(Status.STOPPED, f"the deadline of {limits.deadline_seconds:g} s was reached", last_answer)
    stats.steps, stats.duration_ms = len(trace), _ms_since(started)
    yield outcome, stats


async def _act(call, registry: ToolRegistry, context: ToolContext, seen: set[str],
               stats: Stats) -> tuple[TraceStep, bool]:
    step = TraceStep(0, StepType.ACTION, action=call.name)
    started = time.perf_counter()
    try:
        arguments = json.loads(call.arguments)
    except json.JSONDecodeError as error:
        step.error = f"invalid_input: the arguments are not JSON ({error})"
        return step, False
    step.action_input = arguments if isinstance(arguments, dict) else {"value": arguments}
    signature = f"{call.name} {json.dumps(arguments, sort_keys=True)}"
    if signature in seen:
        step.error = "the same action with the same input ran before"
        return step, True
    seen.add(signature)
    stats.tool_calls += 1
    try:
        result = await registry.call(call.name, arguments, context)
        step.observation = json.dumps(result, ensure_ascii=False, default=str)
    except ToolCallError as error:
        step.error = f"{error.kind}: {error.message}"
    step.latency_ms = _ms_since(started)
    return step, False
