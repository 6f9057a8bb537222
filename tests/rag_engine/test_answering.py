"""Grounded answers: the context budget, citations that only point at returned
sources, the extractive generator, and Query / StreamQuery over real gRPC."""

from __future__ import annotations

import json
import re

import grpc
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from sagemesh.rag_engine.v1 import rag_engine_pb2 as pb
from services.rag_engine.answering import CitationFilter, build_context
from services.rag_engine.domain import Chunk, RankedChunk
from services.rag_engine.generation import Passage
from services.rag_engine.generator_extractive import NOT_FOUND, NOT_FOUND_ZH, compose
from tests.conftest import serving_asgi
from tests.rag_engine.test_service import DOCS, serving


def ranked(chunk_id: str, text: str) -> RankedChunk:
    return RankedChunk(Chunk("t", "kb", "d", chunk_id, text), score=1.0)


def test_citations_past_the_sources_are_dropped_even_when_split_across_pieces():
    citations = CitationFilter(sources=2)
    pieces = ["Revenue grew [", "1] and costs fell [", "3", "]. See [2][", "9]", " and [x] too ["]
    text = "".join(citations.feed(p) for p in pieces) + citations.flush()
    assert text == "Revenue grew [1] and costs fell . See [2] and [x] too ["


def test_the_context_keeps_the_best_passages_and_cuts_the_first_that_does_not_fit():
    sentence = "The quick brown fox jumps over the lazy dog near the river bank today. "
    results = [ranked("a", sentence * 3), ranked("b", sentence * 6), ranked("c", sentence * 2)]
    sources = build_context(results, budget=120)
    assert [s.ranked.chunk.chunk_id for s in sources] == ["a", "b"]
    assert [s.number for s in sources] == [1, 2]
    assert sources[0].text == results[0].chunk.text.strip()
    assert sources[1].text.startswith(sentence.strip()) and len(sources[1].text) < len(results[1].chunk.text)
    assert build_context(results, budget=10) == []


def test_the_extractive_answer_cites_the_sentences_that_answer():
    passages = [
        Passage(1, "Our office opened in 2010. Parking is free for visitors on weekends."),
        Passage(2, "Revenue in the third quarter grew 12 percent. The Lisbon office closed in May."),
    ]
    answer = compose("How much did revenue grow in the third quarter?", passages)
    assert "grew 12 percent. [2]" in answer
    assert "Parking" not in answer


def test_the_extractive_answer_says_so_when_nothing_answers():
    passages = [Passage(1, "Cats sleep for about fifteen hours a day.")]
    assert compose("What is the capital of Peru?", passages) == NOT_FOUND
    assert compose("秘鲁的首都是哪里？", passages) == NOT_FOUND_ZH


@pytest.fixture(scope="module")
async def rag(tmp_path_factory):
    async with serving(tmp_path_factory.mktemp("answering")) as under_test:
        for document, rows in DOCS.items():
            await under_test.index("acme", "kb-main", document, rows)
        await under_test.index("globex", "kb-secret", "d-globex", [
            ("g1", "Globex revenue", "Globex revenue in the third quarter grew 40 percent.", {"year": "2024"}),
        ])
        yield under_test


async def query(rag, tenant: str, question: str, **fields) -> pb.QueryResponse:
    return await rag.stub.Query(pb.QueryRequest(query=question, **fields), metadata=rag.token_for(tenant))


def cited(response) -> list[pb.Source]:
    """The sources the answer's [n] markers name; each flagged `cited`, and no other."""
    numbers = {int(n) for n in re.findall(r"\[(\d+)\]", response.answer)}
    assert numbers and all(1 <= n <= len(response.sources) for n in numbers), response.answer
    assert {n for n, s in enumerate(response.sources, start=1) if s.cited} == numbers
    return [response.sources[n - 1] for n in sorted(numbers)]


async def test_query_answers_with_citations_into_its_sources(rag):
    response = await query(rag, "acme", "How much did revenue grow in the third quarter?")
    assert "12 percent" in response.answer
    assert "f1" in {source.chunk_id for source in cited(response)}
    source = next(s for s in response.sources if s.chunk_id == "f1")
    assert (source.document_id, source.kb_id, source.title) == ("d-finance", "kb-main", "Quarterly results")
    metrics = response.metrics
    assert metrics.generator == "extractive" and metrics.estimated_cost_usd == 0
    assert metrics.retrieval_latency_ms > 0 and metrics.total_latency_ms >= metrics.generation_latency_ms
    assert metrics.prompt_tokens > metrics.completion_tokens > 0
    assert metrics.retrieval.embed_ms > 0
    assert response.features_used[0] == "hybrid" and "generator:extractive" in response.features_used


