"""Plan-and-execute with a reasoning model.

The model writes the plan (one tool per step). Each step's tool input is asked
for only when the step runs, so that it can use what earlier steps found. When
a step fails the model plans the rest again (at most `max_replans` times), and
at the end it writes the answer from what the steps observed. The guards are
those of every run: max_steps, the deadline, no repeated action.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Sequence
from typing import Any

from opentelemetry import trace

from services.agent.domain import Outcome, PlanStep, Stats, Status, StepType, TraceStep
from services.agent.executor import Event, Limits, run_events
from services.agent.reasoner_openai import ChatReasoner
from services.agent.tool_calls import ModelToolCalls
from services.agent.tools import Tool, ToolContext
from services.agent.tools.registry import ToolRegistry

tracer = trace.get_tracer("sagemesh.agent")

PLAN = """\
You plan how to carry out the user's task with these tools:
{tools}
Reply with JSON only, in this form: {{"steps": [{{"description": "what the step does", "tool": "tool name"}}]}}
Each step makes at most one tool call; a step that only needs thinking has "tool": "". Use knowledge_base \
for facts in the user's documents and calculator for any arithmetic. At most {max_steps} steps, in the \
order they must run."""

STEP = """\
You carry out one step of a plan. Call the tool offered with the input the step needs, taking figures \
from the results so far. A step without a tool: answer it in one or two sentences."""

REFLECT = """\
A step of the plan failed. In one or two sentences, say why it failed and what should be done instead."""

ANSWER = """\
Answer the user's task from the results of the steps that ran. Give the result plainly with the figures \
it rests on. If the results do not answer the task, say so."""

# Observations are cut in the model's briefing; the trace keeps them whole.
_BRIEF_OBSERVATION_CHARS = 2000
_JSON_OBJECT = re.compile(r"\{.*\}", re.S)


class PlanRejected(Exception):
    """The model's plan cannot be run; the message says why."""


def parse_plan(text: str, tools: Sequence[str], first_step: int = 1) -> list[PlanStep]:
    # Models wrap JSON in prose or a code fence even when told not to.
    found = _JSON_OBJECT.search(text)
    if not found:
        raise PlanRejected("it holds no JSON object")
    try:
        data = json.loads(found.group())
    except json.JSONDecodeError as error:
        raise PlanRejected(f"it is not valid JSON ({error})") from None
    steps = data.get("steps") if isinstance(data, dict) else None
    if not isinstance(steps, list) or not steps:
        raise PlanRejected('it has no "steps" list')
    plan = []
    for number, step in enumerate(steps, first_step):
        description = step.get("description") if isinstance(step, dict) else None
        if not isinstance(description, str) or not description.strip():
            raise PlanRejected(f"step {number} has no description")
        tool = step.get("tool") or ""
        if tool not in ("", *tools):
            raise PlanRejected(f"step {number} uses {tool!r}, which is not among the tools ({', '.join(tools)})")
        plan.append(PlanStep(number, description.strip(), tool))
    return plan


def _plan_text(plan: Sequence[PlanStep]) -> str:
    return "\n".join(f"{s.step}. {s.description}" + (f" [{s.tool}]" if s.tool else "") for s in plan)


def _brief(task: str, plan: Sequence[PlanStep], trace: Sequence[TraceStep]) -> str:
    """What the model is told at each step: the task, the plan and the results so far."""
    results = []
    for step in trace:
        if step.type is StepType.ACTION:
            outcome = step.observation or f"error: {step.error}"
            results.append(f"- {step.action}({json.dumps(step.action_input, ensure_ascii=False)}) -> "
                           f"{outcome[:_BRIEF_OBSERVATION_CHARS]}")
        elif step.type is StepType.THOUGHT:
            results.append(f"- {step.thought}")
    return (f"Task: {task}\n\nPlan:\n{_plan_text(plan)}\n\nResults so far:\n"
            + ("\n".join(results) or "(none yet)"))


