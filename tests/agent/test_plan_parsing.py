"""What the agent accepts as a model-written plan, and what it sends back."""

from __future__ import annotations

import pytest

from services.agent.plan_execute_llm import PlanRejected, parse_plan

TOOLS = ["calculator", "knowledge_base"]


def test_a_plan_in_a_code_fence_with_prose_around_it_is_read():
    text = 'Here is the plan:\n```json\n{"steps": [{"description": " Find Q3 revenue ", "tool": "knowledge_base"},' \
           ' {"description": "Compute the growth", "tool": "calculator"}, {"description": "Summarise"}]}\n```'
    plan = parse_plan(text, TOOLS, first_step=4)
    assert [(s.step, s.description, s.tool) for s in plan] == [
        (4, "Find Q3 revenue", "knowledge_base"), (5, "Compute the growth", "calculator"), (6, "Summarise", "")]


@pytest.mark.parametrize(("text", "reason"), [
    ("I would look it up first.", "it holds no JSON object"),
    ('{"steps": [{"description": "x", "tool": "calculator"},]}', "it is not valid JSON"),
    ('{"plan": []}', 'it has no "steps" list'),
    ('{"steps": []}', 'it has no "steps" list'),
    ('{"steps": ["look it up"]}', "step 1 has no description"),
    ('{"steps": [{"description": "ok"}, {"description": "  "}]}', "step 2 has no description"),
    ('{"steps": [{"description": "rm -rf", "tool": "shell"}]}',
     "step 1 uses 'shell', which is not among the tools (calculator, knowledge_base)"),
])
def test_plans_that_cannot_run_are_refused_with_the_reason(text, reason):
    with pytest.raises(PlanRejected) as refused:
        parse_plan(text, TOOLS)
    assert str(refused.value).startswith(reason)