async def test_another_tenants_facts_are_never_used(rag):
    response = await query(rag, "acme", "How much did Globex revenue grow?")
    assert "40 percent" not in response.answer
    assert all(s.chunk_id != "g1" for s in response.sources)


async def test_a_follow_up_is_read_with_the_turn_before_it(rag):
    history = [pb.ConversationTurn(role=pb.TURN_ROLE_USER, content="Did revenue grow in the third quarter?"),
               pb.ConversationTurn(role=pb.TURN_ROLE_ASSISTANT, content="Yes, it did.")]
    with_history = await query(rag, "acme", "By how much?", history=history)
    assert "12 percent" in with_history.answer and "history" in with_history.features_used
    alone = await query(rag, "acme", "By how much?")
    assert "12 percent" not in alone.answer


async def test_an_unanswerable_question_gets_no_invented_answer(rag):
    response = await query(rag, "acme", "What is the boiling point of tungsten?")
    assert response.answer == NOT_FOUND


async def test_stream_query_sends_pieces_then_the_whole_answer(rag):
    stream = rag.stub.StreamQuery(pb.StreamQueryRequest(query="Why did operating costs fall?"),
                                  metadata=rag.token_for("acme"))
    events = [event async for event in stream]
    deltas = [e.answer_delta for e in events if e.WhichOneof("event") == "answer_delta"]
    assert len(deltas) > 3 and events[-1].WhichOneof("event") == "completed"
    completed = events[-1].completed
    assert "".join(deltas).strip() == completed.answer and "Lisbon" in completed.answer
    assert "f2" in {s.chunk_id for s in cited(completed)}


@pytest.mark.parametrize("fields, field", [
    ({"query": "  "}, "query"),
    ({"query": "cats", "history": [pb.ConversationTurn(content="no role")]}, "history"),
    ({"query": "cats", "generation": pb.GenerationOptions(temperature=5)}, "generation"),
])
async def test_bad_queries_are_refused(rag, fields, field):
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await rag.stub.Query(pb.QueryRequest(**fields), metadata=rag.token_for("acme"))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in refused.value.details()


def chat_server(pieces: list[str], status: int = 200):
    """A stand-in OpenAI-compatible server that answers every chat with `pieces`."""
    seen: list[dict] = []

    async def chat(request: Request) -> Response:
        body = await request.json()
        seen.append(body)
        if status != 200:
            return JSONResponse({"error": {"message": "model not allowed"}}, status_code=status)

        async def events():
            for piece in pieces:
                chunk = {"model": body["model"], "choices": [{"index": 0, "delta": {"content": piece}}]}
                yield f"data: {json.dumps(chunk)}\n\n"
            usage = {"model": body["model"], "choices": [], "usage": {"prompt_tokens": 900, "completion_tokens": 12}}
            yield f"data: {json.dumps(usage)}\n\ndata: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    return Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"])]), seen


async def test_a_chat_model_answers_through_query_with_its_made_up_citations_removed(tmp_path):
    app, seen = chat_server(["Revenue grew 12 percent [1]", " as the Lisbon office closed [9]", "."])
    async with serving_asgi(app) as url, serving(
        tmp_path, generator="openai", generation_url=f"{url}/v1", generation_models="small-model",
        generation_prices={"small-model": (1.0, 2.0)},
    ) as rag:
        await rag.index("acme", "kb-main", "d-finance", DOCS["d-finance"])
        response = await query(rag, "acme", "How much did revenue grow?")
    assert response.answer == "Revenue grew 12 percent [1] as the Lisbon office closed ."
    assert len(response.sources) == 2
    metrics = response.metrics
    assert (metrics.generator, metrics.prompt_tokens, metrics.completion_tokens) == ("small-model", 900, 12)
    assert metrics.estimated_cost_usd == pytest.approx((900 * 1.0 + 12 * 2.0) / 1e6)
    prompt = seen[0]["messages"][-1]["content"]
    assert "12 percent" in prompt and "How much did revenue grow?" in prompt


async def test_a_model_that_refuses_is_a_failed_precondition(tmp_path):
    app, _ = chat_server([], status=400)
    async with serving_asgi(app) as url, serving(
        tmp_path, generator="openai", generation_url=f"{url}/v1", generation_models="small-model",
    ) as rag:
        await rag.index("acme", "kb-main", "d-finance", DOCS["d-finance"])
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await query(rag, "acme", "How much did revenue grow?")
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