class ModelPlanExecutor:
    def __init__(self, reasoner: ChatReasoner, registry: ToolRegistry, tools: Sequence[Tool], limits: Limits,
                 context: ToolContext, reflect: bool = False, max_replans: int = 2) -> None:
        self.reasoner = reasoner
        self.tools = {tool.name: tool for tool in tools}
        self.limits = limits
        self.reflect = reflect
        self.max_replans = max_replans
        self.trace: list[TraceStep] = []
        self.stats = Stats()
        self.calls = ModelToolCalls(registry, tools, context, self.stats)

    async def run(self, task: str) -> AsyncIterator[Event]:
        """The plan (again after each re-plan), each trace step as it happens, then (outcome, stats)."""
        async for event in run_events(lambda emit: self._run(task, emit), self.limits, self.trace, self.stats,
                                      lambda: ""):
            yield event

    async def _ask(self, system: str, user: str, tools: Sequence[Tool] = ()):
        turn = await self.reasoner.next([{"role": "system", "content": system}, {"role": "user", "content": user}],
                                        tools)
        self.stats.count_model_call(turn.prompt_tokens, turn.completion_tokens, turn.cost_usd)
        return turn

    def _record(self, emit, step: TraceStep) -> None:
        step.step = len(self.trace) + 1
        self.trace.append(step)
        emit(step)

    async def _run(self, task: str, emit) -> Outcome:
        async with asyncio.timeout(self.limits.deadline_seconds):
            try:
                plan = await self._write_plan(task, task, first_step=1)
            except PlanRejected as error:
                return Outcome(Status.FAILED, f"the model's plan could not be used: {error}", "")
            emit(plan)
            self._record(emit, TraceStep(0, StepType.PLAN, thought=_plan_text(plan)))
            replans = 0
            index = 0
            while index < len(plan):
                step = plan[index]
                if step.tool and self.stats.tool_calls >= self.limits.max_steps:
                    return Outcome(Status.STOPPED, f"max_steps ({self.limits.max_steps}) reached with "
                                   f"{len(plan) - index} planned steps left", "")
                with tracer.start_as_current_span("agent.step", attributes={
                        "step": step.step, "tool": step.tool, "mode": "plan_execute"}) as span:
                    error, repeated = await self._carry_out(task, plan, step, emit)
                    span.set_attribute("outcome", error.split(":")[0] if error else "ok")
                if repeated:
                    return Outcome(Status.STOPPED, f"step {step.step} repeated an earlier action ({step.tool})", "")
                index += 1
                if not error:
                    continue
                if self.reflect:
                    reflection = await self._ask(REFLECT, f"{_brief(task, plan, self.trace)}\n\nStep {step.step} "
                                                          f"failed: {error}")
                    self._record(emit, TraceStep(0, StepType.REFLECTION, thought=reflection.content))
                failure = f"step {step.step} ({step.tool or 'no tool'}) failed: {error}"
                if replans == self.max_replans:
                    return Outcome(Status.FAILED, f"{failure}; the plan was made again {replans} times", "")
                replans += 1
                try:
                    rest = await self._write_plan(
                        task, f"{_brief(task, plan, self.trace)}\n\nStep {step.step} failed: {error}\nPlan again "
                              f"the steps still needed to finish the task; the results so far are kept.",
                        first_step=step.step + 1)
                except PlanRejected as rejected:
                    return Outcome(Status.FAILED, f"{failure}, and the model's new plan could not be used: "
                                   f"{rejected}", "")
                plan = plan[:index] + rest
                emit(plan)
                self._record(emit, TraceStep(0, StepType.PLAN, thought=f"Re-planned after {failure}:\n"
                                                                       f"{_plan_text(rest)}"))
            answer = await self._ask(ANSWER, _brief(task, plan, self.trace))
            self._record(emit, TraceStep(0, StepType.FINAL_ANSWER, thought=answer.content))
            return Outcome(Status.COMPLETED, "every planned step ran", answer.content)

    async def _write_plan(self, task: str, request: str, first_step: int) -> list[PlanStep]:
        """The model's plan; a plan that cannot be run is sent back once with the reason."""
        system = PLAN.format(tools="\n".join(f"- {t.name}: {t.description}" for t in self.tools.values()),
                             max_steps=self.limits.max_steps)
        messages: list[dict[str, Any]] = [{"role": "system", "content": system}, {"role": "user", "content": request}]
        for attempt in range(2):
            turn = await self.reasoner.next(messages)
            self.stats.count_model_call(turn.prompt_tokens, turn.completion_tokens, turn.cost_usd)
            try:
                return parse_plan(turn.content, list(self.tools), first_step)
            except PlanRejected as error:
                if attempt == 1:
                    raise
                messages += [turn.as_message(),
                             {"role": "user", "content": f"That plan cannot be used: {error}. Reply with the JSON "
                                                         f"plan only."}]
        raise AssertionError("unreachable")

    async def _carry_out(self, task: str, plan: Sequence[PlanStep], step: PlanStep, emit) -> tuple[str, bool]:
        """Runs one step; returns its error ("" when it worked) and whether it repeated an earlier action."""
        brief = f"{_brief(task, plan, self.trace)}\n\nNow carry out step {step.step}: {step.description}"
        if not step.tool:
            turn = await self._ask(STEP, brief)
            self._record(emit, TraceStep(0, StepType.THOUGHT, thought=turn.content))
            return "", False
        turn = await self._ask(STEP, brief, [self.tools[step.tool]])
        if not turn.tool_calls:
            # The model found the step cannot be done with what is known.
            self._record(emit, TraceStep(0, StepType.THOUGHT, thought=turn.content))
            return f"the model did not call {step.tool}: {turn.content}", False
        if turn.content:
            self._record(emit, TraceStep(0, StepType.THOUGHT, thought=turn.content))
        errors = []
        for call in turn.tool_calls:
            if self.stats.tool_calls >= self.limits.max_steps:
                break  # the run stops at the next tool step
            action, repeated = await self.calls.make(call)
            self._record(emit, action)
            if repeated:
                return action.error, True
            if action.error:
                errors.append(action.error)
        return "; ".join(errors), False
