"""The agent with a reasoning model: ReAct over native tool calls, against a
stand-in chat-completions server that scripts the model's turns."""

from __future__ import annotations

import json

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from meshkit.channels import create_channel
from meshkit.server import MeshServer
from sagemesh.agent.v1 import agent_pb2 as pb
from sagemesh.agent.v1 import agent_pb2_grpc
from services.agent import server as agent_server
from services.agent.settings import AgentSettings
from tests.conftest import free_port, serving_asgi


def call(name: str, arguments: str, call_id: str) -> dict:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


def turn(content: str | None = None, calls: list[dict] | None = None) -> dict:
    message = {"role": "assistant", "content": content, **({"tool_calls": calls} if calls else {})}
    return {"choices": [{"index": 0, "message": message, "finish_reason": "tool_calls" if calls else "stop"}],
            "usage": {"prompt_tokens": 100, "completion_tokens": 10}}


class ScriptedModel:
    """Answers each chat request with the next scripted turn; keeps the requests."""

    def __init__(self, turns: list[dict]) -> None:
        self.turns = turns
        self.requests: list[dict] = []

    def app(self) -> Starlette:
        async def chat(request: Request) -> JSONResponse:
            self.requests.append(await request.json())
            return JSONResponse(self.turns.pop(0))

        return Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"])])


@pytest.fixture
async def agent_with(tmp_path, keys_dir, tokens):
    async def start(model: ScriptedModel, **settings_fields):
        url = await stack.enter_async_context(serving_asgi(model.app()))
        settings = AgentSettings(_env_file=None, data_dir=tmp_path, jwt_keys_dir=keys_dir, listen_port=0,
                                 rag_engine_addr=f"127.0.0.1:{free_port()}", agent_reasoner_url=f"{url}/v1",
                                 agent_reasoner_models="scripted-model", **settings_fields)
        server = MeshServer(await agent_server.build(settings), settings)
        await server.start()
        stack.push_async_callback(server.stop, 0)
        channel = create_channel(server.address, settings)
        stack.push_async_callback(channel.close)
        return agent_pb2_grpc.AgentServiceStub(channel), tokens.metadata("acme")

    from contextlib import AsyncExitStack

    async with AsyncExitStack() as stack:
        yield start


async def test_react_calls_tools_the_model_asks_for_and_returns_its_answer(agent_with):
    model = ScriptedModel([
        turn("I will compute the growth.", [call("calculator", '{"expression": "(4.2 - 3.75) / 3.75 * 100"}', "c1")]),
        turn(None, [call("calculator", '{"formula": "1"}', "c2")]),
        turn("Revenue grew 12% from Q2 to Q3."),
    ])
    stub, auth = await agent_with(model)
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


async def test_a_task_the_rules_cannot_plan_goes_to_the_model(agent_with):
    model = ScriptedModel([turn("Spring wakes the sleeping ground.")])
    stub, auth = await agent_with(model)
    run = (await stub.Execute(pb.ExecuteRequest(task="Write a one-line poem about spring"), metadata=auth)).run
    assert run.status == pb.RUN_STATUS_COMPLETED and run.final_result == "Spring wakes the sleeping ground."
    plannable = (await stub.Execute(pb.ExecuteRequest(task="What is 2 + 3?"), metadata=auth)).run
    assert plannable.final_result == "2 + 3 = 5" and len(model.requests) == 1  # the rules planned it


async def test_a_model_that_keeps_calling_tools_is_stopped(agent_with):
    model = ScriptedModel([turn(None, [call("calculator", f'{{"expression": "{i} + 1"}}', f"c{i}")])
                           for i in range(10)])
    stub, auth = await agent_with(model)
    run = (await stub.Execute(pb.ExecuteRequest(task="Count forever", mode=pb.AGENT_MODE_REACT, max_steps=3),
                              metadata=auth)).run
    assert run.status == pb.RUN_STATUS_STOPPED and "max_steps (3)" in run.status_reason
    assert run.stats.tool_calls == 3
