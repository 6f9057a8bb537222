"""What an operator sees of the mesh as `make run` starts it, with tracing
pointed at a real OTLP receiver: one trace per REST question across gateway,
conversation and rag_engine with the RAG stages as child spans, sampled at
the edge (a client's traceparent is a link: it neither forces nor stops a
trace), indexing linked to its upload, metrics that parse and
move with traffic, and JSON logs that carry the trace id and no password."""

from __future__ import annotations

import asyncio
import json
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from scripts.mesh_process import MeshUnderTest, ProcessMesh, free_port, mesh_env, running_mesh
from tests.fixtures.otlp import OtlpReceiver, ReceivedSpan, span_tree

PASSWORD = "tracing is not logging 7!"
POLICY = b"# Expenses\n\n## Meals\n\nMeals on business trips are reimbursed up to 45 euros a day.\n"
CLIENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN = "00f067aa0ba902b7"
RAG_STAGES = {"rag.retrieve", "rag.embed", "rag.vector_search", "rag.bm25_search", "rag.fuse", "rag.generate"}


@pytest.fixture(scope="module")
async def traced(tmp_path_factory):
    receiver = OtlpReceiver()
    await receiver.start()
    data_dir = tmp_path_factory.mktemp("traced-mesh")
    logs = data_dir / "mesh.log"
    env = mesh_env(data_dir, OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint, OTEL_BSP_SCHEDULE_DELAY="100",
                   SAGEMESH_SERVICE_VERSION="9.9.9-canary", SAGEMESH_LOG_LEVEL="INFO")
    with ExitStack() as stack, logs.open("w") as log_file:
        # Started from a thread: the receiver answers in this loop meanwhile.
        mesh = await asyncio.to_thread(stack.enter_context, running_mesh(env, stderr=log_file))
        yield mesh, receiver, logs
        await asyncio.to_thread(stack.close)
    await receiver.stop()


async def scrape(url: str) -> dict[str, float]:
    """Every sample of a /metrics page, by name and labels, parsed by prometheus-client's own parser."""
    async with httpx.AsyncClient(timeout=10) as client:
        page = (await client.get(url)).text
    return {f"{s.name}{json.dumps(s.labels, sort_keys=True)}": s.value
            for family in text_string_to_metric_families(page) for s in family.samples}


def sample(samples: dict[str, float], name: str, **labels: str) -> float:
    """The sum of a metric's samples whose labels include these."""
    total = 0.0
    for key, value in samples.items():
        metric, _, raw = key.partition("{")
        found = json.loads("{" + raw)
        if metric == name and all(found.get(k) == v for k, v in labels.items()):
            total += value
    return total


async def login(client: httpx.AsyncClient, email: str) -> dict[str, str]:
    registered = await client.post("/api/v1/auth/register", json={"email": email, "password": PASSWORD})
    assert registered.status_code == 200, registered.text
    tokens = (await client.post("/api/v1/auth/login", json={"email": email, "password": PASSWORD})).json()
    return {"Authorization": f"Bearer {tokens['accessToken']}"}


