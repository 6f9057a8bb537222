"""The agent through the gateway, as a web app calls it, with a scripted
reasoning model: invalid tool input shows in the trace, a failing tool opens
its breaker, and max_steps and the deadline stop a model that loops."""

from __future__ import annotations

import json
from contextlib import asynccontextmanager

import httpx

from gateway.server import build
from gateway.settings import GatewaySettings
from tests.agent.scripted_model import ScriptedModel, call, turn
from tests.conftest import free_port
from tests.gateway.conftest import serve_gateway, stop_gateway


@asynccontextmanager
async def rest_client(agent, **gateway_fields):
    settings = GatewaySettings(_env_file=None, agent_addr=agent.address, **({"gateway_services": ["agent"]}
                                                                             | gateway_fields))
    server, task, url = await serve_gateway(build(settings))
    headers = {"Authorization": dict(agent.auth)["authorization"]}
    try:
        async with httpx.AsyncClient(base_url=url, timeout=30, headers=headers) as client:
            yield client
    finally:
        await stop_gateway(server, task)


async def execute(client: httpx.AsyncClient, **request) -> dict:
    response = await client.post("/api/v1/agent/execute", json=request)
    assert response.status_code == 200, response.text
    return response.json()


async def test_invalid_tool_input_is_a_clear_error_in_the_trace(agent_with):
    model = ScriptedModel([turn(None, [call("calculator", {"expression": 42}, "c1")]),
                           turn(None, [call("calculator", "{not json", "c2")]),
                           turn("I could not run the calculator.")])
    async with rest_client(await agent_with(model)) as client:
        run = await execute(client, task="What is 6 * 7?", mode="AGENT_MODE_REACT")
    first, second, final = run["executionTrace"]
    assert first["error"] == "invalid_input: input.expression: 42 is not of type 'string'"
    assert first["actionInput"] == {"expression": 42}
    assert second["error"].startswith("invalid_input: the arguments are not JSON")
    assert final["stepType"] == "STEP_TYPE_FINAL_ANSWER" and run["status"] == "RUN_STATUS_COMPLETED"
    assert run["stats"]["toolCalls"] == 1  # arguments that are not JSON never reach the tool


async def test_a_failing_tool_opens_its_breaker_and_the_agent_reports_it(agent_with):
    port = free_port()
    unreachable = f"http://127.0.0.1:{port}"  # allowed, but nothing listens there
    model = ScriptedModel([turn(None, [call("http_get", {"url": f"{unreachable}/rates/{i}"}, f"c{i}")])
                           for i in range(3)] + [turn("The rates service is down.")])
    agent = await agent_with(model, agent_http_allowed_hosts="127.0.0.1", agent_http_allowed_ports=str(port),
                             agent_http_allowed_networks="127.0.0.1/32", tool_breaker_threshold=2,
                             tool_breaker_cool_down_seconds=60)
    async with rest_client(agent) as client:
        run = await execute(client, task="Fetch today's rates", mode="AGENT_MODE_REACT")
        tools = (await client.get("/api/v1/agent/tools")).json()["tools"]
    errors = [step["error"] for step in run["executionTrace"] if step["stepType"] == "STEP_TYPE_ACTION"]
    assert [e.split(":")[0] for e in errors] == ["failed", "failed", "circuit_open"]
    assert "failed 2 times in a row; next try in" in errors[2]
    assert run["finalResult"] == "The rates service is down."
    breaker = {t["name"]: t.get("breakerState") for t in tools}
    assert breaker["http_get"] == "open" and breaker["calculator"] == "closed"


async def test_max_steps_stops_a_model_that_keeps_calling_tools(agent_with):
    model = ScriptedModel([turn(f"Trying {i}.", [call("calculator", {"expression": f"{i} + 1"}, f"c{i}")])
                           for i in range(10)])
    async with rest_client(await agent_with(model)) as client:
        run = await execute(client, task="Count for ever", mode="AGENT_MODE_REACT", maxSteps=3)
    assert run["status"] == "RUN_STATUS_STOPPED" and run["statusReason"] == "max_steps (3) reached"
    assert run["stats"]["toolCalls"] == 3 and run["finalResult"] == "Trying 2."


async def test_the_deadline_stops_a_looping_plan_and_the_run_is_kept(agent_with):
    model = ScriptedModel([turn(None, [call("calculator", {"expression": f"{i} * 2"}, f"c{i}")])
                           for i in range(50)], delay_seconds=0.3)
    agent = await agent_with(model, agent_deadline_seconds=1.0)
    async with rest_client(agent) as client:
        run = await execute(client, task="Double numbers for ever", mode="AGENT_MODE_REACT", maxSteps=50)
        kept = (await client.get(f"/api/v1/agent/runs/{run['taskId']}")).json()
    assert run["status"] == "RUN_STATUS_STOPPED" and run["statusReason"] == "the deadline of 1 s was reached"
    # Stopped at the deadline, not after the 50 scripted turns (15 s of them).
    assert run["stats"]["toolCalls"] < 10 and 1000 <= run["stats"]["durationMs"] < 5000
    assert kept["status"] == "RUN_STATUS_STOPPED" and json.dumps(kept["executionTrace"]) == \
        json.dumps(run["executionTrace"])
