"""The agent service over real gRPC, its knowledge_base tool searching a real
rag_engine in the caller's tenant, its knowledge bases checked by a real
knowledge service."""

from __future__ import annotations

import grpc
import pytest

from meshkit.channels import create_channel
from meshkit.server import MeshServer
from sagemesh.agent.v1 import agent_pb2 as pb
from sagemesh.agent.v1 import agent_pb2_grpc
from sagemesh.rag_engine.v1 import rag_engine_pb2 as rag_pb
from services.agent import server as agent_server
from services.agent.settings import AgentSettings
from tests.fixtures.mesh import rag_engine_serving
from tests.knowledge.conftest import knowledge_serving, knowledge_settings

REPORT = "Revenue was 3.75 million euros in Q2 2024 and 4.2 million euros in Q3 2024."


@pytest.fixture(scope="module")
async def agent(tmp_path_factory, keys_dir, tokens):
    """The agent's stub, the tokens, and the id of acme's reports base."""
    async with (rag_engine_serving(tmp_path_factory.mktemp("rag"), keys_dir, tokens) as rag,
                knowledge_serving(knowledge_settings(tmp_path_factory.mktemp("knowledge"), keys_dir, rag.address),
                                  tokens) as knowledge):
        reports = await knowledge.create_base("acme", "reports")
        await rag.stub.IndexChunks(rag_pb.IndexChunksRequest(
            tenant_id="acme", kb_id=reports.id, document_id="d-q3",
            chunks=[rag_pb.Chunk(chunk_id="c1", title="Q3 report", text=REPORT, page=2)]))
        settings = AgentSettings(_env_file=None, data_dir=tmp_path_factory.mktemp("agent"), jwt_keys_dir=keys_dir,
                                 listen_port=0, rag_engine_addr=rag.address, knowledge_addr=knowledge.address)
        server = MeshServer(await agent_server.build(settings), settings)
        await server.start()
        async with create_channel(server.address, settings) as channel:
            yield agent_pb2_grpc.AgentServiceStub(channel), tokens, reports.id
        await server.stop(grace=0)


async def test_list_tools_gives_each_tools_schema_and_state(agent):
    stub, tokens, _ = agent
    tools = {t.name: t for t in (await stub.ListTools(pb.ListToolsRequest(), metadata=tokens.metadata("acme"))).tools}
    assert set(tools) == {"calculator", "current_time", "knowledge_base", "http_get"}
    assert tools["calculator"].input_schema["required"] == ["expression"]
    assert tools["calculator"].breaker_state == "closed" and not tools["http_get"].enabled


async def test_a_lookup_and_a_computation_run_and_the_run_is_kept(agent):
    stub, tokens, reports = agent
    reply = await stub.Execute(pb.ExecuteRequest(
        task="Look up last quarter's revenue figures in our reports and compute the growth rate",
        kb_ids=[reports]), metadata=tokens.metadata("acme"))
    run = reply.run
    assert run.status == pb.RUN_STATUS_COMPLETED and run.final_result == "(4.2 - 3.75) / 3.75 * 100 = 12"
    assert [s.tool for s in run.plan] == ["knowledge_base", "calculator"]
    lookup = next(s for s in run.execution_trace if s.action == "knowledge_base")
    assert "4.2 million" in lookup.observation and lookup.latency_ms > 0
    assert run.stats.tool_calls == 2 and run.stats.steps == len(run.execution_trace)

    kept = await stub.GetRun(pb.GetRunRequest(task_id=run.task_id), metadata=tokens.metadata("acme"))
    assert kept.run == run
    with pytest.raises(grpc.aio.AioRpcError) as hidden:
        await stub.GetRun(pb.GetRunRequest(task_id=run.task_id), metadata=tokens.metadata("acme", user_id="other"))
    assert hidden.value.code() == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize("tenant", ["globex", "acme"])
async def test_a_base_that_is_not_the_callers_tenants_is_not_found(agent, tenant):
    stub, tokens, reports = agent
    kb_id = reports if tenant == "globex" else "no-such-base"
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub.Execute(pb.ExecuteRequest(task="What was revenue according to our reports?", kb_ids=[kb_id]),
                           metadata=tokens.metadata(tenant))
    assert refused.value.code() == grpc.StatusCode.NOT_FOUND
    assert refused.value.details() == f"knowledge base {kb_id!r} not found"


async def test_another_tenants_documents_are_not_searched(agent):
    stub, tokens, _ = agent
    run = (await stub.Execute(pb.ExecuteRequest(task="What was revenue according to our reports?"),
                              metadata=tokens.metadata("globex"))).run
    assert run.final_result == "The knowledge bases hold nothing about this."


async def test_stream_execute_sends_the_plan_each_step_and_the_run(agent):
    stub, tokens, _ = agent
    events = [e async for e in stub.StreamExecute(
        pb.StreamExecuteRequest(task="What is 15% of 80?", mode=pb.AGENT_MODE_REACT),
        metadata=tokens.metadata("acme"))]
    kinds = [e.WhichOneof("event") for e in events]
    assert kinds[0] == "plan" and kinds[-1] == "completed" and set(kinds[1:-1]) == {"step"}
    assert [e.step.step_type for e in events[1:-1]] == [pb.STEP_TYPE_PLAN, pb.STEP_TYPE_THOUGHT,
                                                        pb.STEP_TYPE_ACTION, pb.STEP_TYPE_FINAL_ANSWER]
    assert events[-1].completed.final_result == "15% of 80 = 12"


@pytest.mark.parametrize("request_fields, field", [
    ({"task": " "}, "task"),
    ({"task": "1 + 1", "max_steps": 500}, "max_steps"),
    ({"task": "1 + 1", "tools": ["shell"]}, "tools"),
    ({"task": "1 + 1", "tools": ["http_get"]}, "tools"),
])
async def test_bad_requests_are_refused(agent, request_fields, field):
    stub, tokens, _ = agent
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub.Execute(pb.ExecuteRequest(**request_fields), metadata=tokens.metadata("acme"))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT and field in refused.value.details()
