"""The agent's tools: the calculator evaluates without eval, the registry
checks input against each tool's schema, times calls out and opens a tool's
circuit after repeated failures."""

from __future__ import annotations

import asyncio
import math
from datetime import datetime

import pytest

from services.agent.tools import Tool, ToolError
from services.agent.tools import calculator, current_time
from services.agent.tools.breaker import CLOSED, HALF_OPEN, OPEN, CircuitBreaker
from services.agent.tools.calculator import calculate
from services.agent.tools.registry import ToolCallError, ToolRegistry


@pytest.mark.parametrize("expression, expected", [
    ("2 + 3 * 4", 14),
    ("(4.2 - 3.75) / 3.75 * 100", pytest.approx(12.0)),
    ("15% of 200", 30),
    ("80 * 1.5%", pytest.approx(1.2)),
    ("2^10", 1024),
    ("sqrt(16) + max(1, 7, 3)", 11),
    ("round(pi, 2)", pytest.approx(3.14)),
    ("1,250,000 / 4", 312500),
    ("-(3 - 5) ** 2", -4),
    ("ln(e)", 1),
    ("0.1 + 0.2", 0.3),
])
def test_the_calculator_computes(expression, expected):
    assert calculate(expression) == expected


@pytest.mark.parametrize("expression, reason", [
    ("__import__('os').system('true')", "not arithmetic"),
    ("(1).__class__", "not arithmetic"),
    ("open('/etc/passwd')", "not arithmetic"),
    ("[1, 2, 3]", "not arithmetic"),
    ("'a' * 3", "only numbers"),
    ("9 ** 9 ** 9", "exponents above"),
    ("(10 ** 400) * 10", "too large"),
    ("1 / 0", "division by zero"),
    ("sqrt(-1)", "sqrt()"),
    ("2 +", "not an arithmetic expression"),
    ("1" * 501, "limited to 500"),
])
def test_the_calculator_refuses_what_is_not_safe_arithmetic(expression, reason):
    with pytest.raises(ToolError) as refused:
        calculate(expression)
    assert reason in str(refused.value)


def test_a_breaker_opens_after_failures_and_lets_one_trial_through_after_its_cool_down():
    now = [0.0]
    breaker = CircuitBreaker(threshold=2, cool_down_seconds=10, clock=lambda: now[0])
    breaker.failed()
    assert breaker.state == CLOSED and breaker.allow()
    breaker.failed()
    assert breaker.state == OPEN and not breaker.allow()
    now[0] = 10.0
    assert breaker.state == HALF_OPEN and breaker.allow() and not breaker.allow()  # one trial at a time
    breaker.failed()
    assert breaker.state == OPEN
    now[0] = 20.0
    assert breaker.allow()
    breaker.succeeded()
    assert breaker.state == CLOSED and breaker.allow()


def flaky_tool(outcomes: list) -> Tool:
    async def run(arguments, context):
        outcome = outcomes.pop(0)
        if isinstance(outcome, BaseException):
            raise outcome
        if outcome == "slow":
            await asyncio.sleep(1)
        return outcome

    return Tool("flaky", "Fails on demand.", {"type": "object", "properties": {"n": {"type": "integer"}},
                                              "required": ["n"]}, run, timeout_seconds=0.1)


async def test_the_registry_checks_input_against_the_schema_before_calling():
    registry = ToolRegistry([calculator.TOOL, current_time.TOOL])
    assert await registry.call("calculator", {"expression": "6 * 7"}) == {"expression": "6 * 7", "result": 42}
    for name, arguments, message in [
        ("calculator", {}, "'expression' is a required property"),
        ("calculator", {"expression": 42}, "input.expression: 42 is not of type 'string'"),
        ("calculator", {"expression": "1", "extra": True}, "Additional properties"),
        ("nope", {}, "no tool named 'nope'"),
    ]:
        with pytest.raises(ToolCallError) as refused:
            await registry.call(name, arguments)
        assert message in refused.value.message
        assert refused.value.kind == ("not_found" if name == "nope" else "invalid_input")


async def test_a_tool_that_keeps_failing_is_cut_off_by_its_breaker():
    registry = ToolRegistry([flaky_tool([RuntimeError("down"), "slow", RuntimeError("down"), "fine"])],
                            breaker=lambda: CircuitBreaker(threshold=3, cool_down_seconds=60))
    kinds = []
    for _ in range(4):
        with pytest.raises(ToolCallError) as failed:
            await registry.call("flaky", {"n": 1})
        kinds.append(failed.value.kind)
    assert kinds == ["failed", "timeout", "failed", "circuit_open"]
    assert registry.tools()[0][1] == OPEN


async def test_a_tool_refusing_a_request_does_not_count_against_it():
    registry = ToolRegistry([calculator.TOOL], breaker=lambda: CircuitBreaker(threshold=1))
    for _ in range(3):
        with pytest.raises(ToolCallError) as refused:
            await registry.call("calculator", {"expression": "1 / 0"})
        assert refused.value.kind == "refused" and "division by zero" in refused.value.message
    assert registry.tools()[0][1] == CLOSED


async def test_current_time_knows_time_zones():
    registry = ToolRegistry([current_time.TOOL])
    now = await registry.call("current_time", {"timezone": "Asia/Shanghai"})
    assert datetime.fromisoformat(now["iso"]).utcoffset().total_seconds() == 8 * 3600
    with pytest.raises(ToolCallError) as refused:
        await registry.call("current_time", {"timezone": "Mars/Olympus"})
    assert "IANA" in refused.value.message


def test_tools_with_the_same_name_or_a_broken_schema_are_refused():
    with pytest.raises(ValueError):
        ToolRegistry([calculator.TOOL, calculator.TOOL])
    with pytest.raises(Exception):
        ToolRegistry([Tool("bad", "", {"type": "no-such-type"}, calculator.TOOL.run)])
    assert math.isclose(calculate("e"), math.e)
