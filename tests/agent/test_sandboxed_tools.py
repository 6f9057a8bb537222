"""The calculator through the real agent service (REST through the gateway,
and gRPC): a calculation past its bounds is refused at once, one within
bounds raised for it but too heavy is killed in its worker, and while it
burns a core the agent and the rest of the API answer as usual."""

from __future__ import annotations

import asyncio
import time

import pytest

from sagemesh.agent.v1 import agent_pb2 as pb
from tests.agent.test_rest import execute, rest_client

# Within the bounds once the digits allowed are raised to a billion, and 6.7 s of CPU.
HEAVY = "((10 ** 999) ** 1000) ** 10"
HEAVY_SETTINGS = {"agent_calculator_max_digits": 10**9,
                  # Beyond the calculator's timeout of 2 s, so that the timeout is what stops it.
                  "agent_tool_sandbox_cpu_seconds": 5.0}


def calculator_error(trace: list[dict]) -> str:
    return next(step["error"] for step in trace if step.get("action") == "calculator")


async def test_rounding_to_a_billion_digits_is_refused_through_rest_within_a_second(agent_with):
    async with rest_client(await agent_with()) as client:
        started = time.perf_counter()
        run = await execute(client, task="round(1, -1000000000)")
        elapsed = time.perf_counter() - started
    assert calculator_error(run["executionTrace"]) == "refused: round(): the digits must be between -20 and 20"
    assert run["status"] == "RUN_STATUS_FAILED" and "step 1 (calculator) failed" in run["statusReason"]
    assert elapsed < 1.0  # the worker's start included


async def test_a_heavy_calculation_within_the_bounds_is_killed_at_its_timeout_and_the_trace_says_so(agent_with):
    agent = await agent_with(**HEAVY_SETTINGS)
    reply = await agent.stub.Execute(pb.ExecuteRequest(task=f"compute {HEAVY}"), metadata=agent.auth)
    action = next(step for step in reply.run.execution_trace if step.action == "calculator")
    assert action.error == "timeout: the tool 'calculator' took longer than 2 s; its worker was killed"
    assert 2000 <= action.latency_ms < 4000
    assert reply.run.status == pb.RUN_STATUS_FAILED
    again = await agent.stub.Execute(pb.ExecuteRequest(task="What is 6 * 7?"), metadata=agent.auth)
    assert again.run.final_result == "6 * 7 = 42"  # a fresh worker took the killed one's place


@pytest.mark.parametrize("identity", ["sqlite"], indirect=True)
async def test_while_a_heavy_calculation_runs_the_agent_and_the_rest_of_the_api_answer_promptly(agent_with,
                                                                                                 identity):
    # Two workers: the heavy call holds one, the other Execute gets the other.
    agent = await agent_with(agent_tool_sandbox_workers=2, **HEAVY_SETTINGS)
    login = await identity.register_and_login("ann@example.com")
    me = {"Authorization": f"Bearer {login.access_token}"}
    async with rest_client(agent, identity_addr=identity.server.address,
                           gateway_services=["agent", "identity"]) as client:
        heavy = asyncio.create_task(execute(client, task=f"compute {HEAVY}"))
        await asyncio.sleep(0.5)  # its worker is computing
        for request in [client.get("/api/v1/users/me", headers=me), client.get("/api/v1/agent/tools"),
                        client.post("/api/v1/agent/execute", json={"task": "What is 6 * 7?"})]:
            started = time.perf_counter()
            response = await request
            assert response.status_code == 200, response.text
            assert time.perf_counter() - started < 1.0, response.request.url
            assert not heavy.done()
        assert response.json()["finalResult"] == "6 * 7 = 42"
        run = await heavy
    assert calculator_error(run["executionTrace"]) == \
        "timeout: the tool 'calculator' took longer than 2 s; its worker was killed"
