"""What a client may ask of the model, through the rag_engine's gRPC (and once
its REST route): only allowed models, max_tokens clamped to the server's
limit, and a model server's failures as our own sentences, never its words
(which are logged with the request's ids: the request id here, and the
trace id the same way when tracing is on)."""

from __future__ import annotations

import logging

import grpc
import httpx
import pytest

from gateway.server import build as build_gateway
from gateway.settings import GatewaySettings
from meshkit.logs import _RequestContextFilter
from sagemesh.rag_engine.v1 import rag_engine_pb2 as pb
from tests.conftest import serving_asgi
from tests.gateway.conftest import serve_gateway, stop_gateway
from tests.rag_engine.test_generator_openai import Stage, answer, app, failing
from tests.rag_engine.test_service import DOCS, serving

# What an OpenAI-compatible server may say in an error: a key, an internal URL, the prompt.
SECRET_BODY = '{"error": {"message": "key sk-live-SECRET is not valid for http://10.0.0.7:8000/v1, prompt: Passages"}}'
REQUEST_ID = "req-limits-4bf92f3577b3"


@pytest.fixture(scope="module")
async def model():
    app.state.stage = Stage()
    async with serving_asgi(app) as url:
        app.state.stage.url = url
        yield app.state.stage


@pytest.fixture(scope="module")
async def rag(model, tmp_path_factory):
    async with serving(
        tmp_path_factory.mktemp("limits"), generator="openai", generation_url=f"{model.url}/v1",
        generation_models="small-model,backup-model", generation_allowed_models="small-model,big-model",
        generation_max_tokens=64, generation_max_tokens_limit=100, generation_max_retries=1, answer_cache="off",
    ) as under_test:
        await under_test.index("acme", "kb-main", "d-finance", DOCS["d-finance"])
        yield under_test


async def ask(rag, **generation) -> pb.QueryResponse:
    return await rag.stub.Query(pb.QueryRequest(query="How much did revenue grow?", kb_ids=["kb-main"],
                                                generation=pb.GenerationOptions(**generation)),
                                metadata=[*rag.token_for("acme"), ("x-request-id", REQUEST_ID)])


async def refusal(rag, **generation) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await ask(rag, **generation)
    return refused.value


async def test_a_model_off_the_allow_list_is_invalid_argument_naming_the_allowed_ones(rag, model):
    model.play(answer("Revenue grew 12 percent [1]."))
    refused = await refusal(rag, model="gpt-4-32k-expensive")
    assert refused.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "generation.model" in refused.details() and "small-model, big-model" in refused.details()
    assert model.seen == []


async def test_an_allowed_model_is_asked_and_the_chain_answers_when_none_is_named(rag, model):
    model.play(answer("Revenue grew 12 percent [1]."))
    named = await ask(rag, model="big-model")
    unnamed = await ask(rag)
    assert named.metrics.generator == "big-model" and unnamed.metrics.generator == "small-model"
    assert [seen.body["model"] for seen in model.seen] == ["big-model", "small-model"]


async def test_max_tokens_above_the_limit_is_clamped_and_says_so(rag, model):
    model.play(answer("Revenue grew 12 percent [1]."))
    clamped = await ask(rag, max_tokens=1_000_000)
    within = await ask(rag, max_tokens=80)
    default = await ask(rag)
    assert [seen.body["max_tokens"] for seen in model.seen] == [100, 80, 64]
    assert "max_tokens:clamped" in clamped.features_used
    assert "max_tokens:clamped" not in [*within.features_used, *default.features_used]


def captured(caplog) -> None:
    caplog.set_level(logging.WARNING)
    caplog.handler.addFilter(_RequestContextFilter("rag_engine"))


@pytest.mark.parametrize("script, code, message", [
    ((failing(400, SECRET_BODY),), grpc.StatusCode.FAILED_PRECONDITION, "the generation model refused the request"),
    ((failing(401, SECRET_BODY),), grpc.StatusCode.UNAVAILABLE, "the generation model is unavailable"),
    ((failing(503, SECRET_BODY),), grpc.StatusCode.UNAVAILABLE, "the generation model is unavailable"),
    ((failing(404, SECRET_BODY),), grpc.StatusCode.FAILED_PRECONDITION, "does not serve the generation model"),
    ((answer(ending="error"),), grpc.StatusCode.UNAVAILABLE, "the generation model is unavailable"),
])
async def test_a_model_servers_failure_is_our_sentence_and_its_words_are_logged(rag, model, caplog, script,
                                                                                 code, message):
    captured(caplog)
    model.play(*script)
    refused = await refusal(rag)
    assert refused.code() == code and message in refused.details()
    for leak in ("SECRET", "10.0.0.7", "Passages", "engine died"):
        assert leak not in refused.details()
    logged = [r for r in caplog.records if "SECRET" in r.getMessage() or "engine died" in r.getMessage()]
    assert logged and all(r.request_id == REQUEST_ID for r in logged)


async def test_over_rest_a_disallowed_model_is_400_and_a_failing_model_503_without_its_words(rag, model):
    settings = GatewaySettings(_env_file=None, rag_engine_addr=rag.address, gateway_services=["rag_engine"])
    server, task, url = await serve_gateway(build_gateway(settings))
    headers = {"Authorization": rag.token_for("acme")[0][1]}
    try:
        async with httpx.AsyncClient(base_url=url, headers=headers, timeout=30) as client:
            model.play(answer("Revenue grew 12 percent [1]."))
            disallowed = await client.post("/api/v1/rag/query", json={
                "query": "How much did revenue grow?", "generation": {"model": "gpt-4-32k-expensive"}})
            model.play(failing(500, SECRET_BODY))
            failed = await client.post("/api/v1/rag/query", json={"query": "How much did revenue grow?"})
    finally:
        await stop_gateway(server, task)
    assert disallowed.status_code == 400 and "small-model, big-model" in disallowed.json()["message"]
    assert failed.status_code == 503 and "SECRET" not in failed.text and "10.0.0.7" not in failed.text
    assert "the generation model is unavailable" in failed.json()["message"]
