"""Runs of the offline planner and the executor's guards, with the real
calculator and a stand-in retriever (a fixed passage) behind knowledge_base;
and a run kept though its caller left."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import text

from meshkit import db
from services.agent.agents import Agents, AgentsConfig, Caller
from services.agent.domain import Mode, PlanStep, Status, StepType
from services.agent.executor import Executor, Limits, RulesPlanner
from services.agent.planner_rules import NeedsModel, plan
from services.agent.server import MIGRATIONS
from services.agent.store_sql import SqlRunStore
from services.agent.tools import Tool, ToolContext, current_time
from services.agent.tools.breaker import CircuitBreaker
from services.agent.tools.calculator import calculator_tool
from services.agent.tools.knowledge_base import knowledge_base_tool
from services.agent.tools.registry import ToolRegistry
from tests.fixtures.mesh import NoKnowledgeBasesStandIn

REPORT = "Revenue was 3.75 million euros in Q2 2024 and 4.2 million euros in Q3 2024."
TOOLS = ["calculator", "knowledge_base", "current_time"]


class StandInRetriever:
    """Answers every search with one passage from a quarterly report."""

    def __init__(self) -> None:
        self.queries: list[tuple[str, tuple[str, ...]]] = []

    async def retrieve(self, query, kb_ids, top_k):
        self.queries.append((query, tuple(kb_ids)))
        return [{"document_id": "d-q3", "chunk_id": "d-q3:0", "title": "Q3 report", "content": REPORT,
                 "page": 2, "score": 0.9}]


@pytest.fixture
def run(tool_sandbox):
    """Runs a task: its plans, trace, outcome and stats."""

    async def run(task: str, mode: Mode = Mode.PLAN_EXECUTE, registry: ToolRegistry | None = None,
                  planner=None, limits: Limits = Limits(), reflect: bool = False):
        registry = registry or ToolRegistry(
            [calculator_tool(), current_time.TOOL, knowledge_base_tool(StandInRetriever())], sandbox=tool_sandbox)
        events = [e async for e in Executor(registry, planner or RulesPlanner()).run(
            task, mode, TOOLS, limits, ToolContext(kb_ids=("kb-reports",)), reflect)]
        plans = [e for e in events if isinstance(e, list)]
        trace = [e for e in events if not isinstance(e, (list, tuple))]
        outcome, stats = events[-1]
        return plans, trace, outcome, stats

    return run


async def test_an_arithmetic_task_is_computed(run):
    plans, trace, outcome, stats = await run("What is (4.2 - 3.75) / 3.75 * 100?")
    assert [s.tool for s in plans[0]] == ["calculator"]
    assert outcome.status is Status.COMPLETED and outcome.result == "(4.2 - 3.75) / 3.75 * 100 = 12"
    assert [s.type for s in trace] == [StepType.PLAN, StepType.ACTION, StepType.FINAL_ANSWER]
    assert stats.tool_calls == 1 and stats.steps == 3 and trace[1].latency_ms > 0


async def test_a_lookup_task_answers_from_the_knowledge_base(run):
    _, trace, outcome, _ = await run("What was revenue in the third quarter according to our reports?")
    assert trace[1].action == "knowledge_base" and trace[1].action_input["query"].startswith("What was revenue")
    assert outcome.status is Status.COMPLETED and outcome.result == f"{REPORT} (Q3 report, page 2)"


async def test_a_lookup_and_a_computation_over_its_figures(run):
    task = "Look up last quarter's revenue figures in our reports and compute the growth rate"
    plans, trace, outcome, _ = await run(task)
    assert [s.tool for s in plans[0]] == ["knowledge_base", "calculator"]
    computed = [s for s in trace if s.action == "calculator"][0]
    assert computed.action_input == {"expression": "(4.2 - 3.75) / 3.75 * 100"}
    assert outcome.status is Status.COMPLETED and outcome.result == "(4.2 - 3.75) / 3.75 * 100 = 12"


async def test_react_mode_thinks_before_each_action(run):
    _, trace, outcome, _ = await run("Find the revenue in our reports and then compute the difference", Mode.REACT)
    assert [s.type for s in trace] == [StepType.PLAN, StepType.THOUGHT, StepType.ACTION, StepType.THOUGHT,
                                       StepType.ACTION, StepType.FINAL_ANSWER]
    assert outcome.result == "4.2 - 3.75 = 0.45"


def test_a_task_beyond_the_tools_is_refused_plainly():
    with pytest.raises(NeedsModel) as refused:
        plan("Book me a flight to Paris next Tuesday", TOOLS)
    assert "needs a language model" in str(refused.value)


async def test_an_unplannable_task_fails_with_its_reason(run):
    _, trace, outcome, _ = await run("Write a poem about spring")
    assert outcome.status is Status.FAILED and "needs a language model" in outcome.reason and trace == []


async def test_max_steps_stops_a_long_plan(run):
    _, trace, outcome, _ = await run("compute 1 + 1; compute 2 + 2; compute 3 + 3", limits=Limits(max_steps=2))
    assert outcome.status is Status.STOPPED and "max_steps (2)" in outcome.reason
    assert [s.action for s in trace if s.type is StepType.ACTION] == ["calculator", "calculator"]


async def test_a_repeated_action_is_stopped(run):
    _, trace, outcome, _ = await run("compute 2 + 2 and then compute 2 + 2")
    assert outcome.status is Status.STOPPED and "repeated an earlier action" in outcome.reason
    assert trace[-1].error and outcome.result == "2 + 2 = 4"


class EndlessPlanner(RulesPlanner):
    """A stand-in planner whose plan never ends, each step a slow tool call."""

    def plan(self, task, tools):
        return [PlanStep(i, f"wait {i}", "slow", {"n": i}) for i in range(1, 1000)]


def slow_tool() -> Tool:
    async def run(arguments, context):
        await asyncio.sleep(0.05)
        return {"waited": arguments["n"]}

    return Tool("slow", "Waits.", {"type": "object", "properties": {"n": {"type": "integer"}}}, run)


async def test_the_deadline_stops_a_looping_plan(run):
    _, trace, outcome, _ = await run("loop", registry=ToolRegistry([slow_tool()]), planner=EndlessPlanner(),
                                     limits=Limits(max_steps=1000, deadline_seconds=0.3))
    assert outcome.status is Status.STOPPED and "deadline of 0.3 s" in outcome.reason
    assert 2 <= len([s for s in trace if s.type is StepType.ACTION]) < 10


async def test_a_failing_tool_opens_its_breaker_and_the_run_reports_it(run):
    class DownRetriever:
        async def retrieve(self, query, kb_ids, top_k):
            raise ConnectionError("rag_engine unreachable")

    registry = ToolRegistry([knowledge_base_tool(DownRetriever())], breaker=lambda: CircuitBreaker(threshold=2))
    errors = []
    for attempt in range(3):
        _, trace, outcome, _ = await run(f"What does report {attempt} say?", registry=registry, reflect=True)
        errors.append(trace[1].error)
        assert outcome.status is Status.FAILED and "knowledge_base" in outcome.reason
        assert trace[2].type is StepType.REFLECTION
    assert errors[0].startswith("failed:") and errors[2].startswith("circuit_open:")


class BadInputPlanner(RulesPlanner):
    def plan(self, task, tools):
        return [PlanStep(1, "compute", "calculator", {"formula": "1 + 1"})]


async def test_invalid_tool_input_is_a_clear_error_in_the_trace(run):
    _, trace, outcome, _ = await run("anything", planner=BadInputPlanner())
    assert trace[1].error.startswith("invalid_input:") and "'expression' is a required property" in trace[1].error
    assert outcome.status is Status.FAILED


async def test_the_knowledge_base_tool_searches_the_runs_bases(run):
    retriever = StandInRetriever()
    registry = ToolRegistry([knowledge_base_tool(retriever)])
    await run("What do our reports say about revenue?", registry=registry)
    assert retriever.queries == [("What do our reports say about revenue?", ("kb-reports",))]


async def test_a_run_whose_caller_left_is_still_kept(tmp_path):
    engine = db.create_engine(f"sqlite:///{tmp_path / 'agent.db'}")
    await db.migrate(engine, MIGRATIONS, version_table="alembic_version_agent")
    registry = ToolRegistry([slow_tool()])
    store = SqlRunStore(engine)

    class ThreeWaits(RulesPlanner):
        def plan(self, task, tools):
            return [PlanStep(i, f"wait {i}", "slow", {"n": i}) for i in (1, 2, 3)]

    agents = Agents(registry, Executor(registry, ThreeWaits()), store, NoKnowledgeBasesStandIn(), AgentsConfig())
    caller = Caller("t1", "u1")
    events = agents.execute(caller, "wait three times", tools=["slow"])
    assert isinstance(await anext(events), list)  # the plan; then the caller leaves
    await events.aclose()
    await agents.close()
    async with engine.connect() as connection:
        run_id = await connection.scalar(text("SELECT id FROM agent_runs"))
    run = await agents.get(caller, run_id)
    assert run.status is Status.COMPLETED and [s.action_input for s in run.trace if s.action] == [
        {"n": 1}, {"n": 2}, {"n": 3}]
    await engine.dispose()