async def upload_ask_and_compute(mesh: MeshUnderTest) -> tuple[httpx.Response, ...]:
    """An upload (indexed before it returns), a question carrying a client's traceparent, an agent task."""
    async with httpx.AsyncClient(base_url=mesh.url, timeout=60) as client:
        auth = await login(client, "olga@example.com")
        kb = (await client.post("/api/v1/knowledge/bases", headers=auth, json={"name": "expenses"})).json()
        uploaded = await client.post(f"/api/v1/knowledge/bases/{kb['id']}/documents", headers=auth,
                                     files={"file": ("expenses.md", POLICY, "text/markdown")})
        assert uploaded.status_code == 200, uploaded.text
        async with client.stream("GET", f"/api/v1/knowledge/documents/{uploaded.json()['documentId']}/status:watch",
                                  headers=auth) as watch:
            _ = [line async for line in watch.aiter_lines()]
        conversation = (await client.post("/api/v1/conversations", headers=auth, json={"kbIds": [kb["id"]]})).json()
        asked = await client.post(f"/api/v1/conversations/{conversation['id']}/messages", json={
            "content": "How much are meals reimbursed per day?"},
            headers={**auth, "traceparent": f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"})
        assert asked.status_code == 200, asked.text
        # Streamed answers are traced too, their bodies intact.
        async with client.stream("POST", f"/api/v1/conversations/{conversation['id']}/messages:stream",
                                  headers={**auth, "Accept": "text/event-stream"},
                                  json={"content": "And per night?"}) as stream:
            assert stream.status_code == 200 and len(stream.headers["x-trace-id"]) == 32
            events = [line async for line in stream.aiter_lines() if line.startswith("data: ")]
        assert "message" in json.loads(events[-1][len("data: "):])["result"]
        computed = await client.post("/api/v1/agent/execute", headers=auth, json={"task": "What is 15% of 80?"})
        assert computed.json()["finalResult"] == "15% of 80 = 12"
        return uploaded, asked, computed


@pytest.fixture(scope="module")
async def traffic(traced):
    mesh, receiver, logs = traced
    before = {name: await scrape(url) for name, url in mesh.metrics.items()}
    return before, *await upload_ask_and_compute(mesh)


async def trace_with(receiver: OtlpReceiver, trace_id: str, names: set[str],
                     servers: frozenset[str] = frozenset()) -> list[ReceivedSpan]:
    """The trace's spans once those named, and the server spans of those services, have arrived (each
    process sends its spans on its own, the gateway's after the response)."""
    def arrived(_):
        found = receiver.trace(trace_id)
        complete = names <= {s.name for s in found} and servers <= {s.service for s in found if s.kind == "SERVER"}
        return found if complete else None

    return await receiver.wait_for(arrived)


def by_name(spans: list[ReceivedSpan], name: str) -> list[ReceivedSpan]:
    return [s for s in spans if s.name == name]


def ancestors(span: ReceivedSpan, spans: list[ReceivedSpan]) -> list[ReceivedSpan]:
    by_id = {s.span_id: s for s in spans}
    chain = []
    while span.parent_span_id in by_id:
        span = by_id[span.parent_span_id]
        chain.append(span)
    return chain


async def test_a_question_is_one_trace_across_every_hop_begun_at_the_edge(traced, traffic):
    _, receiver, _ = traced
    _, _, asked, _ = traffic
    question_trace = asked.headers["x-trace-id"]
    assert question_trace != CLIENT_TRACE  # the edge starts the trace

    spans = await trace_with(receiver, question_trace,
                             RAG_STAGES | {"POST /api/v1/conversations/{conversation_id}/messages"},
                             servers=frozenset({"gateway", "conversation", "rag_engine"}))
    tree = span_tree(spans)
    assert {s.service for s in spans} == {"gateway", "conversation", "rag_engine"}, tree
    assert {s.service_version for s in spans} == {"9.9.9-canary"}, tree

    [gateway] = by_name(spans, "POST /api/v1/conversations/{conversation_id}/messages")
    assert gateway.kind == "SERVER" and not gateway.parent_span_id, tree
    assert gateway.links == [(CLIENT_TRACE, CLIENT_SPAN)], "the client's trace is found from ours"
    assert not receiver.trace(CLIENT_TRACE)
    assert gateway.attributes["http.route"] == "/api/v1/conversations/{conversation_id}/messages"
    assert gateway.attributes["http.response.status_code"] == 200

    # gateway -> conversation -> rag_engine, each server span the child of its caller's client span.
    [send] = [s for s in spans if s.service == "conversation" and s.kind == "SERVER"]
    assert send.name.endswith("ConversationService/SendMessage")
    assert ancestors(send, spans)[:2] == [next(s for s in spans if s.span_id == send.parent_span_id), gateway]
    assert ancestors(send, spans)[0].kind == "CLIENT" and ancestors(send, spans)[0].service == "gateway"
    statements = [s for s in spans if s.service == "conversation" and s.attributes.get("db.system")]
    assert statements and all(send in ancestors(s, spans) for s in statements), tree  # SQLAlchemy's spans
    [query] = [s for s in spans if s.service == "rag_engine" and s.kind == "SERVER"]
    assert query.name.endswith("RagEngineService/StreamQuery")  # conversation streams the answer
    caller = ancestors(query, spans)[0]
    assert caller.kind == "CLIENT" and caller.service == "conversation" and send in ancestors(query, spans)

    # The RAG stages hang under the rag_engine's server span, with what they did.
    for name in RAG_STAGES:
        [stage] = by_name(spans, name)
        assert query in ancestors(stage, spans), tree
    [retrieve] = by_name(spans, "rag.retrieve")
    for name in ("rag.embed", "rag.vector_search", "rag.bm25_search", "rag.fuse"):
        assert ancestors(by_name(spans, name)[0], spans)[0] == retrieve, tree
    assert retrieve.attributes["top_k"] >= 1 and retrieve.attributes["results"] >= 1
    assert by_name(spans, "rag.bm25_search")[0].attributes["candidates"] >= 1
    assert by_name(spans, "rag.embed")[0].attributes["model"]
    generate = by_name(spans, "rag.generate")[0]
    assert generate.attributes["generator"] == "extractive" and generate.attributes["sources"] >= 1


async def test_indexing_a_document_links_back_to_its_upload(traced, traffic):
    _, receiver, _ = traced
    _, uploaded, _, _ = traffic
    upload_trace = uploaded.headers["x-trace-id"]
    ingest = await receiver.wait_for(lambda spans: by_name(spans, "knowledge.ingest"))
    [ingest] = ingest
    upload_spans = await receiver.wait_for(lambda spans: [s for s in spans if s.trace_id == upload_trace
                                                          and s.name.endswith("UploadDocument")
                                                          and s.service == "knowledge"])
    assert ingest.trace_id != upload_trace and (upload_trace, upload_spans[0].span_id) in ingest.links
    assert ingest.attributes["outcome"] == "indexed"
    stages = await receiver.wait_for(lambda spans: [s.name for s in receiver.trace(ingest.trace_id)
                                                    if s.name.startswith(("knowledge.", "rag."))
                                                    or s.name.endswith("IndexChunks")] or None)
    assert {"knowledge.parse", "knowledge.chunk", "knowledge.index"} <= set(stages)
    # The rag_engine's side of indexing is in the same trace.
    assert any(name.endswith("RagEngineService/IndexChunks") for name in stages), stages


async def test_an_agent_run_shows_its_steps_and_tool_calls(traced, traffic):
    _, receiver, _ = traced
    *_, computed = traffic
    spans = await trace_with(receiver, computed.headers["x-trace-id"], {"POST /api/v1/agent/execute", "agent.step"},
                             servers=frozenset({"agent"}))
    tree = span_tree(spans)
    [step] = by_name(spans, "agent.step")
    [tool] = by_name(spans, "agent.tool.calculator")
    [execute] = [s for s in spans if s.service == "agent" and s.kind == "SERVER"]
    assert ancestors(tool, spans)[0] == step and execute in ancestors(step, spans), tree
    assert step.attributes["tool"] == "calculator" and step.attributes["outcome"] == "ok"
    assert tool.attributes["outcome"] == "ok" and tool.status_code != "STATUS_CODE_ERROR"


async def test_every_process_serves_metrics_that_move_with_traffic(traced, traffic):
    mesh, _, _ = traced
    before, _, _, _ = traffic
    after = {name: await scrape(url) for name, url in mesh.metrics.items()}
    route = "/api/v1/conversations/{conversation_id}/messages"
    for name, samples, metric, labels in [
        ("gateway", after["gateway"], "http_server_requests_total", {"route": route, "status": "200"}),
        ("gateway", after["gateway"], "grpc_client_handled_total",
         {"grpc_method": "SendMessage", "grpc_code": "OK"}),
        ("conversation", after["conversation"], "grpc_server_handled_total",
         {"grpc_method": "SendMessage", "grpc_code": "OK"}),
        ("rag_engine", after["rag_engine"], "grpc_server_handling_seconds_count", {"grpc_method": "StreamQuery"}),
        ("rag_engine", after["rag_engine"], "sagemesh_rag_retrieval_stage_seconds_count", {"stage": "bm25"}),
        ("rag_engine", after["rag_engine"], "sagemesh_rag_answer_cache_lookups_total", {"result": "miss"}),
        ("rag_engine", after["rag_engine"], "sagemesh_rag_generation_tokens_total", {"kind": "completion"}),
        ("knowledge", after["knowledge"], "sagemesh_knowledge_ingestions_total", {"outcome": "indexed"}),
        ("identity", after["identity"], "grpc_server_handled_total", {"grpc_method": "Login"}),
        ("agent", after["agent"], "sagemesh_agent_tool_calls_total", {"tool": "calculator", "outcome": "ok"}),
        ("agent", after["agent"], "sagemesh_agent_runs_total", {"mode": "plan_execute", "status": "completed"}),
    ]:
        grown = sample(samples, metric, **labels) - sample(before[name], metric, **labels)
        assert grown >= 1, f"{name}: {metric}{labels} did not move"

    async def indexed_gauge() -> float:
        return sample(await scrape(mesh.metrics["knowledge"]), "sagemesh_knowledge_documents", status="indexed")

    for _ in range(50):  # the worker refreshes its counts every few seconds
        if await indexed_gauge() >= 1:
            break
        await asyncio.sleep(0.2)
    assert await indexed_gauge() >= 1
    assert sample(after["agent"], "sagemesh_agent_tool_breaker_state", tool="calculator") == 0


async def test_logs_are_json_lines_with_the_trace_id_and_never_the_password(traced, traffic):
    mesh, _, logs = traced
    _, _, asked, _ = traffic
    await asyncio.sleep(0.5)  # the last lines reach the file
    lines = [json.loads(line) for line in Path(logs).read_text().splitlines() if line.startswith("{")]
    assert lines and all({"time", "level", "service", "message", "trace_id", "span_id"} <= set(line)
                         for line in lines)
    question = [line for line in lines if line["service"] == "gateway" and line["message"] == "http"
                and line.get("route") == "/api/v1/conversations/{conversation_id}/messages"]
    question_trace = asked.headers["x-trace-id"]
    assert question and question[0]["trace_id"] == question_trace and question[0]["status"] == 200
    rpc = [line for line in lines if line["service"] == "rag_engine" and line.get("method", "").endswith("/StreamQuery")]
    assert rpc and rpc[0]["trace_id"] == question_trace
    logins = [line for line in lines if line["service"] == "identity" and line.get("method", "").endswith("/Login")]
    assert logins, "the login was logged"
    assert PASSWORD not in Path(logs).read_text()


async def register(url: str, email: str, traceparent: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        registered = await client.post("/api/v1/auth/register", json={"email": email, "password": PASSWORD},
                                       headers={"traceparent": traceparent})
    assert registered.status_code == 200, registered.text
    return registered


async def test_a_client_cannot_switch_tracing_off(traced):
    mesh, receiver, _ = traced
    unsampled_client = "5ce1a7f1e3f34b2c9d1f0a1b2c3d4e5f"
    registered = await register(mesh.url, "unsampled@example.com", f"00-{unsampled_client}-{CLIENT_SPAN}-00")
    # The mesh samples everything (the SDK's default sampler); the client's "not sampled" changes nothing.
    spans = await trace_with(receiver, registered.headers["x-trace-id"], {"POST /api/v1/auth/register"},
                             servers=frozenset({"gateway", "identity"}))
    [edge] = by_name(spans, "POST /api/v1/auth/register")
    assert edge.links == [(unsampled_client, CLIENT_SPAN)]


async def test_a_client_cannot_force_a_trace_past_the_edges_sampler(traced):
    """A gateway that samples nothing, before the traced mesh's services (which follow their caller's
    decision): a client's "sampled" traceparent must not get its request traced anywhere."""
    mesh, receiver, logs = traced
    env = {**mesh_env(logs.parent, OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint, OTEL_BSP_SCHEDULE_DELAY="100",
                      OTEL_TRACES_SAMPLER="parentbased_traceidratio", OTEL_TRACES_SAMPLER_ARG="0"),
           **{f"SAGEMESH_{name.upper()}_ADDR": address for name, address in mesh.addresses.items()},
           "SAGEMESH_JWT_KEYS_DIR": str(logs.parent / "jwt"), "SAGEMESH_HTTP_PORT": str(free_port())}
    edge = ProcessMesh(env)
    forcing_client = "6d2e8a9f1b2c4d3e8f7a6b5c4d3e2f1a"
    try:
        edge.start("gateway")
        await asyncio.to_thread(edge.wait_serving, "gateway")
        forced = await register(edge.url, "forced@example.com", f"00-{forcing_client}-{CLIENT_SPAN}-01")
    finally:
        await asyncio.to_thread(edge.stop)  # the gateway flushes what it recorded as it stops
    # The same call through the traced mesh's own gateway arrives: the receiver and identity report.
    control = await register(mesh.url, "control@example.com", f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01")
    await trace_with(receiver, control.headers["x-trace-id"], {"POST /api/v1/auth/register"},
                     servers=frozenset({"gateway", "identity"}))
    await asyncio.sleep(0.5)  # identity's spans of the forced call would have been in the same batches
    assert not receiver.trace(forced.headers["x-trace-id"]) and not receiver.trace(forcing_client)
    assert not [s for s in receiver.spans if any(trace == forcing_client for trace, _ in s.links)]
