"""The agent with a reasoning model: ReAct over native tool calls, and
plan-and-execute with the model's plan, its reflections and re-planning,
against a stand-in chat-completions server that scripts the model's turns."""

from __future__ import annotations

import json

import pytest

from sagemesh.agent.v1 import agent_pb2 as pb
from tests.agent.scripted_model import ScriptedModel, call, plan_turn, turn


async def test_react_calls_tools_the_model_asks_for_and_returns_its_answer(agent_with):
    model = ScriptedModel([
        turn("I will compute the growth.", [call("calculator", '{"expression": "(4.2 - 3.75) / 3.75 * 100"}', "c1")]),
        turn(None, [call("calculator", '{"formula": "1"}', "c2")]),
        turn("Revenue grew 12% from Q2 to Q3."),
    ])
    agent = await agent_with(model)
    stub, auth = agent.stub, agent.auth
    run = (await stub.Execute(pb.ExecuteRequest(task="How much did revenue grow from 3.75 to 4.2?",
                                                mode=pb.AGENT_MODE_REACT), metadata=auth)).run
    assert run.status == pb.RUN_STATUS_COMPLETED and run.final_result == "Revenue grew 12% from Q2 to Q3."
    kinds = [s.step_type for s in run.execution_trace]
    assert kinds == [pb.STEP_TYPE_THOUGHT, pb.STEP_TYPE_ACTION, pb.STEP_TYPE_ACTION, pb.STEP_TYPE_FINAL_ANSWER]
    first, second = run.execution_trace[1], run.execution_trace[2]
    assert json.loads(first.observation)["result"] == 12
    assert second.error.startswith("invalid_input:") and "'expression' is a required property" in second.error
    assert run.stats.prompt_tokens == 300 and run.stats.tool_calls == 2

    sent = model.requests
    assert {t["function"]["name"] for t in sent[0]["tools"]} >= {"calculator", "knowledge_base"}
    assert sent[1]["messages"][-1] == {"role": "tool", "tool_call_id": "c1", "content": first.observation}
    assert sent[2]["messages"][-1]["content"].startswith("error: invalid_input")


async def test_a_task_the_rules_cannot_plan_is_planned_by_the_model(agent_with):
    model = ScriptedModel([plan_turn(("Write the poem", "")), turn("Spring wakes the sleeping ground."),
                           turn("Spring wakes the sleeping ground.")])
    agent = await agent_with(model)
    run = (await agent.stub.Execute(pb.ExecuteRequest(task="Write a one-line poem about spring"),
                                    metadata=agent.auth)).run
    assert run.status == pb.RUN_STATUS_COMPLETED and run.final_result == "Spring wakes the sleeping ground."
    assert [(s.step, s.description, s.tool) for s in run.plan] == [(1, "Write the poem", "")]
    plannable = (await agent.stub.Execute(pb.ExecuteRequest(task="What is 2 + 3?"), metadata=agent.auth)).run
    assert plannable.final_result == "2 + 3 = 5" and len(model.requests) == 3  # the rules planned it


async def test_the_models_plan_runs_step_by_step_each_input_made_when_its_step_runs(agent_with):
    model = ScriptedModel([
        plan_turn(("Compute the growth rate from 3.75 to 4.2", "calculator"), ("Write the haiku", "")),
        turn(None, [call("calculator", {"expression": "(4.2 - 3.75) / 3.75 * 100"}, "c1")]),
        turn("Figures climb: twelve in a hundred, spring in the ledger."),
        turn("Revenue grew 12%. Figures climb: twelve in a hundred, spring in the ledger."),
    ])
    agent = await agent_with(model, agent_reasoner_prices={"scripted-model": (1.0, 2.0)})
    run = (await agent.stub.Execute(pb.ExecuteRequest(
        task="Write a haiku about revenue that grew from 3.75 to 4.2 million and state the growth rate"),
        metadata=agent.auth)).run
    assert run.status == pb.RUN_STATUS_COMPLETED and run.final_result.startswith("Revenue grew 12%.")
    assert [s.tool for s in run.plan] == ["calculator", ""]
    kinds = [s.step_type for s in run.execution_trace]
    assert kinds == [pb.STEP_TYPE_PLAN, pb.STEP_TYPE_ACTION, pb.STEP_TYPE_THOUGHT, pb.STEP_TYPE_FINAL_ANSWER]
    assert json.loads(run.execution_trace[1].observation)["result"] == 12
    assert run.stats.tool_calls == 1 and run.stats.prompt_tokens == 400 and run.stats.completion_tokens == 40
    assert run.stats.estimated_cost_usd == pytest.approx(4 * (100 * 1.0 + 10 * 2.0) / 1e6)

    planning, first_step, second_step, answering = model.requests
    assert "tools" not in planning and "calculator:" in planning["messages"][0]["content"]
    assert [t["function"]["name"] for t in first_step["tools"]] == ["calculator"]  # only the step's tool
    assert "tools" not in second_step and '"result": 12' in second_step["messages"][-1]["content"]
    assert "Now carry out step 2: Write the haiku" in second_step["messages"][-1]["content"]
    assert "Figures climb" in answering["messages"][-1]["content"]


