"""Agent's domain logic: checks a task's request, runs it, keeps the run for
its user. Knows nothing of gRPC."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from meshkit.errors import InvalidArgument, NotFound
from meshkit.ids import knowledge_base_ids
from meshkit.knowledge_bases import KnowledgeBases, require_existing
from services.agent.domain import Mode, PlanStep, Stats, Status, StepType, TraceStep
from services.agent.executor import Executor, Limits
from services.agent.metrics import record_run
from services.agent.plan_execute_llm import ModelPlanExecutor
from services.agent.planner_rules import NeedsModel
from services.agent.react_llm import react
from services.agent.reasoner_openai import ChatReasoner
from services.agent.store import RunStore
from services.agent.tools import Tool, ToolContext
from services.agent.tools.registry import ToolRegistry

MAX_TASK_CHARS = 4000


@dataclass(frozen=True)
class AgentsConfig:
    default_max_steps: int = 10
    max_steps_limit: int = 50
    deadline_seconds: float = 60.0
    # How often a model-written plan is made again after a step fails.
    max_replans: int = 2


@dataclass(frozen=True)
class Caller:
    tenant_id: str
    user_id: str


@dataclass
class Run:
    id: str
    task: str
    mode: Mode
    status: Status
    reason: str
    plan: list[PlanStep]
    trace: list[TraceStep]
    result: str
    stats: Stats
    created_at: datetime


def run_to_json(run: Run) -> dict[str, Any]:
    data = dataclasses.asdict(run)
    data.update(mode=run.mode.value, status=run.status.value, created_at=run.created_at.isoformat(),
                trace=[{**step, "type": run.trace[i].type.value} for i, step in enumerate(data["trace"])])
    return data


def run_from_json(data: dict[str, Any]) -> Run:
    return Run(
        id=data["id"], task=data["task"], mode=Mode(data["mode"]), status=Status(data["status"]),
        reason=data["reason"], plan=[PlanStep(**step) for step in data["plan"]],
        trace=[TraceStep(**{**step, "type": StepType(step["type"])}) for step in data["trace"]],
        result=data["result"], stats=Stats(**data["stats"]), created_at=datetime.fromisoformat(data["created_at"]),
    )


class Agents:
    def __init__(self, registry: ToolRegistry, executor: Executor, store: RunStore, knowledge_bases: KnowledgeBases,
                 config: AgentsConfig, reasoner: ChatReasoner | None = None) -> None:
        self.registry = registry
        self.executor = executor
        self.store = store
        self.knowledge_bases = knowledge_bases
        self.config = config
        self.reasoner = reasoner
        self._running: set[asyncio.Task] = set()

    def _needs_model(self, task: str, mode: Mode, tools: list[str]) -> bool:
        """ReAct runs on the model when there is one; a plan-and-execute task
        goes to it only when the offline planner cannot plan it."""
        if self.reasoner is None:
            return False
        if mode is Mode.REACT:
            return True
        try:
            self.executor.planner.plan(task, tools)
        except NeedsModel:
            return True
        return False

    def tools(self) -> list[tuple[Tool, str]]:
        return self.registry.tools()

    def _tools(self, wanted: Sequence[str]) -> list[str]:
        enabled = [tool.name for tool in self.registry.enabled()]
        unknown = sorted(set(wanted) - set(enabled))
        if unknown:
            raise InvalidArgument(f"no enabled tool named {', '.join(unknown)}; enabled: {', '.join(enabled)}",
                                  field="tools")
        return list(dict.fromkeys(wanted)) or enabled

    async def execute(self, caller: Caller, task: str, mode: Mode = Mode.PLAN_EXECUTE, tools: Sequence[str] = (),
                      max_steps: int = 0, reflect: bool = False,
                      kb_ids: Sequence[str] = ()) -> AsyncIterator[list[PlanStep] | TraceStep | Run]:
        """The plan, each trace step as it happens, then the kept Run."""
        task = task.strip()
        if not task:
            raise InvalidArgument("is required", field="task")
        if len(task) > MAX_TASK_CHARS:
            raise InvalidArgument(f"at most {MAX_TASK_CHARS} characters", field="task")
        max_steps = max_steps or self.config.default_max_steps
        if not 1 <= max_steps <= self.config.max_steps_limit:
            raise InvalidArgument(f"must be between 1 and {self.config.max_steps_limit}", field="max_steps")
        allowed = self._tools(tools)
        kb_ids = await require_existing(self.knowledge_bases, knowledge_base_ids(kb_ids))
        created_at = datetime.now(timezone.utc)
        limits = Limits(max_steps, self.config.deadline_seconds)
        context = ToolContext(kb_ids=kb_ids)
        if self._needs_model(task, mode, allowed):
            offered = [t for t in self.registry.enabled() if t.name in allowed]
            if mode is Mode.REACT:
                events = react(task, self.reasoner, self.registry, offered, limits, context, reflect)
            else:
                events = ModelPlanExecutor(self.reasoner, self.registry, offered, limits, context, reflect,
                                           self.config.max_replans).run(task)
        else:
            events = self.executor.run(task, mode, allowed, limits, context, reflect)
        # The run goes on in a task of its own: a caller that leaves mid-run
        # finds it later with GetRun.
        queue: asyncio.Queue[list[PlanStep] | TraceStep | Run | BaseException] = asyncio.Queue()
        running = asyncio.create_task(self._keep(caller, task, mode, created_at, events, queue))
        self._running.add(running)
        running.add_done_callback(self._running.discard)
        while True:
            event = await queue.get()
            if isinstance(event, BaseException):
                raise event
            yield event
            if isinstance(event, Run):
                return

    async def _keep(self, caller: Caller, task: str, mode: Mode, created_at: datetime, events,
                    queue: asyncio.Queue) -> None:
        plan: list[PlanStep] = []
        trace: list[TraceStep] = []
        try:
            async for event in events:
                if isinstance(event, tuple):
                    outcome, stats = event
                    run = Run(str(uuid.uuid4()), task, mode, outcome.status, outcome.reason, plan, trace,
                              outcome.result, stats, created_at)
                    await self.store.save(run.id, caller.tenant_id, caller.user_id, task, run_to_json(run))
                    record_run(run)
                    queue.put_nowait(run)
                    return
                if isinstance(event, list):
                    plan = event
                else:
                    trace.append(event)
                queue.put_nowait(event)
        except Exception as error:
            queue.put_nowait(error)

    async def close(self) -> None:
        """Lets the runs under way finish and be kept (each is bounded by its deadline)."""
        if self._running:
            await asyncio.wait(self._running, timeout=self.config.deadline_seconds)

    async def get(self, caller: Caller, run_id: str) -> Run:
        found = await self.store.run(caller.user_id, run_id) if run_id else None
        if found is None:
            raise NotFound(f"run {run_id!r} not found")
        return run_from_json(found)
