"""Both rerankers against real backends built in the test: a tiny ONNX
cross-encoder whose score is hand-computable, and a local HTTP rerank server."""

from __future__ import annotations

import asyncio
import json
import math
import re

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route

from meshkit.errors import Unavailable
from services.rag_engine.rerank import Reranker
from services.rag_engine.rerank_cross_encoder import CrossEncoderReranker
from services.rag_engine.rerank_http import HttpReranker, RerankResponseError
from tests.conftest import free_port, serving_asgi
from tests.rag_engine.toy_cross_encoder import write_model, write_tokenizer

# ---------------------------------------------------------------- cross-encoder

@pytest.fixture
def model_dir(tmp_path):
    write_tokenizer(tmp_path / "tokenizer.json")
    write_model(tmp_path / "model.onnx")
    return tmp_path


PASSAGES = [
    "the lead mine",  # 0
    "gold gold silver",  # 2.5
    "a silver mine",  # 0.5
    "gold is gold is gold",  # 3
    "the gold",  # 1
]
EXPECTED = [0.0, 2.5, 0.5, 3.0, 1.0]


async def test_scores_are_the_hand_computed_values(model_dir):
    reranker: Reranker = CrossEncoderReranker(model_dir)
    try:
        # "gold" in the query must not count: only the passage segment scores.
        scores = await reranker.score("gold gold", PASSAGES)
        assert scores == pytest.approx(EXPECTED)
        assert sorted(range(5), key=lambda i: -scores[i]) == [3, 1, 4, 2, 0]
        assert await reranker.score("gold", []) == []
        assert reranker.max_length == 512
    finally:
        await reranker.close()


async def test_batching_and_padding_leave_scores_unchanged(model_dir):
    whole = CrossEncoderReranker(model_dir, batch_size=16)
    paired = CrossEncoderReranker(model_dir, batch_size=2)
    single = CrossEncoderReranker(model_dir, batch_size=1)
    try:
        expected = await whole.score("silver", PASSAGES)
        assert await paired.score("silver", PASSAGES) == expected
        # Unbatched, nothing is padded; batched, the short ones are.
        assert await single.score("silver", PASSAGES) == expected
        assert expected == pytest.approx(EXPECTED)
    finally:
        for reranker in (whole, paired, single):
            await reranker.close()


async def test_long_passages_are_truncated(model_dir):
    reranker = CrossEncoderReranker(model_dir, max_length=16)
    try:
        # [CLS] gold [SEP] + 12 passage tokens + [SEP] = 16.
        assert await reranker.score("gold", ["gold " * 1000, "the gold"]) == [12.0, 1.0]
    finally:
        await reranker.close()


async def test_max_length_comes_from_the_tokenizer_config(model_dir):
    (model_dir / "tokenizer_config.json").write_text(json.dumps({"model_max_length": 10}))
    reranker = CrossEncoderReranker(model_dir)
    try:
        assert reranker.max_length == 10
        assert await reranker.score("gold", ["gold " * 1000]) == [6.0]
    finally:
        await reranker.close()


async def test_model_in_the_onnx_subdirectory_with_two_logits(tmp_path):
    write_tokenizer(tmp_path / "tokenizer.json")
    write_model(tmp_path / "onnx" / "model.onnx", two_logits=True)
    reranker = CrossEncoderReranker(tmp_path, batch_size=2)
    try:
        assert await reranker.score("mine", PASSAGES) == pytest.approx(EXPECTED)
    finally:
        await reranker.close()


async def test_model_without_token_type_ids(tmp_path):
    write_tokenizer(tmp_path / "tokenizer.json")
    write_model(tmp_path / "model.onnx", token_types=False)
    reranker = CrossEncoderReranker(tmp_path)
    try:
        # Without segments the model sums over the query too: 1 for "gold".
        assert await reranker.score("gold", PASSAGES) == pytest.approx([s + 1 for s in EXPECTED])
    finally:
        await reranker.close()


def test_missing_directory_or_files_are_named(tmp_path):
    where = re.escape(str(tmp_path))
    with pytest.raises(FileNotFoundError, match=rf"{where}/absent does not exist"):
        CrossEncoderReranker(tmp_path / "absent")
    write_tokenizer(tmp_path / "tokenizer.json")
    with pytest.raises(FileNotFoundError, match=rf"{where} lacks model\.onnx"):
        CrossEncoderReranker(tmp_path)
    (tmp_path / "tokenizer.json").unlink()
    write_model(tmp_path / "model.onnx")
    with pytest.raises(FileNotFoundError, match=rf"{where} lacks tokenizer\.json$"):
        CrossEncoderReranker(tmp_path)


# ------------------------------------------------------------------------ HTTP


def relevance(query: str, text: str) -> float:
    return sum(word in query.split() for word in text.split()) / 10


