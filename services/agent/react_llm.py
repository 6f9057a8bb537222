"""ReAct with a reasoning model: the model thinks, calls tools through native
tool calling, reads what they return, and repeats until it answers, under the
same guards as every run (max_steps, the deadline, no repeated action)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence

from opentelemetry import trace

from services.agent.domain import Outcome, Stats, Status, StepType, TraceStep
from services.agent.executor import Event, Limits, run_events
from services.agent.reasoner_openai import ChatReasoner, Turn
from services.agent.tool_calls import ModelToolCalls
from services.agent.tools import Tool, ToolContext
from services.agent.tools.registry import ToolRegistry

tracer = trace.get_tracer("sagemesh.agent")

SYSTEM = """\
You carry out the user's task step by step with the tools you are given. Before each tool call, say \
briefly why you make it. Use knowledge_base for facts in the user's documents and calculator for any \
arithmetic, never mental math. When you have the result, answer with it and stop calling tools. If the \
tools cannot do the task, say so plainly."""

REFLECT = """\
The last tool call failed. In one or two sentences, say why it failed and what you will do instead. \
Do not call a tool in this reply."""


async def react(task: str, reasoner: ChatReasoner, registry: ToolRegistry, tools: Sequence[Tool], limits: Limits,
                context: ToolContext, reflect: bool = False) -> AsyncIterator[Event]:
    """Each trace step as it happens, then (outcome, stats)."""
    trace: list[TraceStep] = []
    stats = Stats()
    answered: list[str] = []  # what the model said last, the result when a guard stops it
    async for event in run_events(
            lambda emit: _loop(task, reasoner, registry, tools, limits, context, reflect, trace, stats, answered,
                               emit),
            limits, trace, stats, lambda: answered[-1] if answered else ""):
        yield event


async def _loop(task, reasoner, registry, tools, limits, context, reflect, trace, stats, answered, emit) -> Outcome:
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": task}]
    calls = ModelToolCalls(registry, tools, context, stats)

    async def ask(offered: Sequence[Tool]) -> Turn:
        turn = await reasoner.next(messages, offered)
        stats.count_model_call(turn.prompt_tokens, turn.completion_tokens, turn.cost_usd)
        messages.append(turn.as_message())
        return turn

    def record(step: TraceStep) -> None:
        step.step = len(trace) + 1
        trace.append(step)
        emit(step)

    async with asyncio.timeout(limits.deadline_seconds):
        while True:
            last_answer = answered[-1] if answered else ""
            if stats.tool_calls >= limits.max_steps:
                return Outcome(Status.STOPPED, f"max_steps ({limits.max_steps}) reached", last_answer)
            turn = await ask(tools)
            if not turn.tool_calls:
                record(TraceStep(0, StepType.FINAL_ANSWER, thought=turn.content))
                return Outcome(Status.COMPLETED, f"{turn.model} answered", turn.content)
            if turn.content:
                answered.append(turn.content)
                record(TraceStep(0, StepType.THOUGHT, thought=turn.content))
            failed = False
            for call in turn.tool_calls:
                with tracer.start_as_current_span("agent.step", attributes={"step": len(trace) + 1,
                                                                            "tool": call.name, "mode": "react"}):
                    step, repeated = await calls.make(call)
                record(step)
                failed = failed or bool(step.error)
                messages.append({"role": "tool", "tool_call_id": call.id,
                                 "content": step.observation or f"error: {step.error}"})
                if repeated:
                    return Outcome(Status.STOPPED, f"the model repeated an earlier action ({call.name})",
                                   answered[-1] if answered else "")
            if failed and reflect:
                messages.append({"role": "user", "content": REFLECT})
                record(TraceStep(0, StepType.REFLECTION, thought=(await ask(())).content))