async def test_a_failed_step_is_reflected_on_by_the_model_and_the_rest_planned_again(agent_with):
    model = ScriptedModel([
        plan_turn(("Divide Q3 revenue by Q2 revenue", "calculator")),
        turn(None, [call("calculator", {"formula": "4.2 / 3.75"}, "c1")]),
        turn("The calculator takes its input as 'expression', not 'formula'."),
        plan_turn(("Divide 4.2 by 3.75 with the input named expression", "calculator")),
        turn(None, [call("calculator", {"expression": "4.2 / 3.75"}, "c2")]),
        turn("Q3 revenue was 1.12 times Q2's."),
    ])
    agent = await agent_with(model)
    request = pb.ExecuteRequest(task="Write the ratio of Q3 revenue (4.2) to Q2 (3.75) as a sentence for the board",
                                enable_reflection=True)
    run = (await agent.stub.Execute(request, metadata=agent.auth)).run
    assert run.status == pb.RUN_STATUS_COMPLETED and run.final_result == "Q3 revenue was 1.12 times Q2's."
    kinds = [s.step_type for s in run.execution_trace]
    assert kinds == [pb.STEP_TYPE_PLAN, pb.STEP_TYPE_ACTION, pb.STEP_TYPE_REFLECTION, pb.STEP_TYPE_PLAN,
                     pb.STEP_TYPE_ACTION, pb.STEP_TYPE_FINAL_ANSWER]
    failed, reflection, replanned = run.execution_trace[1:4]
    assert failed.error.startswith("invalid_input:") and "'expression' is a required property" in failed.error
    assert reflection.thought == "The calculator takes its input as 'expression', not 'formula'."
    assert replanned.thought.startswith("Re-planned after step 1 (calculator) failed: invalid_input")
    assert [(s.step, s.tool) for s in run.plan] == [(1, "calculator"), (2, "calculator")]
    assert "Step 1 failed: invalid_input" in model.requests[3]["messages"][-1]["content"]


async def test_plans_the_model_gets_wrong_are_sent_back_once_then_the_run_fails(agent_with):
    model = ScriptedModel([turn("Sure! First I will open a shell."),
                           plan_turn(("List the files", "shell"))])
    agent = await agent_with(model)
    run = (await agent.stub.Execute(pb.ExecuteRequest(task="Tidy up the server's disk"), metadata=agent.auth)).run
    assert run.status == pb.RUN_STATUS_FAILED
    assert run.status_reason.startswith("the model's plan could not be used: step 1 uses 'shell'")
    assert model.requests[1]["messages"][-1]["content"].startswith("That plan cannot be used: it holds no JSON")
    assert len(run.execution_trace) == 0


async def test_re_planning_stops_after_max_replans(agent_with):
    model = ScriptedModel([plan_turn(("Fetch the report", "calculator")),
                           turn(None, [call("calculator", {"expression": "1 / 0"}, "c1")])])
    agent = await agent_with(model, agent_max_replans=0)
    run = (await agent.stub.Execute(pb.ExecuteRequest(task="Summarise the board pack in three bullets"),
                                    metadata=agent.auth)).run
    assert run.status == pb.RUN_STATUS_FAILED and run.status_reason.startswith("step 1 (calculator) failed: refused:")
    assert run.status_reason.endswith("the plan was made again 0 times")


async def test_react_reflects_on_a_failed_call_and_never_calls_a_tool_it_was_not_offered(agent_with):
    model = ScriptedModel([
        turn(None, [call("http_get", {"url": "https://example.com/rates"}, "c1")]),
        turn("http_get is not mine to use here; I will compute the rate myself with the calculator."),
        turn(None, [call("calculator", {"expression": "4.2 / 3.75"}, "c2")]),
        turn("The ratio is 1.12."),
    ])
    agent = await agent_with(model)
    run = (await agent.stub.Execute(pb.ExecuteRequest(task="Ratio of 4.2 to 3.75?", mode=pb.AGENT_MODE_REACT,
                                                      tools=["calculator"], enable_reflection=True),
                                    metadata=agent.auth)).run
    kinds = [s.step_type for s in run.execution_trace]
    assert kinds == [pb.STEP_TYPE_ACTION, pb.STEP_TYPE_REFLECTION, pb.STEP_TYPE_ACTION, pb.STEP_TYPE_FINAL_ANSWER]
    assert run.execution_trace[0].error.startswith("not_offered: 'http_get' is not among this run's tools")
    assert run.execution_trace[1].thought.startswith("http_get is not mine")
    assert run.stats.tool_calls == 1 and run.status == pb.RUN_STATUS_COMPLETED
    reflecting = model.requests[1]
    assert "tools" not in reflecting and "The last tool call failed" in reflecting["messages"][-1]["content"]


async def test_a_model_that_keeps_calling_tools_is_stopped(agent_with):
    model = ScriptedModel([turn(None, [call("calculator", f'{{"expression": "{i} + 1"}}', f"c{i}")])
                           for i in range(10)])
    agent = await agent_with(model)
    stub, auth = agent.stub, agent.auth
    run = (await stub.Execute(pb.ExecuteRequest(task="Count forever", mode=pb.AGENT_MODE_REACT, max_steps=3),
                              metadata=auth)).run
    assert run.status == pb.RUN_STATUS_STOPPED and "max_steps (3)" in run.status_reason
    assert run.stats.tool_calls == 3