def by_score(texts: list[str], query: str, key: str) -> list[dict]:
    results = [{"index": i, key: relevance(query, t)} for i, t in enumerate(texts)]
    return sorted(results, key=lambda r: -r[key])


async def tei(request: Request):
    body = await request.json()
    request.app.state.seen.append((request.url.path, dict(request.headers), body))
    return JSONResponse(by_score(body["texts"], body["query"], "score"))


async def cohere(request: Request):
    body = await request.json()
    request.app.state.seen.append((request.url.path, dict(request.headers), body))
    results = by_score(body["documents"], body["query"], "relevance_score")
    return JSONResponse({"id": "x", "results": results[: body.get("top_n")]})


async def partial(request: Request):
    return JSONResponse([{"index": 1, "score": 0.5}])


async def overloaded(request: Request):
    return PlainTextResponse("model overloaded", status_code=503)


async def not_json(request: Request):
    return PlainTextResponse("<html>oops</html>")


async def wrong_shape(request: Request):
    return JSONResponse({"scores": [1, 2]})


async def out_of_range(request: Request):
    return JSONResponse([{"index": 7, "score": 1.0}])


async def slow(request: Request):
    await asyncio.sleep(1)
    return JSONResponse([])


app = Starlette(
    routes=[
        Route("/rerank", tei, methods=["POST"]),
        Route("/v1/rerank", cohere, methods=["POST"]),
        Route("/partial/rerank", partial, methods=["POST"]),
        Route("/overloaded/rerank", overloaded, methods=["POST"]),
        Route("/not-json/rerank", not_json, methods=["POST"]),
        Route("/wrong-shape/rerank", wrong_shape, methods=["POST"]),
        Route("/out-of-range/rerank", out_of_range, methods=["POST"]),
        Route("/slow/rerank", slow, methods=["POST"]),
    ]
)


@pytest.fixture(scope="module")
async def server():
    async with serving_asgi(app) as url:
        yield url


@pytest.fixture
def seen(server):
    app.state.seen = []
    return app.state.seen


DOCUMENTS = ["lead", "gold mine", "gold", "silver gold mine", "tin"]


async def test_tei_scores_come_back_in_input_order(server, seen):
    reranker: Reranker = HttpReranker(server)
    try:
        scores = await reranker.score("gold mine", DOCUMENTS)
        assert scores == pytest.approx([0.0, 0.2, 0.1, 0.2, 0.0])
        [(path, headers, body)] = seen
        assert path == "/rerank"
        assert body == {"query": "gold mine", "texts": DOCUMENTS, "raw_scores": False}
        assert "authorization" not in headers
    finally:
        await reranker.close()


async def test_cohere_style_with_key_model_and_batches(server, seen):
    reranker = HttpReranker(server, api="cohere", api_key="s3cret", model="rr-1", batch_size=2)
    try:
        scores = await reranker.score("gold mine", DOCUMENTS)
        assert scores == pytest.approx([0.0, 0.2, 0.1, 0.2, 0.0])
        assert len(seen) == 3
        for path, headers, body in seen:
            assert path == "/v1/rerank"
            assert headers["authorization"] == "Bearer s3cret"
            assert body["model"] == "rr-1" and body["top_n"] == len(body["documents"])
        assert sorted(d for _, _, body in seen for d in body["documents"]) == sorted(DOCUMENTS)
    finally:
        await reranker.close()


async def test_a_full_endpoint_url_is_used_as_given(server, seen):
    reranker = HttpReranker(f"{server}/v1/rerank/", api="cohere")
    try:
        assert await reranker.score("gold", ["gold", "tin"]) == pytest.approx([0.1, 0.0])
        assert seen[0][0] == "/v1/rerank"
    finally:
        await reranker.close()


async def test_indices_left_out_score_minus_infinity(server):
    reranker = HttpReranker(f"{server}/partial")
    try:
        assert await reranker.score("q", ["a", "b", "c"]) == [-math.inf, 0.5, -math.inf]
    finally:
        await reranker.close()


@pytest.mark.parametrize("path", ["overloaded", "slow"])
async def test_overload_and_timeout_are_unavailable(server, path):
    reranker = HttpReranker(f"{server}/{path}", timeout=0.2)
    try:
        with pytest.raises(Unavailable):
            await reranker.score("q", ["a"])
    finally:
        await reranker.close()


async def test_a_server_that_is_down_is_unavailable():
    reranker = HttpReranker(f"http://127.0.0.1:{free_port()}")
    try:
        with pytest.raises(Unavailable):
            await reranker.score("q", ["a"])
    finally:
        await reranker.close()


@pytest.mark.parametrize("path", ["not-json", "wrong-shape", "out-of-range"])
async def test_malformed_answers_are_errors(server, path):
    reranker = HttpReranker(f"{server}/{path}")
    try:
        with pytest.raises(RerankResponseError, match="malformed|not JSON"):
            await reranker.score("q", ["a"])
    finally:
        await reranker.close()
