"""The agent's tools: the calculator evaluates without eval and bounds every
step, the registry checks input against each tool's schema, times calls out,
runs the calculator in real sandbox workers (killed at their CPU limit or
timeout) and opens a tool's circuit after repeated failures."""

from __future__ import annotations

import asyncio
import dataclasses
import math
import time
from datetime import datetime

import pytest

from meshkit.sandbox import Sandbox, SandboxLimits
from services.agent.tools import Tool, ToolError
from services.agent.tools import current_time
from services.agent.tools.breaker import CLOSED, HALF_OPEN, OPEN, CircuitBreaker
from services.agent.tools.calculator import MAX_WORKING_DIGITS, calculate, calculator_tool
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
    ("'a' * 3", "only real numbers"),
    ("9 ** 9 ** 9", "exponents above"),
    ("(10 ** 400) * 10", "too large"),
    ("1 / 0", "division by zero"),
    ("sqrt(-1)", "sqrt()"),
    ("2 +", "not an arithmetic expression"),
    ("1" * 501, "limited to 500"),
    ("True + 1", "only real numbers"),
    ("2j * 3", "only real numbers"),
    ("(-8) ** (1/3)", "not a real number"),
    ("1\x00 + 1", "not an arithmetic expression"),
])
def test_the_calculator_refuses_what_is_not_safe_arithmetic(expression, reason):
    with pytest.raises(ToolError) as refused:
        calculate(expression)
    assert reason in str(refused.value)


@pytest.mark.parametrize("expression, reason", [
    # round()'s digits: each one asked of an int is a power of ten to compute (hours for -10**9).
    ("round(1, -1000000000)", "round(): the digits must be between -20 and 20"),
    ("round(2.5, 1000000)", "round(): the digits must be between -20 and 20"),
    ("round(7, 0.5)", "round(): the digits must be a whole number"),
    # Powers and products are refused before they are computed, by the digits they would have.
    ("(10 ** 999) ** 1000", f"numbers are limited to {MAX_WORKING_DIGITS} digits"),
    ("99 ** 999", f"numbers are limited to {MAX_WORKING_DIGITS} digits"),
    ("(10 ** 999) * (10 ** 999) * (10 ** 999)", f"numbers are limited to {MAX_WORKING_DIGITS} digits"),
    ("(7 ** 900) // 1 * 7 ** 900", f"numbers are limited to {MAX_WORKING_DIGITS} digits"),
    ("1e999 - 1", "too large"),
    ("exp(1000)", "too large"),
    ("sqrt(10 ** 400)", "too large"),
    ("floor(10 ** 400 / 3)", "too large"),
    # The answer is written as text: at most 300 digits (Python refuses more than 4300).
    ("2 ** 1000", "answers are limited to 300 digits"),
    ("floor(1e308)", "answers are limited to 300 digits"),
    ("ceil(-1e305) % 10 ** 999 - 10 ** 999", "answers are limited to 300 digits"),
    ("log(8, 1)", "division by zero"),
    ("max()", "max()"),
    # Nesting: the length limit comes first, then the depth of the tree (Python's own parser
    # recurses on it, and so would the evaluation).
    ("(" * 10000, "limited to 500"),
    ("-" * 400 + "1", "limited to 32 levels of nesting"),
    ("abs(" * 40 + "1" + ")" * 40, "limited to 32 levels of nesting"),
    ("(" * 210 + "1" + ")" * 210, "not an arithmetic expression"),
])
def test_every_argument_and_result_of_the_calculator_is_bounded(expression, reason):
    started = time.perf_counter()
    with pytest.raises(ToolError) as refused:
        calculate(expression)
    assert reason in str(refused.value)
    assert time.perf_counter() - started < 0.1  # refused before the work, not after it


@pytest.mark.parametrize("expression, expected", [
    ("(2 ** 1000) % 7", 2),  # exact arithmetic past the answer's size, within the working digits
    ("round(123456, -3)", 123000),
    ("round(2.675, 2)", 2.67),
    ("floor(1e299) // 10 ** 298", 10),
    ("-" * 30 + "1", 1),
])
def test_what_is_within_the_bounds_is_computed(expression, expected):
    assert calculate(expression) == expected


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


async def test_the_registry_checks_input_against_the_schema_before_calling(tool_sandbox):
    registry = ToolRegistry([calculator_tool(), current_time.TOOL], sandbox=tool_sandbox)
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


async def test_a_tool_refusing_a_request_does_not_count_against_it(tool_sandbox):
    registry = ToolRegistry([calculator_tool()], breaker=lambda: CircuitBreaker(threshold=1), sandbox=tool_sandbox)
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


def test_tools_with_the_same_name_or_a_broken_schema_are_refused(tool_sandbox):
    with pytest.raises(ValueError):
        ToolRegistry([current_time.TOOL, current_time.TOOL])
    with pytest.raises(Exception):
        ToolRegistry([Tool("bad", "", {"type": "no-such-type"}, current_time.TOOL.run)])
    with pytest.raises(ValueError, match="needs either run or compute"):
        Tool("both", "", {}, current_time.TOOL.run, compute=calculator_tool().compute)
    with pytest.raises(ValueError, match="runs sandboxed, and this registry has no sandbox"):
        ToolRegistry([calculator_tool()])
    assert math.isclose(calculate("e"), math.e)


# Within the bounds once they are raised 10**6-fold, and 6.7 s of CPU in-process.
HEAVY = "((10 ** 999) ** 1000) ** 10"


async def test_a_heavy_calculation_is_killed_at_its_cpu_limit_and_the_next_call_gets_a_fresh_worker():
    sandbox = Sandbox("tool sandbox", SandboxLimits(memory_bytes=256 * 2**20, cpu_seconds=1))
    roomy = dataclasses.replace(calculator_tool(max_digits=10**9), timeout_seconds=20)
    registry = ToolRegistry([roomy], breaker=lambda: CircuitBreaker(threshold=1), sandbox=sandbox)
    try:
        started = time.perf_counter()
        with pytest.raises(ToolCallError) as stopped:
            await registry.call("calculator", {"expression": HEAVY})
        assert stopped.value.kind == "stopped"
        assert stopped.value.message == "the tool 'calculator' was stopped, it used more than 1 s of CPU time"
        assert time.perf_counter() - started < 10  # well before its timeout of 20 s, let alone 6.7 s of work
        assert await registry.call("calculator", {"expression": "6 * 7"}) == {"expression": "6 * 7", "result": 42}
        assert registry.tools()[0][1] == CLOSED  # the input's cost, not the tool's failure
    finally:
        sandbox.close()


async def test_a_heavy_calculation_is_killed_at_its_timeout(tool_sandbox):
    hasty = dataclasses.replace(calculator_tool(max_digits=10**9), timeout_seconds=0.5)
    registry = ToolRegistry([hasty], sandbox=tool_sandbox)
    started = time.perf_counter()
    with pytest.raises(ToolCallError) as stopped:
        await registry.call("calculator", {"expression": HEAVY})
    assert (stopped.value.kind, stopped.value.message) == (
        "timeout", "the tool 'calculator' took longer than 0.5 s; its worker was killed")
    assert time.perf_counter() - started < 3
    assert await registry.call("calculator", {"expression": "2 ** 10"}) == {"expression": "2 ** 10", "result": 1024}
