"""Runs a task: plan, then each step's tool call, under the guards every run
has (max_steps, an overall deadline, no action repeated), reporting each
step as it happens and always ending with an outcome and its reason.

In plan-and-execute mode the trace shows the plan, then the actions; in
ReAct mode each action follows the thought that led to it.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from meshkit.timing import ms_since
from opentelemetry import trace

from services.agent import planner_rules
from services.agent.domain import Mode, Outcome, PlanStep, Stats, Status, StepType, TraceStep
from services.agent.tools import ToolContext, ToolError
from services.agent.tools.registry import ToolCallError, ToolRegistry


tracer = trace.get_tracer("sagemesh.agent")


class Planner(Protocol):
    def plan(self, task: str, tools: Sequence[str]) -> list[PlanStep]:
        """Raises planner_rules.NeedsModel when it cannot plan the task."""

    def arguments(self, step: PlanStep, trace: Sequence[TraceStep]) -> dict[str, Any]:
        """The step's tool input; raises ToolError when earlier steps did not provide it."""

    def final_answer(self, task: str, trace: Sequence[TraceStep]) -> str: ...


class RulesPlanner:
    """planner_rules as a Planner."""

    def plan(self, task: str, tools: Sequence[str]) -> list[PlanStep]:
        return planner_rules.plan(task, tools)

    def arguments(self, step: PlanStep, trace: Sequence[TraceStep]) -> dict[str, Any]:
        if step.derive:
            return {"expression": planner_rules.derived_expression(step, trace)}
        return dict(step.arguments or {})

    def final_answer(self, task: str, trace: Sequence[TraceStep]) -> str:
        return planner_rules.final_answer(task, trace)


@dataclass(frozen=True)
class Limits:
    max_steps: int = 10
    deadline_seconds: float = 60.0


Event = list[PlanStep] | TraceStep | tuple[Outcome, Stats]



async def run_events(work: Callable[[Callable[[Event], None]], Awaitable[Outcome]], limits: Limits,
                     trace: list[TraceStep], stats: Stats, result_so_far: Callable[[], str]) -> AsyncIterator[Event]:
    """What `work` emits, as it emits it, then (its outcome, stats). Past the
    deadline the run is STOPPED with `result_so_far()`.

    The work runs in a task of its own so that its deadline (asyncio.timeout)
    covers only its own awaits, never the consumer's between two events.
    """
    started = time.perf_counter()
    events: asyncio.Queue[Event | None] = asyncio.Queue()
    worker = asyncio.create_task(work(events.put_nowait))
    worker.add_done_callback(lambda _: events.put_nowait(None))
    try:
        while (event := await events.get()) is not None:
            yield event
        try:
            outcome = worker.result()
        except TimeoutError:
            outcome = Outcome(Status.STOPPED, f"the deadline of {limits.deadline_seconds:g} s was reached",
                              result_so_far())
    finally:
        worker.cancel()
    stats.steps, stats.duration_ms = len(trace), ms_since(started)
    yield outcome, stats


class Executor:
    def __init__(self, registry: ToolRegistry, planner: Planner) -> None:
        self.registry = registry
        self.planner = planner

    async def run(self, task: str, mode: Mode, tools: Sequence[str], limits: Limits, context: ToolContext,
                  reflect: bool = False) -> AsyncIterator[Event]:
        """The plan, each trace step as it happens, then (outcome, stats)."""
        trace: list[TraceStep] = []
        stats = Stats()
        async for event in run_events(
                lambda emit: self._steps(task, mode, tools, limits, context, reflect, trace, stats, emit),
                limits, trace, stats, lambda: self.planner.final_answer(task, trace)):
            yield event

    async def _steps(self, task, mode, tools, limits, context, reflect, trace, stats, emit) -> Outcome:
        def record(step: TraceStep) -> TraceStep:
            trace.append(step)
            emit(step)
            return step

        async with asyncio.timeout(limits.deadline_seconds):
            try:
                plan = self.planner.plan(task, tools)
            except planner_rules.NeedsModel as error:
                return Outcome(Status.FAILED, str(error), "")
            emit(plan)
            record(TraceStep(len(trace) + 1, StepType.PLAN,
                             thought="; ".join(f"{s.step}. {s.description}" for s in plan)))
            seen: set[str] = set()
            last_error = ""
            for actions, step in enumerate(plan):
                if actions == limits.max_steps:
                    return Outcome(Status.STOPPED, f"max_steps ({limits.max_steps}) reached with "
                                   f"{len(plan) - actions} planned steps left", self.planner.final_answer(task, trace))
                if mode is Mode.REACT:
                    record(TraceStep(len(trace) + 1, StepType.THOUGHT,
                                     thought=f"Next I need to {step.description}, so I call {step.tool}."))
                with tracer.start_as_current_span("agent.step", attributes={"step": step.step, "tool": step.tool,
                                                                          "mode": mode.value}) as span:
                    # Reported once it has run, with what it observed.
                    action = TraceStep(0, StepType.ACTION, action=step.tool)
                    action_started = time.perf_counter()
                    try:
                        action.action_input = self.planner.arguments(step, trace)
                        signature = f"{step.tool} {json.dumps(action.action_input, sort_keys=True)}"
                        if signature in seen:
                            action.error = "the same action with the same input ran before"
                            return Outcome(Status.STOPPED, f"step {step.step} repeated an earlier action "
                                           f"({signature})", self.planner.final_answer(task, trace))
                        seen.add(signature)
                        stats.tool_calls += 1
                        result = await self.registry.call(step.tool, action.action_input, context)
                        action.observation = json.dumps(result, ensure_ascii=False, default=str)
                        last_error = ""
                    except (ToolError, ToolCallError) as error:
                        action.error = f"{getattr(error, 'kind', 'refused')}: {error}"
                        last_error = f"step {step.step} ({step.tool}) failed: {error}"
                    finally:
                        action.latency_ms = ms_since(action_started)
                        action.step = len(trace) + 1
                        record(action)
                    span.set_attribute("outcome", action.error.split(":")[0] if action.error else "ok")
                if action.error and reflect:
                    record(TraceStep(len(trace) + 1, StepType.REFLECTION,
                                     thought=f"{last_error}. Later steps that need its result will fail too."))
            result = self.planner.final_answer(task, trace)
            if last_error:
                return Outcome(Status.FAILED, last_error, result if any(s.observation for s in trace) else "")
            record(TraceStep(len(trace) + 1, StepType.FINAL_ANSWER, thought=result))
            return Outcome(Status.COMPLETED, "every planned step ran", result)
