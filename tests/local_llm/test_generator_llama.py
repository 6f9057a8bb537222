"""Gemma 3 270M under llama.cpp, in process: it streams an answer from the
passages, and rag_engine's Query serves it with its citations checked."""

from __future__ import annotations

import re

from sagemesh.rag_engine.v1 import rag_engine_pb2 as pb
from services.rag_engine.generation import GenerationRequest, Passage, Usage
from services.rag_engine.generator_llama import LlamaCppGenerator, plain_prompt
from tests.rag_engine.test_service import DOCS, serving

REQUEST = GenerationRequest(
    "What is the capital of France?",
    [Passage(1, "Paris is the capital and largest city of France.", "France"),
     Passage(2, "Berlin is the capital of Germany.", "Germany")],
    max_tokens=24,
)


def test_the_prompt_numbers_the_passages_and_ends_where_the_answer_starts():
    prompt = plain_prompt(REQUEST)
    assert "[1] France: Paris is the capital" in prompt and "[2] Germany:" in prompt
    assert prompt.endswith("Question: What is the capital of France?\nAnswer:")


async def test_the_model_streams_an_answer_and_counts_its_tokens():
    generator = LlamaCppGenerator()
    try:
        events = [event async for event in generator.stream(REQUEST)]
    finally:
        await generator.close()
    pieces, usage = events[:-1], events[-1]
    assert isinstance(usage, Usage) and usage.model.startswith("gemma")
    assert all(isinstance(p, str) for p in pieces) and 0 < usage.completion_tokens <= 24
    assert usage.prompt_tokens > 20
    assert "Paris" in "".join(pieces)


async def test_query_serves_the_local_models_answer(tmp_path):
    async with serving(tmp_path, generator="local", generation_max_tokens="48") as rag:
        await rag.index("acme", "kb-main", "d-finance", DOCS["d-finance"])
        response = await rag.stub.Query(pb.QueryRequest(query="How much did revenue grow in the third quarter?"),
                                        metadata=rag.token_for("acme"))
    assert response.metrics.generator.startswith("gemma") and response.answer
    numbers = [int(n) for n in re.findall(r"\[(\d+)\]", response.answer)]
    assert all(1 <= n <= len(response.sources) for n in numbers)
